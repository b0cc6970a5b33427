// cpu_attention.cpp — scaled dot-product attention (causal or not, MHA/GQA/MQA).
//
// Layout: q[B,T,H,D], k/v[B,S,Hkv,D]; query head h reads kv head h / (H/Hkv),
// so GQA never materialises repeated K/V. Work is split over (b, h) pairs;
// each task gathers its kv head once, TRANSPOSED into Kt/Vt[D][S'] (S' = S
// rounded up to 32 plus padding, zeros past S), and walks the queries in
// blocks of 8 rows (1 when T < 8):
//
//   scores[r][j] = (scale q_r) . k_j          rows_times_cols: 32 keys in SIMD
//   p = softmax over visible keys             fast_exp, one score row of S'
//   out_r[d]     = sum_j p[r][j] vt[d][j]     rows_dot_cols: long dots over keys
//
// so the only score storage is 8 x S' per thread, never [B,H,T,S]. The
// backward recomputes p row by row from the saved lse (FlashAttention style):
//   dp = dO V^T, ds = p (dp - rowsum(dO * O)), dQ = scale ds K,
//   dK += scale ds^T Q, dV += p^T dO.
// dK/dV of a kv head get contributions from every query head of its group, so
// each task accumulates into its own transposed [D][S'] slot (vectorised over
// keys like the rest) and the slots are summed per kv head in head order
// afterwards: no races, and results do not depend on thread timing.
// ALiBi (alibi_slopes defined): score r, j gets slope_h * (j - i), i the
// query's position t + (S - T), added to the scaled scores before the
// softmax (forward) and before the exp of the recomputed p (backward).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

// 16 f32 lanes: one AVX-512 register, or two AVX2 / four SSE registers on
// machines without it (GCC splits the type). Plain loops over [4][16]
// accumulators were vectorised with 16-byte vectors only, so the micro-kernels
// spell the vectors out.
using Vec = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
// Query rows per block: 8 (16 accumulators of the score tile, half the
// AVX-512 register file; 1.4x faster than 4 on the 2-core Zen 4), or 1 when
// T < 8 so a decode step (T = 1) does not compute 7 padding rows.
constexpr int64_t kMaxRows = 8;
constexpr int64_t kKeys = 32;  // keys per micro-tile: 2 vectors per row

inline Vec vload(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline float hsum(Vec v) {
  float s = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

struct Dims {
  int64_t b, t, h, d, s, hkv, group;
  int64_t ld;  // row stride of the transposed [D][ld] buffers, >= S rounded up to kKeys
};

// Number of keys query t sees: all S, or s <= t + (S - T) when causal.
inline int64_t visible_keys(const Dims& m, bool causal, int64_t t) {
  if (!causal) return m.s;
  return std::clamp<int64_t>(t + (m.s - m.t) + 1, 0, m.s);
}

inline int64_t round_up(int64_t x, int64_t k) { return (x + k - 1) / k * k; }

// row[j] += slope * (j - i) for j < lim (ALiBi; i = the query's position).
inline void add_alibi(float* row, int64_t lim, float slope, int64_t i) {
  const float base = -slope * static_cast<float>(i);
#pragma omp simd
  for (int64_t j = 0; j < lim; ++j) row[j] += std::fma(slope, static_cast<float>(j), base);
}

// The slope of head h, or 0 (no bias) when there is no slope table.
inline float slope_of(const float* slopes, int64_t h) { return slopes ? slopes[h] : 0.f; }

// out[d * ld + j] = x[b, j, kvh, d] for j < S, zero for S <= j < ld.
void gather_transposed(const float* x, const Dims& m, int64_t b, int64_t kvh, float* out) {
  for (int64_t j = 0; j < m.s; ++j) {
    const float* row = x + ((b * m.s + j) * m.hkv + kvh) * m.d;
    for (int64_t dd = 0; dd < m.d; ++dd) out[dd * m.ld + j] = row[dd];
  }
  for (int64_t dd = 0; dd < m.d; ++dd) {
    for (int64_t j = m.s; j < m.ld; ++j) out[dd * m.ld + j] = 0.f;
  }
}

// sc[r * ld + j] = sum_d a[r * D + d] * bt[d * ld + j]   for r < R, j < nj.
// nj is a multiple of kKeys. The R x kKeys tile of accumulators stays in
// registers while d runs, so each loaded key vector feeds R FMAs.
template <int64_t R>
void rows_times_cols(const float* a, const float* bt, int64_t ld, int64_t dim, int64_t nj,
                     float* sc) {
  for (int64_t j0 = 0; j0 < nj; j0 += kKeys) {
    Vec acc[R][2] = {};
    for (int64_t dd = 0; dd < dim; ++dd) {
      const Vec b0 = vload(bt + dd * ld + j0);
      const Vec b1 = vload(bt + dd * ld + j0 + kLanes);
      for (int64_t r = 0; r < R; ++r) {
        const float ar = a[r * dim + dd];
        acc[r][0] += ar * b0;
        acc[r][1] += ar * b1;
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      vstore(sc + r * ld + j0, acc[r][0]);
      vstore(sc + r * ld + j0 + kLanes, acc[r][1]);
    }
  }
}

// out[r * D + d] = alpha[r] * sum_{j < nj} p[r * ld + j] * bt[d * ld + j]   for r < R.
// Two d at a time, so each p vector feeds two accumulator chains.
template <int64_t R>
void rows_dot_cols(const float* p, const float* bt, int64_t ld, int64_t dim, int64_t nj,
                   const float* alpha, float* out) {
  for (int64_t dd = 0; dd < dim; dd += 2) {
    const bool pair = dd + 1 < dim;
    const float* c0 = bt + dd * ld;
    const float* c1 = pair ? c0 + ld : c0;
    Vec acc[R][2] = {};
    for (int64_t j = 0; j < nj; j += kLanes) {
      const Vec v0 = vload(c0 + j), v1 = vload(c1 + j);
      for (int64_t r = 0; r < R; ++r) {
        const Vec pr = vload(p + r * ld + j);
        acc[r][0] += pr * v0;
        acc[r][1] += pr * v1;
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      out[r * dim + dd] = alpha[r] * hsum(acc[r][0]);
      if (pair) out[r * dim + dd + 1] = alpha[r] * hsum(acc[r][1]);
    }
  }
}

// acc_t[d * ld + j] += sum_r x[r * D + d] * p[r * ld + j]   for j < nj (rank-R
// update of a transposed [D][ld] accumulator; two d at a time).
template <int64_t R>
void cols_update(const float* x, const float* p, int64_t ld, int64_t dim, int64_t nj,
                 float* acc_t) {
  for (int64_t dd = 0; dd < dim; dd += 2) {
    const bool pair = dd + 1 < dim;
    float* d0 = acc_t + dd * ld;
    float* d1 = pair ? d0 + ld : nullptr;
    float x0[R], x1[R];
    for (int64_t r = 0; r < R; ++r) {
      x0[r] = x[r * dim + dd];
      x1[r] = pair ? x[r * dim + dd + 1] : 0.f;
    }
    for (int64_t j = 0; j < nj; j += kLanes) {
      Vec a0 = vload(d0 + j);
      Vec a1 = pair ? vload(d1 + j) : Vec{};
      for (int64_t r = 0; r < R; ++r) {
        const Vec pr = vload(p + r * ld + j);
        a0 += x0[r] * pr;
        a1 += x1[r] * pr;
      }
      vstore(d0 + j, a0);
      if (pair) vstore(d1 + j, a1);
    }
  }
}

// Per-thread scratch for one (b, h) task.
struct Scratch {
  std::vector<float> kt, vt;  // [D][ld] transposed kv head
  std::vector<float> sc, dp;  // [kMaxRows][ld] scores / probabilities, dP / dS
  std::vector<float> qb, ob;  // [kMaxRows][D] scaled queries, outputs / dO
  int64_t cached_b = -1, cached_kvh = -1;

  explicit Scratch(const Dims& m)
      : kt(static_cast<size_t>(m.d * m.ld)),
        vt(static_cast<size_t>(m.d * m.ld)),
        sc(static_cast<size_t>(kMaxRows * m.ld)),
        dp(static_cast<size_t>(kMaxRows * m.ld)),
        qb(static_cast<size_t>(kMaxRows * m.d)),
        ob(static_cast<size_t>(kMaxRows * m.d)) {}

  // Gathers kv head (b, kvh) unless this thread already holds it (consecutive
  // query heads of a GQA group share it).
  void load_kv(const float* k, const float* v, const Dims& m, int64_t b, int64_t kvh) {
    if (b == cached_b && kvh == cached_kvh) return;
    gather_transposed(k, m, b, kvh, kt.data());
    gather_transposed(v, m, b, kvh, vt.data());
    cached_b = b;
    cached_kvh = kvh;
  }
};

// Copies rows t0..t0+nr of head h (batch b) of x[B,T,H,D] into dst[R][D]
// times alpha, zero-filling rows nr..R.
template <int64_t R>
void load_rows(const float* x, const Dims& m, int64_t b, int64_t h, int64_t t0, int64_t nr,
               float alpha, float* dst) {
  for (int64_t r = 0; r < R; ++r) {
    float* o = dst + r * m.d;
    if (r < nr) {
      const float* src = x + ((b * m.t + t0 + r) * m.h + h) * m.d;
      for (int64_t dd = 0; dd < m.d; ++dd) o[dd] = alpha * src[dd];
    } else {
      for (int64_t dd = 0; dd < m.d; ++dd) o[dd] = 0.f;
    }
  }
}

Dims dims_of(const Tensor& q, const Tensor& k) {
  Dims m{};
  m.b = q.dim(0);
  m.t = q.dim(1);
  m.h = q.dim(2);
  m.d = q.dim(3);
  m.s = k.dim(1);
  m.hkv = k.dim(2);
  m.group = m.hkv > 0 ? m.h / m.hkv : 1;
  // Pad so that ld / 16 is odd: rows of the transposed buffers then start in
  // different L1 sets (a 4 KiB-multiple stride, e.g. S = 1024, would put all
  // D rows read by one micro-tile into the same set).
  m.ld = round_up(m.s, kKeys) + kLanes;
  return m;
}

void check_shapes(const Tensor& q, const Tensor& k, const Tensor& v, const char* what) {
  EL_ENSURE(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() && k.dim(0) == q.dim(0) &&
                k.dim(3) == q.dim(3) && k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0,
            "cpu {}: q {} with k {} / v {} (expected q[B,T,H,D], k/v[B,S,Hkv,D], H % Hkv == 0)",
            what, shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
}

// Work above which the (b, h) loop runs on all threads.
bool worth_parallel(const Dims& m) {
  return m.b * m.h * std::max<int64_t>(m.t, 1) * std::max<int64_t>(m.s, 1) *
             std::max<int64_t>(m.d, 1) >=
         kParallelMinWork * 4;
}

// The (b, h) task loop of attention_forward with R query rows per block.
template <int64_t R>
void forward_tasks(const Dims& m, const float* pq, const float* pk, const float* pv, float scale,
                   bool causal, const float* slopes, float* po, float* pl) {
  const int64_t tasks = m.b * m.h;
#pragma omp parallel if (worth_parallel(m))
  {
    Scratch w(m);
    float inv_sum[R];
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / m.h, h = task % m.h;
      w.load_kv(pk, pv, m, b, h / m.group);
      float* lse_row = pl + task * m.t;  // lse[b, h, :]
      for (int64_t t0 = 0; t0 < m.t; t0 += R) {
        const int64_t nr = std::min(R, m.t - t0);
        const int64_t nj = round_up(visible_keys(m, causal, t0 + nr - 1), kKeys);
        load_rows<R>(pq, m, b, h, t0, nr, scale, w.qb.data());
        rows_times_cols<R>(w.qb.data(), w.kt.data(), m.ld, m.d, nj, w.sc.data());
        for (int64_t r = 0; r < R; ++r) {
          float* row = w.sc.data() + r * m.ld;
          const int64_t lim = r < nr ? visible_keys(m, causal, t0 + r) : 0;
          inv_sum[r] = 0.f;
          if (lim == 0) {  // no visible key (or a padding row): output 0, lse -inf
            for (int64_t j = 0; j < nj; ++j) row[j] = 0.f;
            if (r < nr) lse_row[t0 + r] = -INFINITY;
            continue;
          }
          if (slopes) add_alibi(row, lim, slopes[h], t0 + r + (m.s - m.t));
          float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < lim; ++j) mx = std::max(mx, row[j]);
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < lim; ++j) {
            const float e = fast_exp(row[j] - mx);
            row[j] = e;
            sum += e;
          }
          for (int64_t j = lim; j < nj; ++j) row[j] = 0.f;
          inv_sum[r] = 1.f / sum;  // normalisation folded into the PV product
          lse_row[t0 + r] = mx + std::log(sum);
        }
        rows_dot_cols<R>(w.sc.data(), w.vt.data(), m.ld, m.d, nj, inv_sum, w.ob.data());
        for (int64_t r = 0; r < nr; ++r) {
          float* dst = po + ((b * m.t + t0 + r) * m.h + h) * m.d;
          std::memcpy(dst, w.ob.data() + r * m.d, static_cast<size_t>(m.d) * sizeof(float));
        }
      }
    }
  }
}

// The (b, h) task loop of attention_backward with R query rows per block;
// task (b, h) writes dq rows of head h and its own dK^T / dV^T slots.
template <int64_t R>
void backward_tasks(const Dims& m, const float* pdo, const float* pq, const float* pk,
                    const float* pv, const float* po, const float* pl, float scale, bool causal,
                    const float* slopes, float* pdq, float* pdkt, float* pdvt) {
  const int64_t tasks = m.b * m.h;
  const int64_t slot = m.d * m.ld;
#pragma omp parallel if (worth_parallel(m))
  {
    Scratch w(m);
    std::vector<float> dob(static_cast<size_t>(R * m.d));
    float di[R], ls[R], alpha[R];
    for (int64_t r = 0; r < R; ++r) alpha[r] = scale;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / m.h, h = task % m.h;
      w.load_kv(pk, pv, m, b, h / m.group);
      float* dkh = pdkt + task * slot;
      float* dvh = pdvt + task * slot;
      std::memset(dkh, 0, static_cast<size_t>(slot) * sizeof(float));
      std::memset(dvh, 0, static_cast<size_t>(slot) * sizeof(float));
      for (int64_t t0 = 0; t0 < m.t; t0 += R) {
        const int64_t nr = std::min(R, m.t - t0);
        const int64_t nj = round_up(visible_keys(m, causal, t0 + nr - 1), kKeys);
        load_rows<R>(pq, m, b, h, t0, nr, scale, w.qb.data());
        load_rows<R>(pdo, m, b, h, t0, nr, 1.f, dob.data());
        // di[r] = rowsum(dO_r * O_r)
        for (int64_t r = 0; r < R; ++r) {
          di[r] = 0.f;
          ls[r] = 0.f;
          if (r >= nr) continue;
          const float* orow = po + ((b * m.t + t0 + r) * m.h + h) * m.d;
          float s = 0.f;
          for (int64_t dd = 0; dd < m.d; ++dd) s += dob[r * m.d + dd] * orow[dd];
          di[r] = s;
          ls[r] = pl[task * m.t + t0 + r];
        }
        rows_times_cols<R>(w.qb.data(), w.kt.data(), m.ld, m.d, nj, w.sc.data());  // scores
        rows_times_cols<R>(dob.data(), w.vt.data(), m.ld, m.d, nj, w.dp.data());   // dP
        for (int64_t r = 0; r < R; ++r) {
          float* p = w.sc.data() + r * m.ld;
          float* ds = w.dp.data() + r * m.ld;
          const int64_t lim = r < nr ? visible_keys(m, causal, t0 + r) : 0;
          const float l = ls[r], dr = di[r];
          if (slopes) add_alibi(p, lim, slope_of(slopes, h), t0 + r + (m.s - m.t));
#pragma omp simd
          for (int64_t j = 0; j < lim; ++j) {
            const float pj = fast_exp(p[j] - l);
            p[j] = pj;
            ds[j] = pj * (ds[j] - dr);
          }
          for (int64_t j = lim; j < nj; ++j) {
            p[j] = 0.f;
            ds[j] = 0.f;
          }
        }
        // dQ_r = scale * sum_j ds[r][j] k_j
        rows_dot_cols<R>(w.dp.data(), w.kt.data(), m.ld, m.d, nj, alpha, w.ob.data());
        for (int64_t r = 0; r < nr; ++r) {
          float* dst = pdq + ((b * m.t + t0 + r) * m.h + h) * m.d;
          std::memcpy(dst, w.ob.data() + r * m.d, static_cast<size_t>(m.d) * sizeof(float));
        }
        // dV^T[d][j] += sum_r dO_r[d] p[r][j] ;  dK^T[d][j] += sum_r (scale q_r)[d] ds[r][j]
        cols_update<R>(dob.data(), w.sc.data(), m.ld, m.d, nj, dvh);
        cols_update<R>(w.qb.data(), w.dp.data(), m.ld, m.d, nj, dkh);
      }
    }
  }
}

}  // namespace

// The ALiBi slope table's data, or nullptr; checks it is f32 [H].
static const float* slopes_of(const Tensor& slopes, int64_t h, const char* what) {
  if (!slopes.defined()) return nullptr;
  expect_f32(slopes, what);
  EL_ENSURE(slopes.numel() == h, "cpu {}: {} ALiBi slopes for {} heads", what, slopes.numel(), h);
  return slopes.data<float>();
}

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                       Tensor& out, Tensor& lse, const Tensor& alibi_slopes) {
  expect_f32(q, "attention_forward (q)");
  expect_f32(k, "attention_forward (k)");
  expect_f32(v, "attention_forward (v)");
  expect_f32(out, "attention_forward (out)");
  expect_f32(lse, "attention_forward (lse)");
  check_shapes(q, k, v, "attention_forward");
  const Dims m = dims_of(q, k);
  EL_ENSURE(out.numel() == q.numel() && lse.numel() == m.b * m.h * m.t,
            "cpu attention_forward: out {} / lse {} for q {}", shape_str(out.shape()),
            shape_str(lse.shape()), shape_str(q.shape()));
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  float* po = out.data<float>();
  float* pl = lse.data<float>();
  const float* ps = slopes_of(alibi_slopes, m.h, "attention_forward (alibi_slopes)");
  if (m.t >= kMaxRows) {
    forward_tasks<kMaxRows>(m, pq, pk, pv, scale, causal, ps, po, pl);
  } else {
    forward_tasks<1>(m, pq, pk, pv, scale, causal, ps, po, pl);
  }
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, bool causal, Tensor& dq,
                        Tensor& dk, Tensor& dv, const Tensor& alibi_slopes) {
  expect_f32(dout, "attention_backward (dout)");
  expect_f32(q, "attention_backward (q)");
  expect_f32(k, "attention_backward (k)");
  expect_f32(v, "attention_backward (v)");
  expect_f32(out, "attention_backward (out)");
  expect_f32(lse, "attention_backward (lse)");
  expect_f32(dq, "attention_backward (dq)");
  expect_f32(dk, "attention_backward (dk)");
  expect_f32(dv, "attention_backward (dv)");
  check_shapes(q, k, v, "attention_backward");
  const Dims m = dims_of(q, k);
  EL_ENSURE(dout.numel() == q.numel() && out.numel() == q.numel() && dq.numel() == q.numel() &&
                dk.numel() == k.numel() && dv.numel() == v.numel() &&
                lse.numel() == m.b * m.h * m.t,
            "cpu attention_backward: dout {} out {} lse {} dq {} dk {} dv {} for q {} k {}",
            shape_str(dout.shape()), shape_str(out.shape()), shape_str(lse.shape()),
            shape_str(dq.shape()), shape_str(dk.shape()), shape_str(dv.shape()),
            shape_str(q.shape()), shape_str(k.shape()));
  const float* pdo = dout.data<float>();
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const float* po = out.data<float>();
  const float* pl = lse.data<float>();
  float* pdq = dq.data<float>();

  // Each task (b, h) accumulates its dK/dV contributions transposed, [D][ld]
  // like Kt/Vt, in its own slot; they are summed per kv head afterwards.
  const int64_t tasks = m.b * m.h;
  const int64_t slot = m.d * m.ld;
  Tensor dkt = Tensor::empty({tasks, m.d, m.ld}, DType::f32, Device::cpu());
  Tensor dvt = Tensor::empty({tasks, m.d, m.ld}, DType::f32, Device::cpu());
  float* pdkt = dkt.data<float>();
  float* pdvt = dvt.data<float>();

  const float* ps = slopes_of(alibi_slopes, m.h, "attention_backward (alibi_slopes)");
  if (m.t >= kMaxRows) {
    backward_tasks<kMaxRows>(m, pdo, pq, pk, pv, po, pl, scale, causal, ps, pdq, pdkt, pdvt);
  } else {
    backward_tasks<1>(m, pdo, pq, pk, pv, po, pl, scale, causal, ps, pdq, pdkt, pdvt);
  }
  // dk[b, s, kvh, :] = sum over the group's query heads (in head order, so
  // the result does not depend on the thread count) of their dK^T slots.
  float* pdk = dk.data<float>();
  float* pdv = dv.data<float>();
  const int64_t groups = m.b * m.hkv;
#pragma omp parallel for schedule(static) if (tasks * slot >= kParallelMinWork)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b = g / m.hkv, kvh = g % m.hkv;
    for (int64_t s = 0; s < m.s; ++s) {
      float* ok = pdk + ((b * m.s + s) * m.hkv + kvh) * m.d;
      float* ov = pdv + ((b * m.s + s) * m.hkv + kvh) * m.d;
      for (int64_t dd = 0; dd < m.d; ++dd) {
        float ak = 0.f, av = 0.f;
        for (int64_t gi = 0; gi < m.group; ++gi) {
          const int64_t task = b * m.h + kvh * m.group + gi;
          ak += pdkt[task * slot + dd * m.ld + s];
          av += pdvt[task * slot + dd * m.ld + s];
        }
        ok[dd] = ak;
        ov[dd] = av;
      }
    }
  }
}

}  // namespace el::cpu
