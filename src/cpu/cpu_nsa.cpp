// cpu_nsa.cpp — NSA (native sparse attention) reference kernels: the
// compressed branch, block selection, the sparse (selected-blocks / sliding
// window) branch and the gated sum (contracts in ops/backend.h, "NSA").
//
// Every branch is "attention of one query row over a few key ranges": the
// compressed branch reads the prefix [0, visible) of the compressed keys, the
// sparse branch the union of the selected blocks and the window, cut at the
// query's position. So one row routine (attend_row / attend_row_backward)
// serves all of them, flash style: the scores of one row live in a scratch
// vector of at most S floats, never a [T, S] matrix; the backward recomputes
// p = exp(scale q.k - lse) from the saved lse.
//
// Threading: the forward splits (b, h) over threads; the backward splits
// (b, kv head), each task owning its kv head's dk/dv rows and its queries'
// dq rows, so nothing is shared and the sums have a fixed order (results do
// not depend on the thread count's timing). Selection splits (b, kv group).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Range {
  int64_t begin, end;  // keys [begin, end)
};

struct Geometry {
  int64_t b, t, h, d, hkv, group;
  int64_t s;  // key rows (raw S or compressed Nc)
};

Geometry geometry(const Tensor& q, const Tensor& k) {
  Geometry g{};
  g.b = q.dim(0);
  g.t = q.dim(1);
  g.h = q.dim(2);
  g.d = q.dim(3);
  g.s = k.dim(1);
  g.hkv = k.dim(2);
  g.group = g.h / g.hkv;
  return g;
}

bool worth_parallel(const Geometry& g) {
  return g.b * g.h * g.t * std::max<int64_t>(g.s, 1) * g.d >= kParallelMinWork * 4;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Compressed tokens query position p sees: i * stride + block - 1 <= p.
inline int64_t visible_compressed(int64_t p, int64_t block, int64_t stride, int64_t nc) {
  if (p < block - 1) return 0;
  return std::min(nc, (p - block + 1) / stride + 1);
}

// The key ranges of one query of the sparse branch, sorted and disjoint:
// the selected blocks (entries < 0 unused) and the window, cut at p.
void sparse_ranges(const int32_t* blocks, int64_t n, int64_t select_block, int64_t window,
                   int64_t p, std::vector<Range>& out) {
  out.clear();
  for (int64_t i = 0; i < n && blocks; ++i) {
    const int64_t j = blocks[i];
    if (j < 0 || j * select_block > p) continue;
    out.push_back({j * select_block, std::min((j + 1) * select_block, p + 1)});
  }
  if (window > 0) out.push_back({std::max<int64_t>(0, p - window + 1), p + 1});
  std::sort(out.begin(), out.end(), [](const Range& a, const Range& b) {
    return a.begin < b.begin;
  });
  size_t w = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (w > 0 && out[i].begin <= out[w - 1].end) {
      out[w - 1].end = std::max(out[w - 1].end, out[i].end);
    } else {
      out[w++] = out[i];
    }
  }
  out.resize(w);
}

// out[D] = softmax(scale q.k_s) v_s over the keys in `ranges`; key s at
// k + s * ld. Returns the lse (-inf and out = 0 for no keys).
float attend_row(const float* q, const float* k, const float* v, int64_t ld, int64_t d,
                 const std::vector<Range>& ranges, float scale, float* out,
                 std::vector<float>& sc) {
  int64_t n = 0;
  for (const Range& r : ranges) n += r.end - r.begin;
  std::fill(out, out + d, 0.f);
  if (n == 0) return kNegInf;
  sc.resize(static_cast<size_t>(n));
  float mx = kNegInf;
  int64_t i = 0;
  for (const Range& r : ranges) {
    for (int64_t s = r.begin; s < r.end; ++s, ++i) {
      sc[i] = scale * dot(q, k + s * ld, d);
      mx = std::max(mx, sc[i]);
    }
  }
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) sum += (sc[j] = fast_exp(sc[j] - mx));
  const float inv = 1.f / sum;
  i = 0;
  for (const Range& r : ranges) {
    for (int64_t s = r.begin; s < r.end; ++s, ++i) {
      const float p = sc[i] * inv;
      const float* vs = v + s * ld;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) out[e] += p * vs[e];
    }
  }
  return mx + std::log(sum);
}

// The backward of attend_row: dq[D] overwritten, dk/dv rows accumulated.
void attend_row_backward(const float* q, const float* k, const float* v, int64_t ld, int64_t d,
                         const std::vector<Range>& ranges, float scale, const float* dout,
                         const float* out, float lse, float* dq, float* dk, float* dv) {
  std::fill(dq, dq + d, 0.f);
  if (ranges.empty() || lse == kNegInf) return;
  const float di = dot(dout, out, d);
  for (const Range& r : ranges) {
    for (int64_t s = r.begin; s < r.end; ++s) {
      const float* ks = k + s * ld;
      const float* vs = v + s * ld;
      const float p = fast_exp(scale * dot(q, ks, d) - lse);
      const float ds = p * (dot(dout, vs, d) - di) * scale;
      float* dks = dk + s * ld;
      float* dvs = dv + s * ld;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) {
        dq[e] += ds * ks[e];
        dks[e] += ds * q[e];
        dvs[e] += p * dout[e];
      }
    }
  }
}

// Key ranges of query t: the compressed prefix, or the sparse union.
struct KeyRule {
  bool compressed;
  int64_t block, stride;                 // compressed
  const int32_t* blocks;                 // sparse: [B, Hkv, T, n] or null
  int64_t n, select_block, window;       // sparse
  int64_t q_offset;

  void ranges(const Geometry& g, int64_t b, int64_t kvh, int64_t t,
              std::vector<Range>& out) const {
    const int64_t p = q_offset + t;
    if (compressed) {
      out.clear();
      const int64_t nv = visible_compressed(p, block, stride, g.s);
      if (nv > 0) out.push_back({0, nv});
      return;
    }
    const int32_t* row = blocks ? blocks + ((b * g.hkv + kvh) * g.t + t) * n : nullptr;
    sparse_ranges(row, n, select_block, window, p, out);
    for (Range& r : out) r.end = std::min(r.end, g.s);  // (q_offset + T <= S is checked)
  }
};

void forward(const Tensor& q, const Tensor& k, const Tensor& v, const KeyRule& rule, float scale,
             Tensor& out, Tensor& lse) {
  const Geometry g = geometry(q, k);
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  float* po = out.data<float>();
  float* pl = lse.data<float>();
  const int64_t ld = g.hkv * g.d;
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<Range> ranges;
    std::vector<float> sc;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.b * g.h; ++task) {
      const int64_t b = task / g.h, h = task % g.h, kvh = h / g.group;
      const float* kb = pk + (b * g.s * g.hkv + kvh) * g.d;
      const float* vb = pv + (b * g.s * g.hkv + kvh) * g.d;
      for (int64_t t = 0; t < g.t; ++t) {
        rule.ranges(g, b, kvh, t, ranges);
        const int64_t qi = ((b * g.t + t) * g.h + h) * g.d;
        pl[(b * g.h + h) * g.t + t] =
            attend_row(pq + qi, kb, vb, ld, g.d, ranges, scale, po + qi, sc);
      }
    }
  }
}

void backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& out, const Tensor& lse, const KeyRule& rule, float scale, Tensor& dq,
              Tensor& dk, Tensor& dv) {
  const Geometry g = geometry(q, k);
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const float* pg = dout.data<float>();
  const float* po = out.data<float>();
  const float* pl = lse.data<float>();
  float* pdq = dq.data<float>();
  float* pdk = dk.data<float>();
  float* pdv = dv.data<float>();
  std::memset(pdk, 0, static_cast<size_t>(dk.numel()) * sizeof(float));
  std::memset(pdv, 0, static_cast<size_t>(dv.numel()) * sizeof(float));
  const int64_t ld = g.hkv * g.d;
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<Range> ranges;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.b * g.hkv; ++task) {
      const int64_t b = task / g.hkv, kvh = task % g.hkv;
      const int64_t base = (b * g.s * g.hkv + kvh) * g.d;
      for (int64_t t = 0; t < g.t; ++t) {
        rule.ranges(g, b, kvh, t, ranges);
        for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
          const int64_t qi = ((b * g.t + t) * g.h + h) * g.d;
          attend_row_backward(pq + qi, pk + base, pv + base, ld, g.d, ranges, scale, pg + qi,
                              po + qi, pl[(b * g.h + h) * g.t + t], pdq + qi, pdk + base,
                              pdv + base);
        }
      }
    }
  }
}

KeyRule compressed_rule(int64_t block, int64_t stride, int64_t q_offset) {
  return KeyRule{true, block, stride, nullptr, 0, 0, 0, q_offset};
}

KeyRule sparse_rule(const Tensor& blocks, int64_t select_block, int64_t window,
                    int64_t q_offset) {
  const bool has = blocks.defined() && blocks.numel() > 0;
  return KeyRule{false, 0, 0, has ? blocks.data<int32_t>() : nullptr, has ? blocks.dim(3) : 0,
                 select_block, window, q_offset};
}

}  // namespace

void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                      float scale, int64_t block, int64_t stride,
                                      int64_t q_offset, Tensor& out, Tensor& lse) {
  expect_f32(lse, "nsa_compressed_attention_forward (lse)");
  forward(q, kc, vc, compressed_rule(block, stride, q_offset), scale, out, lse);
}

void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& kc,
                                       const Tensor& vc, const Tensor& out, const Tensor& lse,
                                       float scale, int64_t block, int64_t stride,
                                       int64_t q_offset, Tensor& dq, Tensor& dkc, Tensor& dvc) {
  backward(dout, q, kc, vc, out, lse, compressed_rule(block, stride, q_offset), scale, dq, dkc,
           dvc);
}

void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& blocks, int64_t select_block, int64_t window,
                                  float scale, int64_t q_offset, Tensor& out, Tensor& lse) {
  expect_f32(lse, "nsa_sparse_attention_forward (lse)");
  forward(q, k, v, sparse_rule(blocks, select_block, window, q_offset), scale, out, lse);
}

void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& blocks, const Tensor& out,
                                   const Tensor& lse, int64_t select_block, int64_t window,
                                   float scale, int64_t q_offset, Tensor& dq, Tensor& dk,
                                   Tensor& dv) {
  backward(dout, q, k, v, out, lse, sparse_rule(blocks, select_block, window, q_offset), scale,
           dq, dk, dv);
}

void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                       int64_t compress_block, int64_t compress_stride, int64_t select_block,
                       int64_t q_offset, Tensor& blocks) {
  expect_dtype(blocks, DType::i32, "nsa_select_blocks (blocks)");
  const Geometry g = geometry(q, kc);
  const int64_t n = blocks.dim(3), ld = g.hkv * g.d;
  const float* pq = q.data<float>();
  const float* pk = kc.data<float>();
  const float* pl = lse.data<float>();
  int32_t* out = blocks.data<int32_t>();
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<double> score;  // f64: sums of many small probabilities rank stably
    std::vector<int64_t> order;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.b * g.hkv; ++task) {
      const int64_t b = task / g.hkv, kvh = task % g.hkv;
      const float* kb = pk + (b * g.s * g.hkv + kvh) * g.d;
      for (int64_t t = 0; t < g.t; ++t) {
        const int64_t p = q_offset + t, jt = p / select_block;
        score.assign(static_cast<size_t>(jt + 1), 0.0);
        const int64_t nv = visible_compressed(p, compress_block, compress_stride, g.s);
        for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
          const float* qr = pq + ((b * g.t + t) * g.h + h) * g.d;
          const float l = pl[(b * g.h + h) * g.t + t];
          if (l == kNegInf) continue;
          for (int64_t i = 0; i < nv; ++i) {
            // Token i lies inside block j iff its whole range [i d, i d + l) does.
            const int64_t start = i * compress_stride, j = start / select_block;
            if (start + compress_block > (j + 1) * select_block || j > jt) continue;
            score[static_cast<size_t>(j)] += std::exp(scale * dot(qr, kb + i * ld, g.d) - l);
          }
        }
        score[static_cast<size_t>(jt)] = std::numeric_limits<double>::infinity();
        order.resize(static_cast<size_t>(jt + 1));
        std::iota(order.begin(), order.end(), int64_t{0});
        const int64_t take = std::min<int64_t>(n, jt + 1);
        std::partial_sort(order.begin(), order.begin() + take, order.end(),
                          [&](int64_t a, int64_t c) {
                            return score[a] != score[c] ? score[a] > score[c] : a < c;
                          });
        std::sort(order.begin(), order.begin() + take);
        int32_t* row = out + ((b * g.hkv + kvh) * g.t + t) * n;
        for (int64_t i = 0; i < n; ++i) row[i] = i < take ? static_cast<int32_t>(order[i]) : -1;
      }
    }
  }
}

void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                              const Tensor& o_win, Tensor& out) {
  const int64_t rows = o_cmp.numel() / o_cmp.dim(3), d = o_cmp.dim(3);  // rows = B T H
  const float* pg = gates.data<float>();
  const float* a = o_cmp.data<float>();
  const float* s = o_slc.data<float>();
  const float* w = o_win.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for if (rows * d >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float ga = fast_sigmoid(pg[3 * r]), gs = fast_sigmoid(pg[3 * r + 1]),
                gw = fast_sigmoid(pg[3 * r + 2]);
    const int64_t o = r * d;
#pragma omp simd
    for (int64_t e = 0; e < d; ++e) po[o + e] = ga * a[o + e] + gs * s[o + e] + gw * w[o + e];
  }
}

void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates, const Tensor& o_cmp,
                               const Tensor& o_slc, const Tensor& o_win, Tensor& dgates,
                               Tensor& do_cmp, Tensor& do_slc, Tensor& do_win) {
  const int64_t rows = o_cmp.numel() / o_cmp.dim(3), d = o_cmp.dim(3);
  const float* pd = dout.data<float>();
  const float* pg = gates.data<float>();
  const float* br[3] = {o_cmp.data<float>(), o_slc.data<float>(), o_win.data<float>()};
  float* dbr[3] = {do_cmp.data<float>(), do_slc.data<float>(), do_win.data<float>()};
  float* pdg = dgates.data<float>();
#pragma omp parallel for if (rows * d >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * d;
    for (int64_t c = 0; c < 3; ++c) {
      const float sg = fast_sigmoid(pg[3 * r + c]);
      pdg[3 * r + c] = sg * (1.f - sg) * dot(pd + o, br[c] + o, d);
      float* dst = dbr[c] + o;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) dst[e] = sg * pd[o + e];
    }
  }
}

}  // namespace el::cpu
