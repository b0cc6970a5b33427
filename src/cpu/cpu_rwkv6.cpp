// cpu_rwkv6.cpp — RWKV-6 reference kernels: tanh and the WKV-6 recurrence
// forward and backward (contracts in ops/backend.h, "RWKV-6").
//
// WKV-6 runs one (batch row, head) pair at a time over T with its N x N state
// S[i][j] (i the key dim, j the value dim); pairs are independent, so OpenMP
// splits them. du is summed over the batch from per-row partials in a fixed
// order.
//
// The backward needs, per token, the state before it (for dr and the decay
// gradient) and the gradient G_t = dL/dS_t of the state after it (for dk, dv
// and the decay). Storing every S_t would cost T N^2 per pair, so it runs two
// sweeps that each keep one N x N matrix:
//  1. forward, S: dr_t[i] = u_i k_t[i] (dy_t . v_t) + (S_{t-1} dy_t)[i], and
//     alpha_t[i] = r_t[i] (S_{t-1} dy_t)[i];
//  2. reverse, G (G_{T-1} = 0, G_{t-1} = r_t dy_t^T + diag(d_t) G_t):
//     dk_t[i] = r_t[i] u_i (dy_t . v_t) + (G_t v_t)[i],
//     dv_t = (r_t . (u * k_t)) dy_t + G_t^T k_t, and
//     beta_t[i] = k_t[i] (G_t v_t)[i].
// With P_t = sum_j G_t[i][j] S_t[i][j], S_t = d_t S_{t-1} + k_t v_t^T gives
// P_t = dL/dlog d_t + beta_t and P_{t-1} = alpha_t + dL/dlog d_t, so
//   dL/dlog d_t[i] = sum_{t' > t} alpha_{t'}[i] - sum_{t' >= t} beta_{t'}[i]
// (P_{T-1} = 0): a reverse running sum in sweep 2, no stored states; the
// initial state enters through alpha_0 only. dw = dL/dlog d * (-exp(w)).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

struct Wkv6Geometry {
  int64_t b, t, c, h, n;
};

Wkv6Geometry geometry(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                      const Tensor& u, int64_t n, const char* what) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&r, &k, &v, &w, &u}) {
    expect_f32(*t, what);
  }
  EL_ENSURE(k.ndim() == 3 && r.shape() == k.shape() && v.shape() == k.shape() &&
                w.shape() == k.shape() && u.numel() == k.dim(2) && n > 0 && k.dim(2) % n == 0,
            "cpu {}: r {}, k {}, v {}, w {}, u {}, head size {} (expected [B, T, C], u [C], C a "
            "multiple of the head size)",
            what, shape_str(r.shape()), shape_str(k.shape()), shape_str(v.shape()),
            shape_str(w.shape()), shape_str(u.shape()), n);
  return {k.dim(0), k.dim(1), k.dim(2), k.dim(2) / n, n};
}

void expect_state(const Tensor& s, const Wkv6Geometry& g, const char* what) {
  if (!s.defined()) return;
  expect_f32(s, what);
  EL_ENSURE(s.numel() == g.b * g.h * g.n * g.n,
            "cpu {}: state {} for B {}, H {}, N {} (expected [B, H, N, N])", what,
            shape_str(s.shape()), g.b, g.h, g.n);
}

bool worth_parallel(const Wkv6Geometry& g) { return g.b * g.t * g.c * g.n >= kParallelMinWork; }

}  // namespace

void tanh_forward(const Tensor& x, Tensor& out) {
  expect_f32(x, "tanh_forward");
  expect_f32(out, "tanh_forward");
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) po[i] = std::tanh(px[i]);
}

void tanh_backward(const Tensor& dout, const Tensor& out, Tensor& dx) {
  expect_f32(dout, "tanh_backward");
  const float* g = dout.data<float>();
  const float* y = out.data<float>();
  float* d = dx.data<float>();
  const int64_t n = dx.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) d[i] = g[i] * (1.0f - y[i] * y[i]);
}

void rwkv6_wkv_forward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                       const Tensor& u, int64_t head_size, const Tensor& last, Tensor& state,
                       Tensor& y) {
  const char* what = "rwkv6_wkv_forward";
  const Wkv6Geometry g = geometry(r, k, v, w, u, head_size, what);
  expect_state(state, g, what);
  expect_f32(y, what);
  const Tensor last_host = last.defined() ? last.to(Device::cpu()) : Tensor();
  const float *pr = r.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
  const float *pw = w.data<float>(), *pu = u.data<float>();
  float* py = y.data<float>();
  float* ps = state.defined() ? state.data<float>() : nullptr;
  const int32_t* pl = last_host.defined() ? last_host.data<int32_t>() : nullptr;
  const int64_t N = g.n, C = g.c, T = g.t;
#pragma omp parallel for schedule(static) if (worth_parallel(g))
  for (int64_t bh = 0; bh < g.b * g.h; ++bh) {
    const int64_t b = bh / g.h, h = bh % g.h;
    float* st = ps ? ps + bh * N * N : nullptr;
    std::vector<float> S(static_cast<size_t>(N * N), 0.0f), d(static_cast<size_t>(N));
    if (st) std::copy(st, st + N * N, S.begin());
    const int64_t keep = pl ? pl[b] : T - 1;
    EL_ENSURE(keep >= 0 && keep < T, "cpu {}: row {}'s last token {} outside [0, {})", what, b,
              keep, T);
    const float* uh = pu + h * N;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t o = (b * T + t) * C + h * N;
      const float *rt = pr + o, *kt = pk + o, *vt = pv + o;
      float bonus = 0.0f;  // r_t . (u * k_t)
      for (int64_t i = 0; i < N; ++i) bonus += rt[i] * uh[i] * kt[i];
      for (int64_t j = 0; j < N; ++j) {
        float acc = bonus * vt[j];
        for (int64_t i = 0; i < N; ++i) acc += rt[i] * S[static_cast<size_t>(i * N + j)];
        py[o + j] = acc;
      }
      for (int64_t i = 0; i < N; ++i) {
        const float di = std::exp(-std::exp(pw[o + i]));
        float* row = S.data() + i * N;
        for (int64_t j = 0; j < N; ++j) row[j] = di * row[j] + kt[i] * vt[j];
      }
      if (st && t == keep) std::copy(S.begin(), S.end(), st);
    }
  }
}

void rwkv6_wkv_backward(const Tensor& r, const Tensor& k, const Tensor& v, const Tensor& w,
                        const Tensor& u, int64_t head_size, const Tensor& dy,
                        const Tensor& state0, Tensor& dr, Tensor& dk, Tensor& dv, Tensor& dw,
                        Tensor& du) {
  const char* what = "rwkv6_wkv_backward";
  const Wkv6Geometry g = geometry(r, k, v, w, u, head_size, what);
  expect_state(state0, g, what);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dy, &dr, &dk, &dv, &dw, &du}) {
    expect_f32(*t, what);
  }
  const float *pr = r.data<float>(), *pk = k.data<float>(), *pv = v.data<float>();
  const float *pw = w.data<float>(), *pu = u.data<float>(), *pg = dy.data<float>();
  const float* ps0 = state0.defined() ? state0.data<float>() : nullptr;
  float *pdr = dr.data<float>(), *pdk = dk.data<float>(), *pdv = dv.data<float>();
  float* pdw = dw.data<float>();  // holds alpha between the sweeps
  const int64_t N = g.n, C = g.c, T = g.t;
  std::vector<float> du_rows(static_cast<size_t>(g.b * C), 0.0f);
#pragma omp parallel for schedule(static) if (worth_parallel(g))
  for (int64_t bh = 0; bh < g.b * g.h; ++bh) {
    const int64_t b = bh / g.h, h = bh % g.h;
    const float* uh = pu + h * N;
    float* duh = du_rows.data() + b * C + h * N;
    std::vector<float> M(static_cast<size_t>(N * N), 0.0f);  // S in sweep 1, G in sweep 2
    if (ps0) std::copy(ps0 + bh * N * N, ps0 + (bh + 1) * N * N, M.begin());
    // Sweep 1: forward with S_{t-1}.
    for (int64_t t = 0; t < T; ++t) {
      const int64_t o = (b * T + t) * C + h * N;
      const float *rt = pr + o, *kt = pk + o, *vt = pv + o, *gt = pg + o;
      float dyv = 0.0f;
      for (int64_t j = 0; j < N; ++j) dyv += gt[j] * vt[j];
      for (int64_t i = 0; i < N; ++i) {
        float* row = M.data() + i * N;
        float sdy = 0.0f;
        for (int64_t j = 0; j < N; ++j) sdy += row[j] * gt[j];
        pdr[o + i] = uh[i] * kt[i] * dyv + sdy;
        pdw[o + i] = rt[i] * sdy;  // alpha_t
        duh[i] += rt[i] * kt[i] * dyv;
        const float di = std::exp(-std::exp(pw[o + i]));
        for (int64_t j = 0; j < N; ++j) row[j] = di * row[j] + kt[i] * vt[j];
      }
    }
    // Sweep 2: reverse with G_t.
    std::fill(M.begin(), M.end(), 0.0f);
    std::vector<float> acc_alpha(static_cast<size_t>(N), 0.0f), acc_beta(static_cast<size_t>(N), 0.0f);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t o = (b * T + t) * C + h * N;
      const float *rt = pr + o, *kt = pk + o, *vt = pv + o, *gt = pg + o;
      float dyv = 0.0f, bonus = 0.0f;
      for (int64_t j = 0; j < N; ++j) dyv += gt[j] * vt[j];
      for (int64_t i = 0; i < N; ++i) bonus += rt[i] * uh[i] * kt[i];
      for (int64_t j = 0; j < N; ++j) {
        float acc = bonus * gt[j];
        for (int64_t i = 0; i < N; ++i) acc += M[static_cast<size_t>(i * N + j)] * kt[i];
        pdv[o + j] = acc;
      }
      for (int64_t i = 0; i < N; ++i) {
        float* row = M.data() + i * N;
        float gv = 0.0f;
        for (int64_t j = 0; j < N; ++j) gv += row[j] * vt[j];
        pdk[o + i] = rt[i] * uh[i] * dyv + gv;
        acc_beta[static_cast<size_t>(i)] += kt[i] * gv;
        const float dlogd = acc_alpha[static_cast<size_t>(i)] - acc_beta[static_cast<size_t>(i)];
        acc_alpha[static_cast<size_t>(i)] += pdw[o + i];
        const float e = std::exp(pw[o + i]);
        pdw[o + i] = -dlogd * e;
        const float di = std::exp(-e);
        for (int64_t j = 0; j < N; ++j) row[j] = rt[i] * gt[j] + di * row[j];
      }
    }
  }
  float* pdu = du.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    float s = 0.0f;
    for (int64_t b = 0; b < g.b; ++b) s += du_rows[static_cast<size_t>(b * C + c)];
    pdu[c] = s;
  }
}

}  // namespace el::cpu
