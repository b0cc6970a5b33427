// cpu_elementwise.cpp — elementwise kernels, embedding and rotary embedding.
//
// All loops are flat over contiguous f32 data so GCC vectorises them; OpenMP
// splits them only past kParallelMinWork (see cpu_kernels.h).
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

void expect_same_numel(const Tensor& a, const Tensor& b, const char* what) {
  EL_ENSURE(a.numel() == b.numel(), "cpu {}: {} and {} differ in size", what, shape_str(a.shape()),
            shape_str(b.shape()));
}

// Reads one row of an f32/bf16/f16 table as f32 into out[C].
void load_row(const Tensor& table, int64_t row, int64_t c, float* out) {
  switch (table.dtype()) {
    case DType::f32: {
      const float* p = table.data<float>() + row * c;
      for (int64_t i = 0; i < c; ++i) out[i] = p[i];
      return;
    }
    case DType::bf16: {
      const uint16_t* p = table.data<uint16_t>() + row * c;
      for (int64_t i = 0; i < c; ++i) out[i] = bf16_to_f32(p[i]);
      return;
    }
    case DType::f16: {
      const uint16_t* p = table.data<uint16_t>() + row * c;
      for (int64_t i = 0; i < c; ++i) out[i] = f16_to_f32(p[i]);
      return;
    }
    default:
      break;
  }
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  expect_f32(a, "add (a)");
  expect_f32(b, "add (b)");
  expect_f32(out, "add (out)");
  expect_same_numel(a, b, "add");
  expect_same_numel(a, out, "add");
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  expect_f32(x, "axpy (x)");
  expect_f32(y, "axpy (y)");
  expect_same_numel(x, y, "axpy");
  const float* px = x.data<float>();
  float* py = y.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) py[i] += alpha * px[i];
}

void scale(Tensor& x, float s) {
  expect_f32(x, "scale");
  float* p = x.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) p[i] *= s;
}

double sum_squares(const Tensor& x) {
  expect_f32(x, "sum_squares");
  const float* p = x.data<float>();
  const int64_t n = x.numel();
  // Blocks of f32 partial sums (vectorised) folded into f64: exact enough for
  // gradient-norm clipping, and far faster than an f64 loop.
  constexpr int64_t kBlock = 1024;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n >= kParallelMinWork * 4)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t lo = blk * kBlock;
    const int64_t hi = std::min(n, lo + kBlock);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; ++i) s += p[i] * p[i];
    total += s;
  }
  return total;
}

namespace {

// True when some element's exponent field is all ones (inf or NaN). Integer
// tests on the raw bits: vectorisable, and no f32 widening of bf16/f16 data.
template <class U>
bool any_exponent_all_ones(const U* p, int64_t n, U mask) {
  int bad = 0;
#pragma omp parallel for simd schedule(static) reduction(| : bad) if (n >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<int>((p[i] & mask) == mask);
  return bad != 0;
}

}  // namespace

bool all_finite(const Tensor& x) {
  EL_ENSURE(x.defined() && x.device().is_cpu() && x.is_contiguous(),
            "cpu all_finite: expected a contiguous CPU tensor");
  const int64_t n = x.numel();
  switch (x.dtype()) {
    case DType::f32:
      return !any_exponent_all_ones<uint32_t>(x.data<uint32_t>(), n, 0x7f800000u);
    case DType::bf16:
      return !any_exponent_all_ones<uint16_t>(x.data<uint16_t>(), n, 0x7f80u);
    case DType::f16:
      return !any_exponent_all_ones<uint16_t>(x.data<uint16_t>(), n, 0x7c00u);
    default:
      return true;  // integers are always finite
  }
}

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  expect_dtype(ids, DType::i32, "embedding_forward (ids)");
  expect_f32(out, "embedding_forward (out)");
  EL_ENSURE(table.ndim() == 2 && dtype_is_float(table.dtype()) && table.is_contiguous(),
            "cpu embedding_forward: table must be a contiguous 2-D float tensor, got {} {}",
            dtype_name(table.dtype()), shape_str(table.shape()));
  const int64_t n = ids.numel();
  const int64_t v = table.dim(0);
  const int64_t c = table.dim(1);
  EL_ENSURE(out.numel() == n * c, "cpu embedding_forward: out {} for {} ids of width {}",
            shape_str(out.shape()), n, c);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    EL_ENSURE(id[i] >= 0 && id[i] < v,
              "cpu embedding_forward: id {} at position {} is outside [0, {})", id[i], i, v);
  }
  float* po = out.data<float>();
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinWork * 4)
  for (int64_t i = 0; i < n; ++i) load_row(table, id[i], c, po + i * c);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  expect_dtype(ids, DType::i32, "embedding_backward (ids)");
  expect_f32(dout, "embedding_backward (dout)");
  expect_f32(dtable, "embedding_backward (dtable)");
  EL_ENSURE(dtable.ndim() == 2, "cpu embedding_backward: dtable must be 2-D, got {}",
            shape_str(dtable.shape()));
  const int64_t n = ids.numel();
  const int64_t v = dtable.dim(0);
  const int64_t c = dtable.dim(1);
  EL_ENSURE(dout.numel() == n * c, "cpu embedding_backward: dout {} for {} ids of width {}",
            shape_str(dout.shape()), n, c);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    EL_ENSURE(id[i] >= 0 && id[i] < v,
              "cpu embedding_backward: id {} at position {} is outside [0, {})", id[i], i, v);
  }
  fill(dtable, 0.f);
  const float* pd = dout.data<float>();
  float* pt = dtable.data<float>();
  // Threads own disjoint column ranges, so repeated ids never race and the
  // sum order per element (row order) does not depend on the thread count.
  const int64_t work = n * c;
  const int nthreads = work >= kParallelMinWork * 4 ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int nt = omp_get_num_threads();
    const int tid = omp_get_thread_num();
    const int64_t per = (c + nt - 1) / nt;
    const int64_t lo = std::min(c, tid * per);
    const int64_t hi = std::min(c, lo + per);
    for (int64_t i = 0; i < n; ++i) {
      float* dst = pt + static_cast<int64_t>(id[i]) * c;
      const float* src = pd + i * c;
      for (int64_t j = lo; j < hi; ++j) dst[j] += src[j];
    }
  }
}

void rope_rows(const float* x, int64_t x_pos_stride, float* y, int64_t y_pos_stride, int64_t rows,
               int64_t t, int64_t heads, int64_t d, const float* inv_freq, int64_t pos_offset,
               float sign, int64_t n_freq) {
  // Rotated pairs (i, i + half); dims [2 half, d) pass (partial rotary).
  const int64_t half = n_freq;
#pragma omp parallel if (rows * heads * d >= kParallelMinWork)
  {
    std::vector<float> cs(static_cast<size_t>(d));  // cos[half] then sin[half]
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      // Angles as in the reference implementations: f32 position * f32 freq.
      const float pos = static_cast<float>(pos_offset + r % t);
      for (int64_t i = 0; i < half; ++i) {
        const float ang = pos * inv_freq[i];
        cs[i] = std::cos(ang);
        cs[half + i] = sign * std::sin(ang);
      }
      for (int64_t hh = 0; hh < heads; ++hh) {
        const float* xr = x + r * x_pos_stride + hh * d;
        float* yr = y + r * y_pos_stride + hh * d;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xr[i], x2 = xr[half + i];
          const float c = cs[i], s = cs[half + i];
          yr[i] = x1 * c - x2 * s;
          yr[half + i] = x2 * c + x1 * s;
        }
        if (yr != xr) {
          for (int64_t i = 2 * half; i < d; ++i) yr[i] = xr[i];
        }
      }
    }
  }
}

void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse, Tensor& y) {
  expect_f32(x, "rope (x)");
  expect_f32(inv_freq, "rope (inv_freq)");
  expect_f32(y, "rope (y)");
  EL_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0,
            "cpu rope: x must be [B, T, H, D] with even D, got {}", shape_str(x.shape()));
  EL_ENSURE(y.numel() == x.numel(), "cpu rope: y {} for x {}", shape_str(y.shape()),
            shape_str(x.shape()));
  const int64_t b = x.dim(0), t = x.dim(1), h = x.dim(2), d = x.dim(3);
  EL_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
            "cpu rope: inv_freq has {} values, head dim {} needs 1 to {}", inv_freq.numel(), d,
            d / 2);
  rope_rows(x.data<float>(), h * d, y.data<float>(), h * d, b * t, t, h, d,
            inv_freq.data<float>(), pos_offset, inverse ? -1.f : 1.f, inv_freq.numel());
}

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  expect_f32(gate, "swiglu_forward (gate)");
  expect_f32(up, "swiglu_forward (up)");
  expect_f32(out, "swiglu_forward (out)");
  expect_same_numel(gate, up, "swiglu_forward");
  expect_same_numel(gate, out, "swiglu_forward");
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  const int64_t n = gate.numel();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] * fast_sigmoid(g[i]) * u[i];
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  expect_f32(dout, "swiglu_backward (dout)");
  expect_f32(gate, "swiglu_backward (gate)");
  expect_f32(up, "swiglu_backward (up)");
  expect_f32(dgate, "swiglu_backward (dgate)");
  expect_f32(dup, "swiglu_backward (dup)");
  expect_same_numel(dout, gate, "swiglu_backward");
  expect_same_numel(gate, up, "swiglu_backward");
  expect_same_numel(gate, dgate, "swiglu_backward");
  expect_same_numel(gate, dup, "swiglu_backward");
  const float* dy = dout.data<float>();
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* dg = dgate.data<float>();
  float* du = dup.data<float>();
  const int64_t n = gate.numel();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float s = fast_sigmoid(g[i]);
    const float silu = g[i] * s;
    // d silu / dg = s + g s (1 - s)
    dg[i] = dy[i] * u[i] * (s + silu * (1.f - s));
    du[i] = dy[i] * silu;
  }
}

namespace {
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;
}  // namespace

void gelu_forward(const Tensor& x, Tensor& out) {
  expect_f32(x, "gelu_forward (x)");
  expect_f32(out, "gelu_forward (out)");
  expect_same_numel(x, out, "gelu_forward");
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = px[i];
    po[i] = 0.5f * v * (1.f + fast_tanh(kGeluC * (v + kGeluA * v * v * v)));
  }
}

void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  expect_f32(dout, "gelu_backward (dout)");
  expect_f32(x, "gelu_backward (x)");
  expect_f32(dx, "gelu_backward (dx)");
  expect_same_numel(dout, x, "gelu_backward");
  expect_same_numel(x, dx, "gelu_backward");
  const float* dy = dout.data<float>();
  const float* px = x.data<float>();
  float* pdx = dx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = px[i];
    const float th = fast_tanh(kGeluC * (v + kGeluA * v * v * v));
    const float dinner = kGeluC * (1.f + 3.f * kGeluA * v * v);
    pdx[i] = dy[i] * (0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * dinner);
  }
}

void gelu_exact_forward(const Tensor& x, Tensor& out) {
  expect_f32(x, "gelu_exact_forward (x)");
  expect_f32(out, "gelu_exact_forward (out)");
  expect_same_numel(x, out, "gelu_exact_forward");
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const int64_t n = x.numel();
  constexpr float kRsqrt2 = 0.70710678118654752f;
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = px[i];
    po[i] = 0.5f * v * (1.f + std::erf(v * kRsqrt2));
  }
}

void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  expect_f32(dout, "gelu_exact_backward (dout)");
  expect_f32(x, "gelu_exact_backward (x)");
  expect_f32(dx, "gelu_exact_backward (dx)");
  expect_same_numel(dout, x, "gelu_exact_backward");
  expect_same_numel(x, dx, "gelu_exact_backward");
  const float* dy = dout.data<float>();
  const float* px = x.data<float>();
  float* pdx = dx.data<float>();
  const int64_t n = x.numel();
  constexpr float kRsqrt2 = 0.70710678118654752f;
  constexpr float kRsqrt2Pi = 0.39894228040143268f;  // 1 / sqrt(2 pi)
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    // d/dx [x Phi(x)] = Phi(x) + x phi(x)
    const float v = px[i];
    const float cdf = 0.5f * (1.f + std::erf(v * kRsqrt2));
    pdx[i] = dy[i] * (cdf + v * kRsqrt2Pi * std::exp(-0.5f * v * v));
  }
}

}  // namespace el::cpu
