// cpu_infer.cpp — the reference kernels of inference: per-row rotary offsets,
// KV cache writes, attention over a cache, greedy argmax, and the
// weight-only quantized matmul (ops/quant_layout.h).
//
// The cache and the quantized weight are read in their stored dtype, row by
// row, instead of being staged to f32 whole: a decode step touches T rows of
// a cache of Smax, so staging would cost O(Smax) per step.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

float load(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f32: return t.data<float>()[i];
    case DType::bf16: return bf16_to_f32(t.data<uint16_t>()[i]);
    case DType::f16: return f16_to_f32(t.data<uint16_t>()[i]);
    default: EL_ENSURE(false, "cpu inference kernel: {} is not a float tensor", dtype_name(t.dtype()));
  }
  return 0;
}

void store(Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::f32: t.data<float>()[i] = v; break;
    case DType::bf16: t.data<uint16_t>()[i] = f32_to_bf16(v); break;
    case DType::f16: t.data<uint16_t>()[i] = f32_to_f16(v); break;
    default: EL_ENSURE(false, "cpu inference kernel: {} is not a float tensor", dtype_name(t.dtype()));
  }
}

std::vector<int32_t> read_positions(const Tensor& positions, int64_t b, const char* what) {
  expect_dtype(positions, DType::i32, what);
  EL_ENSURE(positions.numel() == b, "{}: positions has {} entries for batch {}", what,
            positions.numel(), b);
  return std::vector<int32_t>(positions.data<int32_t>(), positions.data<int32_t>() + b);
}

}  // namespace

void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions, Tensor& y) {
  expect_f32(x, "rope_at (x)");
  expect_f32(y, "rope_at (y)");
  const int64_t b = x.dim(0), t = x.dim(1), h = x.dim(2), d = x.dim(3);
  const std::vector<int32_t> pos = read_positions(positions, b, "rope_at");
  for (int64_t i = 0; i < b; ++i) {
    const float* xb = x.data<float>() + i * t * h * d;
    float* yb = y.data<float>() + i * t * h * d;
    if (!inv_freq.defined()) {
      if (xb != yb) std::copy(xb, xb + t * h * d, yb);
      continue;
    }
    rope_rows(xb, h * d, yb, h * d, t, t, h, d, inv_freq.data<float>(), pos[i], 1.f,
              inv_freq.numel());
  }
}

void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                       Tensor& q, Tensor& k, Tensor& v) {
  expect_f32(packed, "split_qkv_rope_at (packed)");
  const int64_t b = packed.dim(0), t = packed.dim(1), heads = packed.dim(2), d = packed.dim(3);
  const int64_t h = q.dim(2), hkv = k.dim(2);
  EL_ENSURE(heads == h + 2 * hkv, "split_qkv_rope_at: packed has {} heads for H {} Hkv {}", heads,
            h, hkv);
  const std::vector<int32_t> pos = read_positions(positions, b, "split_qkv_rope_at");
  const float* p = packed.data<float>();
  for (int64_t i = 0; i < b; ++i) {
    const float* pb = p + i * t * heads * d;
    float* qb = q.data<float>() + i * t * h * d;
    float* kb = k.data<float>() + i * t * hkv * d;
    float* vb = v.data<float>() + i * t * hkv * d;
    for (int64_t s = 0; s < t; ++s) {  // plain copies first; the rotation below overwrites q, k
      const float* row = pb + s * heads * d;
      std::copy(row, row + h * d, qb + s * h * d);
      std::copy(row + h * d, row + (h + hkv) * d, kb + s * hkv * d);
      std::copy(row + (h + hkv) * d, row + heads * d, vb + s * hkv * d);
    }
    if (inv_freq.defined()) {
      rope_rows(pb, heads * d, qb, h * d, t, t, h, d, inv_freq.data<float>(), pos[i], 1.f,
                inv_freq.numel());
      rope_rows(pb + h * d, heads * d, kb, hkv * d, t, t, hkv, d, inv_freq.data<float>(), pos[i],
                1.f, inv_freq.numel());
    }
  }
}

void kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& positions, Tensor& k_cache,
                    Tensor& v_cache) {
  const int64_t b = k.dim(0), t = k.dim(1), row = k.dim(2) * k.dim(3);
  const int64_t smax = k_cache.dim(1);
  const std::vector<int32_t> pos = read_positions(positions, b, "kv_cache_write");
  for (int64_t i = 0; i < b; ++i) {
    EL_ENSURE(pos[i] >= 0 && pos[i] + t <= smax,
              "kv_cache_write: row {} writes positions [{}, {}) of a cache of {}", i, pos[i],
              pos[i] + t, smax);
    for (int64_t s = 0; s < t; ++s) {
      const int64_t src = (i * t + s) * row, dst = (i * smax + pos[i] + s) * row;
      for (int64_t j = 0; j < row; ++j) {
        store(k_cache, dst + j, load(k, src + j));
        store(v_cache, dst + j, load(v, src + j));
      }
    }
  }
}

// The composition it replaces (gather, rmsnorm, gathers + add, rope_at,
// kv_cache_write; linear + rope_at for q), value by value: each stored
// intermediate rounded to packed's dtype where those ops store a tensor.
void mla_decode_prologue(const Tensor& packed, int64_t latent, const Tensor& row_map,
                         const Tensor& norm_w, float eps, const Tensor& inv_freq,
                         const Tensor& positions, Tensor& q, Tensor& k_cache, Tensor& v_cache) {
  const int64_t b = packed.dim(0), t = packed.dim(1), width = packed.dim(2);
  const int64_t h = q.dim(2), d = q.dim(3), smax = k_cache.dim(1);
  // rope_at's partial rotation: pairs (k, half + k) of the first 2 half columns.
  const int64_t half = inv_freq.defined() ? inv_freq.numel() : 0;
  const int64_t src0 = h * d, sources = width - src0;
  const std::vector<int32_t> pos = read_positions(positions, b, "mla_decode_prologue");
  expect_dtype(row_map, DType::i32, "mla_decode_prologue (row_map)");
  const int32_t* map = row_map.data<int32_t>();
  const DType td = packed.dtype();
  auto round_t = [td](float v) {
    return td == DType::bf16 ? bf16_to_f32(f32_to_bf16(v))
                             : td == DType::f16 ? f16_to_f32(f32_to_f16(v)) : v;
  };
  const bool write_v = !v_cache.same(k_cache);
  std::vector<float> row(static_cast<size_t>(d)), cs(static_cast<size_t>(d));
  for (int64_t i = 0; i < b; ++i) {
    EL_ENSURE(pos[i] >= 0 && pos[i] + t <= smax,
              "mla_decode_prologue: row {} writes positions [{}, {}) of a cache of {}", i, pos[i],
              pos[i] + t, smax);
    for (int64_t s = 0; s < t; ++s) {
      const int64_t base = (i * t + s) * width;
      float ss = 0.f;
      for (int64_t j = 0; j < latent; ++j) {
        const float v = load(packed, base + src0 + j);
        ss += v * v;
      }
      const float rstd = 1.f / std::sqrt(ss / static_cast<float>(latent) + eps);
      for (int64_t m = 0; m < d; ++m) {
        const int32_t src = map[m];
        EL_ENSURE(src < sources, "mla_decode_prologue: row_map[{}] = {} is outside the {} kv_a "
                  "columns", m, src, sources);
        const float x = src < 0 ? 0.f : load(packed, base + src0 + src);
        row[static_cast<size_t>(m)] = src >= 0 && src < latent
                                          ? round_t(x * rstd * load(norm_w, src))
                                          : x;
      }
      const float p = static_cast<float>(pos[i] + s);  // f32 position * f32 frequency, as rope_at
      for (int64_t k = 0; k < half; ++k) {
        const float ang = p * inv_freq.data<float>()[k];
        cs[static_cast<size_t>(k)] = std::cos(ang);
        cs[static_cast<size_t>(half + k)] = std::sin(ang);
      }
      auto rotate = [&](const float* x, auto&& put) {
        for (int64_t m = 2 * half; m < d; ++m) put(m, x[m]);  // unrotated: already rounded
        for (int64_t k = 0; k < half; ++k) {
          const float c = cs[static_cast<size_t>(k)], sn = cs[static_cast<size_t>(half + k)];
          const float x1 = x[k], x2 = x[half + k];
          put(k, round_t(x1 * c - x2 * sn));
          put(half + k, round_t(x2 * c + x1 * sn));
        }
      };
      const int64_t dst = (i * smax + pos[i] + s) * d;
      rotate(row.data(), [&](int64_t m, float v) {
        store(k_cache, dst + m, v);
        if (write_v) store(v_cache, dst + m, v);
      });
      std::vector<float> head(static_cast<size_t>(d));
      for (int64_t hh = 0; hh < h; ++hh) {
        for (int64_t m = 0; m < d; ++m) head[static_cast<size_t>(m)] = load(packed, base + hh * d + m);
        const int64_t qo = ((i * t + s) * h + hh) * d;
        rotate(head.data(), [&](int64_t m, float v) { store(q, qo + m, v); });
      }
    }
  }
}

void attention_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& positions, float scale, Tensor& out,
                      const Tensor& alibi_slopes, int64_t value_offset) {
  expect_f32(q, "attention_cached (q)");
  expect_f32(out, "attention_cached (out)");
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3), dv = out.dim(3);
  EL_ENSURE(value_offset >= 0 && value_offset + dv <= d,
            "cpu attention_cached: value columns [{}, {}) outside rows of {}", value_offset,
            value_offset + dv, d);
  const int64_t smax = k_cache.dim(1), hkv = k_cache.dim(2), group = h / hkv;
  const std::vector<int32_t> pos = read_positions(positions, b, "attention_cached");
  const float* slopes = nullptr;  // ALiBi: score of cache row j += slope_h * (j - query position)
  if (alibi_slopes.defined()) {
    expect_f32(alibi_slopes, "attention_cached (alibi_slopes)");
    EL_ENSURE(alibi_slopes.numel() == h, "cpu attention_cached: {} ALiBi slopes for {} heads",
              alibi_slopes.numel(), h);
    slopes = alibi_slopes.data<float>();
  }
#pragma omp parallel if (b * t * h * (pos.empty() ? 0 : pos[0] + t) * d >= kParallelMinWork)
  {
    std::vector<float> scores(static_cast<size_t>(smax));
    std::vector<float> acc(static_cast<size_t>(dv));
#pragma omp for collapse(3) schedule(static)
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t s = 0; s < t; ++s) {
        for (int64_t hh = 0; hh < h; ++hh) {
          const float* qr = q.data<float>() + ((i * t + s) * h + hh) * d;
          const int64_t keys = pos[i] + s + 1, kvh = hh / group;
          const float slope = slopes ? slopes[hh] : 0.f;
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < keys; ++j) {
            const int64_t base = ((i * smax + j) * hkv + kvh) * d;
            float dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += qr[e] * load(k_cache, base + e);
            scores[j] = dot * scale + slope * static_cast<float>(j - (keys - 1));
            mx = std::max(mx, scores[j]);
          }
          float sum = 0;
          for (int64_t j = 0; j < keys; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t j = 0; j < keys; ++j) {
            const int64_t base = ((i * smax + j) * hkv + kvh) * d + value_offset;
            for (int64_t e = 0; e < dv; ++e) acc[e] += scores[j] * load(v_cache, base + e);
          }
          float* o = out.data<float>() + ((i * t + s) * h + hh) * dv;
          for (int64_t e = 0; e < dv; ++e) o[e] = acc[e] / sum;
        }
      }
    }
  }
}

void argmax_rows(const Tensor& x, Tensor& out) {
  expect_dtype(out, DType::i32, "argmax_rows (out)");
  const int64_t n = out.numel(), v = x.numel() / std::max<int64_t>(n, 1);
  for (int64_t r = 0; r < n; ++r) {
    int32_t best = 0;
    float best_value = -std::numeric_limits<float>::infinity();
    bool found = false;
    for (int64_t c = 0; c < v; ++c) {
      const float value = load(x, r * v + c);
      if (std::isnan(value)) continue;
      if (!found || value > best_value) {
        best = static_cast<int32_t>(c);
        best_value = value;
        found = true;
      }
    }
    out.data<int32_t>()[r] = best;
  }
}

void increment_i32(Tensor& x, int32_t delta) {
  expect_dtype(x, DType::i32, "increment_i32");
  int32_t* p = x.data<int32_t>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] += delta;
}

void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y) {
  expect_f32(x, "quant_matmul (x)");
  expect_f32(y, "quant_matmul (y)");
  const int64_t m = x.numel() / w.in_features, n = w.out_features, k = w.in_features;
  const int64_t g = w.group_size, groups = w.groups_per_row();
  const uint8_t* qw = w.qweight.data<uint8_t>();
  const uint16_t* sc = w.scales.data<uint16_t>();
  const uint8_t* zs = w.zeros.defined() ? w.zeros.data<uint8_t>() : nullptr;
  const float* xp = x.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  float* yp = y.data<float>();
  const int64_t row_bytes = k * w.bits / 8;
  // Tiles of kTile weight rows are dequantised into per-thread f32 scratch
  // and multiplied by one single-threaded sgemm each (the threading scheme of
  // cpu_gemm.cpp): O(kTile * k) dequantisation per O(m * kTile * k) product,
  // and a decode step (m = 1) streams the packed weight once.
  constexpr int64_t kTile = 64;
  const int64_t tiles = (n + kTile - 1) / kTile;
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
#pragma omp parallel if (m * n * k >= kParallelMinWork && tiles > 1)
  {
    std::vector<float> wt(static_cast<size_t>(std::min(kTile, n) * k));
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t j0 = t * kTile, rows = std::min(kTile, n - j0);
      for (int64_t j = j0; j < j0 + rows; ++j) {
        const uint8_t* qr = qw + j * row_bytes;
        float* out = wt.data() + (j - j0) * k;
        for (int64_t gi = 0; gi < groups; ++gi) {
          const float s = f16_to_f32(sc[j * groups + gi]);
          const int z = zs ? zs[j * groups + gi] : w.symmetric_zero();
          const int64_t c0 = gi * g;
          if (w.bits == 8) {
            for (int64_t c = c0; c < c0 + g; ++c) out[c] = static_cast<float>(qr[c] - z) * s;
          } else {
            for (int64_t c = c0; c < c0 + g; c += 2) {  // k even: byte c/2 holds c (low) and c+1 (high)
              const uint8_t byte = qr[c / 2];
              out[c] = static_cast<float>((byte & 0xF) - z) * s;
              out[c + 1] = static_cast<float>((byte >> 4) - z) * s;
            }
          }
        }
      }
      // y[:, j0:j0+rows] = x @ wt^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(rows),
                  static_cast<int>(k), 1.f, xp, static_cast<int>(k), wt.data(), static_cast<int>(k), 0.f,
                  yp + j0, static_cast<int>(n));
      if (bp) {
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t c = 0; c < rows; ++c) yp[r * n + j0 + c] += bp[j0 + c];
        }
      }
    }
  }
}

}  // namespace el::cpu
