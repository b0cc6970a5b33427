// cpu_rwkv.cpp — RWKV-4 reference kernels: token shift + time mix, the WKV
// recurrence forward and backward, and the two elementwise gates (sigmoid
// times, squared ReLU). Contracts in ops/backend.h ("RWKV-4").
//
// WKV runs one (batch row, channel) pair at a time over T, as the recurrence
// requires; pairs are independent, so OpenMP splits the channels (each task
// owns whole channels over every batch row, which keeps the per-channel sums
// of dtime_decay / dtime_first in one fixed order).
//
// The backward, per (b, c), without overflow for any k:
//  1. a forward sweep recomputes log D_t, D_t = b_t + e^(u + k_t) the
//     denominator of y_t (from the stable state, so it never overflows);
//  2. a reverse sweep carries the adjoints of the state, alpha_t = dL/da_t
//     and beta_t = dL/db_t (sums over s >= t of e^((s - t) w) dy_s / D_s,
//     times 1 or -y_s), and their w-derivatives alpha'_t, beta'_t (the same
//     weighted by s - t), all four as mantissas of one running maximum n_t:
//       alpha_t = e^w alpha_{t+1} + dy_t / D_t,
//       alpha'_t = e^w (alpha'_{t+1} + alpha_{t+1}).
//     Token t then gets dk_t = dy_t e^(u + k_t) (v_t - y_t) / D_t
//     + e^(k_t) (v_t alpha_{t+1} + beta_{t+1}), dv_t = dy_t e^(u + k_t) / D_t
//     + e^(k_t) alpha_{t+1}, and dL/dw sums e^(k_t) (v_t alpha'_{t+1} +
//     beta'_{t+1}) (plus a_0 alpha'_0 + b_0 beta'_0 for an initial state).
//     Every exponent there is <= 0: b_s >= e^((s - 1 - t) w + k_t) for s > t.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

// The zero state's maximum, as transformers writes it (exp(-1e38 - x) = 0).
constexpr float kNoState = -1e38f;

struct WkvGeometry {
  int64_t b, t, c;
};

WkvGeometry wkv_geometry(const Tensor& k, const Tensor& v, const Tensor& w, const Tensor& u,
                         const char* what) {
  EL_ENSURE(k.ndim() == 3 && v.shape() == k.shape() && w.numel() == k.dim(2) &&
                u.numel() == k.dim(2),
            "cpu {}: k {}, v {}, time_decay {}, time_first {} (expected k/v [B, T, C], [C])", what,
            shape_str(k.shape()), shape_str(v.shape()), shape_str(w.shape()),
            shape_str(u.shape()));
  return {k.dim(0), k.dim(1), k.dim(2)};
}

void expect_state(const Tensor& s, const WkvGeometry& g, const char* what) {
  if (!s.defined()) return;
  expect_f32(s, what);
  EL_ENSURE(s.numel() == g.b * 3 * g.c, "cpu {}: state {} for B {} and C {} (expected [B, 3, C])",
            what, shape_str(s.shape()), g.b, g.c);
}

void expect_all_f32(const char* what, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) expect_f32(*t, what);
}

// The state after one more token: decayed by w, then the token itself
// without the bonus, e^k (v, 1), rescaled to the new running maximum.
inline void advance_state(float& num, float& den, float& mx, float kk, float vv, float w) {
  const float m = std::max(mx + w, kk);
  const float e1 = std::exp(mx + w - m), e2 = std::exp(kk - m);
  num = e1 * num + e2 * vv;
  den = e1 * den + e2;
  mx = m;
}

bool worth_parallel(const WkvGeometry& g) { return g.b * g.t * g.c >= kParallelMinWork; }

}  // namespace

void rwkv_time_mix_forward(const Tensor& x, const Tensor& prev, const std::vector<Tensor>& mix,
                           std::vector<Tensor>& outs) {
  expect_f32(x, "rwkv_time_mix_forward (x)");
  EL_ENSURE(x.ndim() == 3 && !mix.empty() && outs.size() == mix.size(),
            "cpu rwkv_time_mix_forward: x {} with {} mix and {} out tensors", shape_str(x.shape()),
            mix.size(), outs.size());
  const int64_t B = x.dim(0), T = x.dim(1), C = x.dim(2);
  if (prev.defined()) {
    expect_f32(prev, "rwkv_time_mix_forward (prev)");
    EL_ENSURE(prev.numel() == B * C, "cpu rwkv_time_mix_forward: prev {} for x {}",
              shape_str(prev.shape()), shape_str(x.shape()));
  }
  for (size_t j = 0; j < mix.size(); ++j) {
    expect_f32(mix[j], "rwkv_time_mix_forward (mix)");
    expect_f32(outs[j], "rwkv_time_mix_forward (out)");
    EL_ENSURE(mix[j].numel() == C && outs[j].numel() == x.numel(),
              "cpu rwkv_time_mix_forward: mix {} / out {} for x {}", shape_str(mix[j].shape()),
              shape_str(outs[j].shape()), shape_str(x.shape()));
  }
  const float* px = x.data<float>();
  const float* pp = prev.defined() ? prev.data<float>() : nullptr;
#pragma omp parallel for schedule(static) if (B * T * C * static_cast<int64_t>(mix.size()) >= kParallelMinWork)
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t b = r / T, t = r % T;
    const float* xr = px + r * C;
    const float* sr = t > 0 ? xr - C : (pp ? pp + b * C : nullptr);
    for (size_t j = 0; j < mix.size(); ++j) {
      const float* m = mix[j].data<float>();
      float* o = outs[j].data<float>() + r * C;
      // x * m + xs * (1 - m), in transformers' order of operations.
      if (sr) {
        for (int64_t c = 0; c < C; ++c) o[c] = xr[c] * m[c] + sr[c] * (1.f - m[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) o[c] = xr[c] * m[c];
      }
    }
  }
}

void rwkv_time_mix_backward(const std::vector<Tensor>& douts, const Tensor& x, const Tensor& prev,
                            const std::vector<Tensor>& mix, Tensor& dx,
                            std::vector<Tensor>& dmix) {
  expect_f32(x, "rwkv_time_mix_backward (x)");
  expect_f32(dx, "rwkv_time_mix_backward (dx)");
  EL_ENSURE(x.ndim() == 3 && douts.size() == mix.size() && dmix.size() == mix.size() &&
                dx.numel() == x.numel(),
            "cpu rwkv_time_mix_backward: x {}, dx {}, {} douts / {} mix / {} dmix",
            shape_str(x.shape()), shape_str(dx.shape()), douts.size(), mix.size(), dmix.size());
  const int64_t B = x.dim(0), T = x.dim(1), C = x.dim(2);
  const size_t M = mix.size();
  for (size_t j = 0; j < M; ++j) {
    expect_f32(douts[j], "rwkv_time_mix_backward (dout)");
    expect_f32(mix[j], "rwkv_time_mix_backward (mix)");
    expect_f32(dmix[j], "rwkv_time_mix_backward (dmix)");
    EL_ENSURE(douts[j].numel() == x.numel() && mix[j].numel() == C && dmix[j].numel() == C,
              "cpu rwkv_time_mix_backward: dout {}, mix {}, dmix {} for x {}",
              shape_str(douts[j].shape()), shape_str(mix[j].shape()), shape_str(dmix[j].shape()),
              shape_str(x.shape()));
  }
  const float* px = x.data<float>();
  const float* pp = prev.defined() ? prev.data<float>() : nullptr;
  float* pdx = dx.data<float>();
  // dx[t] = sum_j dout_j[t] m_j + dout_j[t + 1] (1 - m_j) (row t is the
  // shifted input of row t + 1 of the same sequence).
#pragma omp parallel for schedule(static) if (B * T * C * static_cast<int64_t>(M) >= kParallelMinWork)
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t t = r % T;
    float* d = pdx + r * C;
    std::fill(d, d + C, 0.f);
    for (size_t j = 0; j < M; ++j) {
      const float* m = mix[j].data<float>();
      const float* g = douts[j].data<float>() + r * C;
      for (int64_t c = 0; c < C; ++c) d[c] += g[c] * m[c];
      if (t + 1 < T) {
        const float* gn = g + C;
        for (int64_t c = 0; c < C; ++c) d[c] += gn[c] * (1.f - m[c]);
      }
    }
  }
  // dmix_j[c] = sum over rows of dout_j * (x - xs): channels split over
  // threads, each summing its rows in order.
  for (size_t j = 0; j < M; ++j) {
    const float* g = douts[j].data<float>();
    float* dm = dmix[j].data<float>();
#pragma omp parallel for schedule(static) if (B * T * C >= kParallelMinWork)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < B * T; ++r) {
        const int64_t b = r / T, t = r % T;
        const float xs = t > 0 ? px[(r - 1) * C + c] : (pp ? pp[b * C + c] : 0.f);
        acc += static_cast<double>(g[r * C + c]) * (px[r * C + c] - xs);
      }
      dm[c] = static_cast<float>(acc);
    }
  }
}

void rwkv_wkv_forward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                      const Tensor& v, const Tensor& last, Tensor& state, Tensor& y) {
  expect_all_f32("rwkv_wkv_forward", {&time_decay, &time_first, &k, &v, &y});
  const WkvGeometry g = wkv_geometry(k, v, time_decay, time_first, "rwkv_wkv_forward");
  expect_state(state, g, "rwkv_wkv_forward (state)");
  if (last.defined()) {
    expect_dtype(last, DType::i32, "rwkv_wkv_forward (last)");
    EL_ENSURE(last.numel() == g.b, "cpu rwkv_wkv_forward: last {} for batch {}",
              shape_str(last.shape()), g.b);
    for (int64_t b = 0; b < g.b; ++b) {
      const int32_t l = last.data<int32_t>()[b];
      EL_ENSURE(l >= 0 && l < g.t, "cpu rwkv_wkv_forward: last[{}] = {} outside [0, {})", b, l,
                g.t);
    }
  }
  const float* pw = time_decay.data<float>();
  const float* pu = time_first.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const int32_t* pl = last.defined() ? last.data<int32_t>() : nullptr;
  float* ps = state.defined() ? state.data<float>() : nullptr;
  float* py = y.data<float>();
  const int64_t B = g.b, T = g.t, C = g.c;
#pragma omp parallel for schedule(static) if (worth_parallel(g))
  for (int64_t c = 0; c < C; ++c) {
    const float w = -std::exp(pw[c]), u = pu[c];
    for (int64_t b = 0; b < B; ++b) {
      float* st = ps ? ps + b * 3 * C + c : nullptr;
      float num = st ? st[0] : 0.f, den = st ? st[C] : 0.f, mx = st ? st[2 * C] : kNoState;
      const int64_t keep = pl ? pl[b] : T - 1;
      float kept[3] = {num, den, mx};
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * T + t) * C + c;
        const float kk = pk[i], vv = pv[i];
        // Output: the state plus the current token with its bonus u.
        const float m = std::max(mx, kk + u);
        const float e1 = std::exp(mx - m), e2 = std::exp(kk + u - m);
        py[i] = (e1 * num + e2 * vv) / (e1 * den + e2);
        advance_state(num, den, mx, kk, vv, w);
        if (t == keep) kept[0] = num, kept[1] = den, kept[2] = mx;
      }
      if (st) st[0] = kept[0], st[C] = kept[1], st[2 * C] = kept[2];
    }
  }
}

void rwkv_wkv_backward(const Tensor& time_decay, const Tensor& time_first, const Tensor& k,
                       const Tensor& v, const Tensor& y, const Tensor& dy, const Tensor& state0,
                       Tensor& dtime_decay, Tensor& dtime_first, Tensor& dk, Tensor& dv) {
  expect_all_f32("rwkv_wkv_backward", {&time_decay, &time_first, &k, &v, &y, &dy, &dtime_decay,
                                       &dtime_first, &dk, &dv});
  const WkvGeometry g = wkv_geometry(k, v, time_decay, time_first, "rwkv_wkv_backward");
  expect_state(state0, g, "rwkv_wkv_backward (state0)");
  const float* pw = time_decay.data<float>();
  const float* pu = time_first.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const float* py = y.data<float>();
  const float* pg = dy.data<float>();
  const float* ps = state0.defined() ? state0.data<float>() : nullptr;
  float* pdk = dk.data<float>();
  float* pdv = dv.data<float>();
  const int64_t B = g.b, T = g.t, C = g.c;
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<float> log_den(static_cast<size_t>(T));
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      const float w = -std::exp(pw[c]), u = pu[c];
      double gw = 0, gu = 0;  // dL/dw and dL/du summed over the batch rows
      for (int64_t b = 0; b < B; ++b) {
        const float* st = ps ? ps + b * 3 * C + c : nullptr;
        const float num0 = st ? st[0] : 0.f, den0 = st ? st[C] : 0.f,
                    mx0 = st ? st[2 * C] : kNoState;
        // 1. log D_t from the recomputed stable state.
        float num = num0, den = den0, mx = mx0;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t i = (b * T + t) * C + c;
          const float kk = pk[i], vv = pv[i];
          const float m = std::max(mx, kk + u);
          log_den[t] = m + std::log(std::exp(mx - m) * den + std::exp(kk + u - m));
          advance_state(num, den, mx, kk, vv, w);
        }
        // 2. Reverse sweep; (a, bb, a1, b1) e^n hold alpha, beta, alpha',
        // beta' of step t + 1 (zero past the end).
        float a = 0.f, bb = 0.f, a1 = 0.f, b1 = 0.f, n = kNoState;
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t i = (b * T + t) * C + c;
          const float kk = pk[i], vv = pv[i], yy = py[i], gy = pg[i], ld = log_den[t];
          const float cur = gy * std::exp(u + kk - ld);  // dy_t e^(u + k_t) / D_t
          const float es = std::exp(kk + n);              // e^(k_t) times the adjoints' scale
          gu += static_cast<double>(cur) * (vv - yy);
          gw += static_cast<double>(es) * (vv * a1 + b1);
          pdk[i] = cur * (vv - yy) + es * (vv * a + bb);
          pdv[i] = cur + es * a;
          const float nn = std::max(w + n, -ld);
          const float f1 = std::exp(w + n - nn), f2 = std::exp(-ld - nn);
          a1 = f1 * (a1 + a);
          b1 = f1 * (b1 + bb);
          a = f1 * a + f2 * gy;
          bb = f1 * bb - f2 * gy * yy;
          n = nn;
        }
        // The initial state decays by e^(t w) into every step: a_0 alpha'_0 + b_0 beta'_0.
        if (st) gw += static_cast<double>(std::exp(mx0 + n)) * (num0 * a1 + den0 * b1);
      }
      // w = -exp(time_decay): dw / dtime_decay = w.
      dtime_decay.data<float>()[c] = static_cast<float>(gw * w);
      dtime_first.data<float>()[c] = static_cast<float>(gu);
    }
  }
}

void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out) {
  expect_f32(r, "sigmoid_mul_forward (r)");
  expect_f32(y, "sigmoid_mul_forward (y)");
  expect_f32(out, "sigmoid_mul_forward (out)");
  EL_ENSURE(r.numel() == y.numel() && out.numel() == r.numel(),
            "cpu sigmoid_mul_forward: r {}, y {}, out {}", shape_str(r.shape()),
            shape_str(y.shape()), shape_str(out.shape()));
  const float* pr = r.data<float>();
  const float* py = y.data<float>();
  float* po = out.data<float>();
  const int64_t n = r.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) po[i] = 1.f / (1.f + std::exp(-pr[i])) * py[i];
}

void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                          Tensor& dy) {
  expect_all_f32("sigmoid_mul_backward", {&dout, &r, &y, &dr, &dy});
  EL_ENSURE(r.numel() == y.numel() && dout.numel() == r.numel() && dr.numel() == r.numel() &&
                dy.numel() == r.numel(),
            "cpu sigmoid_mul_backward: r {}, y {}, dout {}", shape_str(r.shape()),
            shape_str(y.shape()), shape_str(dout.shape()));
  const float* pg = dout.data<float>();
  const float* pr = r.data<float>();
  const float* py = y.data<float>();
  float* pdr = dr.data<float>();
  float* pdy = dy.data<float>();
  const int64_t n = r.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.f / (1.f + std::exp(-pr[i]));
    pdr[i] = pg[i] * py[i] * s * (1.f - s);
    pdy[i] = pg[i] * s;
  }
}

void relu_square_forward(const Tensor& x, Tensor& out) {
  expect_f32(x, "relu_square_forward (x)");
  expect_f32(out, "relu_square_forward (out)");
  EL_ENSURE(out.numel() == x.numel(), "cpu relu_square_forward: x {}, out {}",
            shape_str(x.shape()), shape_str(out.shape()));
  const float* px = x.data<float>();
  float* po = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float p = std::max(px[i], 0.f);
    po[i] = p * p;
  }
}

void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  expect_all_f32("relu_square_backward", {&dout, &x, &dx});
  EL_ENSURE(dout.numel() == x.numel() && dx.numel() == x.numel(),
            "cpu relu_square_backward: dout {}, x {}, dx {}", shape_str(dout.shape()),
            shape_str(x.shape()), shape_str(dx.shape()));
  const float* pg = dout.data<float>();
  const float* px = x.data<float>();
  float* pdx = dx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) pdx[i] = 2.f * std::max(px[i], 0.f) * pg[i];
}

}  // namespace el::cpu
