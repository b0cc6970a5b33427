// cpu_mamba.cpp — Mamba-1 reference kernels: the causal depthwise conv with
// SiLU, the selective scan forward and backward, and the column copy of
// ops::split_columns (contracts in ops/backend.h, "Mamba-1").
//
// Layout: activations [B, T, I] with the channel innermost, B/C [B, T, N].
// The scan runs one (b, d) channel at a time, its N states in a small
// vector. The backward recomputes the states of a channel forward into a
// scratch of T x N floats (per thread, never [B, T, I, N]): this backend
// saves no checkpoints (mamba_scan_chunk() = 0), so its extra memory is
// T N 4 bytes per thread plus the per-thread dB/dC partial sums below.
//
// Threading: the scan splits channels d over threads (each thread owns
// dA_log / dD / ddelta_bias of its channels, looping over the batch inside);
// dB and dC sum over channels, so each thread adds into its own [B, T, N]
// partial and the partials are summed in thread order afterwards (a fixed
// order for a given thread count). The conv splits rows (b, t) the same way.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

int threads_for(int64_t work) { return work >= kParallelMinWork ? omp_get_max_threads() : 1; }

// torch.nn.functional.softplus (beta 1, threshold 20) and its derivative.
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
inline float softplus_grad(float x) { return x > 20.f ? 1.f : 1.f / (1.f + std::exp(-x)); }
inline float silu(float x) { return x / (1.f + std::exp(-x)); }
inline float silu_grad(float x) {
  const float s = 1.f / (1.f + std::exp(-x));
  return s * (1.f + x * (1.f - s));
}

// Row b's last real token (ops/backend.h): last[b], or T - 1.
int64_t last_of(const Tensor& last, int64_t b, int64_t T) {
  return last.defined() ? static_cast<int64_t>(last.data<int32_t>()[b]) : T - 1;
}

void check_last(const Tensor& last, int64_t B, int64_t T, const char* what) {
  if (!last.defined()) return;
  expect_dtype(last, DType::i32, what);
  EL_ENSURE(last.numel() == B, "cpu {}: last has {} entries for batch {}", what, last.numel(), B);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t l = last.data<int32_t>()[b];
    EL_ENSURE(l >= 0 && l < T, "cpu {}: last[{}] = {} outside [0, {})", what, b, l, T);
  }
}

// Sums nt partials of n floats each into out, in thread order.
void reduce_partials(const std::vector<float>& part, int nt, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float s = 0.f;
    for (int t = 0; t < nt; ++t) s += part[static_cast<size_t>(t * n + i)];
    out[i] = s;
  }
}

struct ScanDims {
  int64_t B, T, I, N;
};

ScanDims scan_dims(const Tensor& u, const Tensor& A_log, const Tensor& Bm, const Tensor& Cm,
                   const Tensor& D, const Tensor& z, const Tensor& delta, const Tensor& bias) {
  EL_ENSURE(u.ndim() == 3 && A_log.ndim() == 2, "cpu mamba_scan: u {} A_log {}",
            shape_str(u.shape()), shape_str(A_log.shape()));
  const ScanDims s{u.dim(0), u.dim(1), u.dim(2), A_log.dim(1)};
  EL_ENSURE(A_log.dim(0) == s.I && delta.shape() == u.shape() && z.shape() == u.shape() &&
                Bm.numel() == s.B * s.T * s.N && Cm.numel() == s.B * s.T * s.N &&
                D.numel() == s.I && bias.numel() == s.I,
            "cpu mamba_scan: u {} delta {} z {} A_log {} B {} C {} D {} bias {}",
            shape_str(u.shape()), shape_str(delta.shape()), shape_str(z.shape()),
            shape_str(A_log.shape()), shape_str(Bm.shape()), shape_str(Cm.shape()),
            shape_str(D.shape()), shape_str(bias.shape()));
  return s;
}

}  // namespace

void mamba_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& last,
                          Tensor& state, Tensor& out) {
  expect_f32(x, "mamba_conv1d_forward (x)");
  expect_f32(w, "mamba_conv1d_forward (w)");
  expect_f32(out, "mamba_conv1d_forward (out)");
  EL_ENSURE(x.ndim() == 3 && out.shape() == x.shape() && w.numel() % x.dim(2) == 0,
            "cpu mamba_conv1d_forward: x {} w {} out {}", shape_str(x.shape()),
            shape_str(w.shape()), shape_str(out.shape()));
  const int64_t B = x.dim(0), T = x.dim(1), I = x.dim(2), K = w.numel() / I;
  if (bias.defined()) expect_f32(bias, "mamba_conv1d_forward (bias)");
  check_last(last, B, T, "mamba_conv1d_forward");
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pb = bias.defined() ? bias.data<float>() : nullptr;
  const float* ps = nullptr;
  if (state.defined()) {
    expect_f32(state, "mamba_conv1d_forward (state)");
    EL_ENSURE(state.numel() == B * (K - 1) * I,
              "cpu mamba_conv1d_forward: state {} for B {} K {} I {}", shape_str(state.shape()), B,
              K, I);
    ps = state.data<float>();
  }
  float* po = out.data<float>();
#pragma omp parallel for schedule(static) num_threads(threads_for(B * T * I * K))
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t b = r / T, t = r % T;
    float* o = po + r * I;
    for (int64_t d = 0; d < I; ++d) o[d] = pb ? pb[d] : 0.f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t tau = t - K + 1 + k;  // input time read by tap k
      const float* in = tau >= 0 ? px + (b * T + tau) * I
                        : ps     ? ps + (b * (K - 1) + (K - 1 + tau)) * I
                                 : nullptr;
      if (!in) continue;
      for (int64_t d = 0; d < I; ++d) o[d] += pw[d * K + k] * in[d];
    }
    for (int64_t d = 0; d < I; ++d) o[d] = silu(o[d]);
  }
  if (!ps || K == 1) return;
  // The new state: the K - 1 inputs ending at last[b], older ones from the old state.
  float* pst = state.data<float>();
  std::vector<float> old(static_cast<size_t>((K - 1) * I));
  for (int64_t b = 0; b < B; ++b) {
    float* sb = pst + b * (K - 1) * I;
    std::memcpy(old.data(), sb, old.size() * sizeof(float));
    const int64_t l = last_of(last, b, T);
    for (int64_t j = 0; j < K - 1; ++j) {
      const int64_t tau = l - (K - 2) + j;
      const float* src = tau >= 0 ? px + (b * T + tau) * I : old.data() + (K - 1 + tau) * I;
      std::memcpy(sb + j * I, src, static_cast<size_t>(I) * sizeof(float));
    }
  }
}

void mamba_conv1d_backward(const Tensor& dout, const Tensor& x, const Tensor& w,
                           const Tensor& bias, Tensor& dx, Tensor& dw, Tensor& dbias) {
  using Args = std::initializer_list<const Tensor*>;
  for (const Tensor* t : Args{&dout, &x, &w, &dx, &dw}) expect_f32(*t, "mamba_conv1d_backward");
  const int64_t B = x.dim(0), T = x.dim(1), I = x.dim(2), K = w.numel() / I;
  EL_ENSURE(dout.shape() == x.shape() && dx.shape() == x.shape() && dw.numel() == I * K &&
                (!bias.defined() || (dbias.defined() && dbias.numel() == I)),
            "cpu mamba_conv1d_backward: dout {} x {} dx {} dw {}", shape_str(dout.shape()),
            shape_str(x.shape()), shape_str(dx.shape()), shape_str(dw.shape()));
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pb = bias.defined() ? bias.data<float>() : nullptr;
  const float* pg = dout.data<float>();
  // dpre = dout * silu'(pre), the pre-activation recomputed.
  std::vector<float> dpre(static_cast<size_t>(B * T * I));
  const int nt = threads_for(B * T * I * K);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t b = r / T, t = r % T;
    float* g = dpre.data() + r * I;
    for (int64_t d = 0; d < I; ++d) g[d] = pb ? pb[d] : 0.f;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t tau = t - K + 1 + k;
      if (tau < 0) continue;
      const float* in = px + (b * T + tau) * I;
      for (int64_t d = 0; d < I; ++d) g[d] += pw[d * K + k] * in[d];
    }
    for (int64_t d = 0; d < I; ++d) g[d] = pg[r * I + d] * silu_grad(g[d]);
  }
  // dx[b, tau] = sum_k w[d, k] dpre[b, tau + K - 1 - k] (a gather: no races).
  float* pdx = dx.data<float>();
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t b = r / T, tau = r % T;
    float* o = pdx + r * I;
    std::fill(o, o + I, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t t = tau + K - 1 - k;
      if (t >= T) continue;
      const float* g = dpre.data() + (b * T + t) * I;
      for (int64_t d = 0; d < I; ++d) o[d] += pw[d * K + k] * g[d];
    }
  }
  // dw[d, k] = sum over rows of dpre[b, t, d] x[b, t - K + 1 + k, d]; dbias
  // the sum of dpre. Per-thread partials, summed in thread order.
  const int64_t nparts = I * K + I;
  std::vector<float> part(static_cast<size_t>(nt * nparts), 0.f);
#pragma omp parallel num_threads(nt)
  {
    float* my = part.data() + omp_get_thread_num() * nparts;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * T; ++r) {
      const int64_t b = r / T, t = r % T;
      const float* g = dpre.data() + r * I;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t tau = t - K + 1 + k;
        if (tau < 0) continue;
        const float* in = px + (b * T + tau) * I;
        for (int64_t d = 0; d < I; ++d) my[d * K + k] += g[d] * in[d];
      }
      for (int64_t d = 0; d < I; ++d) my[I * K + d] += g[d];
    }
  }
  std::vector<float> sums(static_cast<size_t>(nparts));
  reduce_partials(part, nt, nparts, sums.data());
  std::memcpy(dw.data<float>(), sums.data(), static_cast<size_t>(I * K) * sizeof(float));
  if (bias.defined()) {
    expect_f32(dbias, "mamba_conv1d_backward (dbias)");
    std::memcpy(dbias.data<float>(), sums.data() + I * K, static_cast<size_t>(I) * sizeof(float));
  }
}

void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& Bm,
                        const Tensor& Cm, const Tensor& D, const Tensor& z, const Tensor& bias,
                        const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints) {
  using Args = std::initializer_list<const Tensor*>;
  for (const Tensor* t : Args{&u, &delta, &A_log, &Bm, &Cm, &D, &z, &bias, &y}) {
    expect_f32(*t, "mamba_scan_forward");
  }
  const ScanDims s = scan_dims(u, A_log, Bm, Cm, D, z, delta, bias);
  EL_ENSURE(!checkpoints.defined(), "cpu mamba_scan_forward: this backend takes no checkpoints");
  EL_ENSURE(y.shape() == u.shape(), "cpu mamba_scan_forward: y {} for u {}", shape_str(y.shape()),
            shape_str(u.shape()));
  check_last(last, s.B, s.T, "mamba_scan_forward");
  float* pst = nullptr;
  if (state.defined()) {
    expect_f32(state, "mamba_scan_forward (state)");
    EL_ENSURE(state.numel() == s.B * s.I * s.N, "cpu mamba_scan_forward: state {}",
              shape_str(state.shape()));
    pst = state.data<float>();
  }
  const float *pu = u.data<float>(), *pdt = delta.data<float>(), *pal = A_log.data<float>(),
              *pB = Bm.data<float>(), *pC = Cm.data<float>(), *pD = D.data<float>(),
              *pz = z.data<float>(), *pbias = bias.data<float>();
  float* py = y.data<float>();
  const int64_t B = s.B, T = s.T, I = s.I, N = s.N;
#pragma omp parallel num_threads(threads_for(B * T * I * N * 4))
  {
    std::vector<float> h(static_cast<size_t>(N)), A(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t d = 0; d < I; ++d) {
      for (int64_t n = 0; n < N; ++n) A[n] = -std::exp(pal[d * N + n]);
      for (int64_t b = 0; b < B; ++b) {
        float* hs = pst ? pst + (b * I + d) * N : nullptr;
        for (int64_t n = 0; n < N; ++n) h[n] = hs ? hs[n] : 0.f;
        const int64_t stop = last_of(last, b, T);
        for (int64_t t = 0; t < T; ++t) {
          const int64_t e = (b * T + t) * I + d;
          const float dt = softplus(pdt[e] + pbias[d]), x = pu[e];
          const float* Bt = pB + (b * T + t) * N;
          const float* Ct = pC + (b * T + t) * N;
          float acc = 0.f;
          for (int64_t n = 0; n < N; ++n) {
            h[n] = fast_exp(dt * A[n]) * h[n] + (dt * Bt[n]) * x;
            acc += Ct[n] * h[n];
          }
          py[e] = (acc + pD[d] * x) * silu(pz[e]);
          if (hs && t == stop) std::copy(h.begin(), h.end(), hs);
        }
      }
    }
  }
}

void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                         const Tensor& A_log, const Tensor& Bm, const Tensor& Cm,
                         const Tensor& D, const Tensor& z, const Tensor& bias,
                         const Tensor& checkpoints, Tensor& du, Tensor& ddelta, Tensor& dA_log,
                         Tensor& dB, Tensor& dC, Tensor& dD, Tensor& dz, Tensor& dbias) {
  using Args = std::initializer_list<const Tensor*>;
  for (const Tensor* t : Args{&dy, &u, &delta, &A_log, &Bm, &Cm, &D, &z, &bias, &du, &ddelta,
                              &dA_log, &dB, &dC, &dD, &dz, &dbias}) {
    expect_f32(*t, "mamba_scan_backward");
  }
  const ScanDims s = scan_dims(u, A_log, Bm, Cm, D, z, delta, bias);
  EL_ENSURE(!checkpoints.defined(), "cpu mamba_scan_backward: this backend takes no checkpoints");
  EL_ENSURE(dy.shape() == u.shape() && du.shape() == u.shape() && ddelta.shape() == u.shape() &&
                dz.shape() == u.shape() && dA_log.numel() == s.I * s.N && dD.numel() == s.I &&
                dbias.numel() == s.I && dB.numel() == Bm.numel() && dC.numel() == Cm.numel(),
            "cpu mamba_scan_backward: gradient shapes do not match u {}", shape_str(u.shape()));
  const float *pg = dy.data<float>(), *pu = u.data<float>(), *pdt = delta.data<float>(),
              *pal = A_log.data<float>(), *pB = Bm.data<float>(), *pC = Cm.data<float>(),
              *pD = D.data<float>(), *pz = z.data<float>(), *pbias = bias.data<float>();
  float *pdu = du.data<float>(), *pddt = ddelta.data<float>(), *pdz = dz.data<float>(),
        *pdA = dA_log.data<float>(), *pdD = dD.data<float>(), *pdbias = dbias.data<float>();
  const int64_t B = s.B, T = s.T, I = s.I, N = s.N;
  const int nt = threads_for(B * T * I * N * 8);
  const int64_t btn = B * T * N;
  std::vector<float> part_B(static_cast<size_t>(nt * btn), 0.f);
  std::vector<float> part_C(static_cast<size_t>(nt * btn), 0.f);
#pragma omp parallel num_threads(nt)
  {
    const int me = omp_get_thread_num();
    float* myB = part_B.data() + me * btn;
    float* myC = part_C.data() + me * btn;
    std::vector<float> hs(static_cast<size_t>((T + 1) * N));  // hs[t + 1] = h_t, hs[0] = 0
    std::vector<float> A(static_cast<size_t>(N)), dh(static_cast<size_t>(N)),
        dA(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t d = 0; d < I; ++d) {
      for (int64_t n = 0; n < N; ++n) A[n] = -std::exp(pal[d * N + n]);
      std::fill(dA.begin(), dA.end(), 0.f);
      float dD_acc = 0.f, dbias_acc = 0.f;
      for (int64_t b = 0; b < B; ++b) {
        // Forward again: the states of this channel, T x N floats.
        std::fill(hs.begin(), hs.begin() + N, 0.f);
        for (int64_t t = 0; t < T; ++t) {
          const int64_t e = (b * T + t) * I + d;
          const float dt = softplus(pdt[e] + pbias[d]), x = pu[e];
          const float* Bt = pB + (b * T + t) * N;
          const float* prev = hs.data() + t * N;
          float* cur = hs.data() + (t + 1) * N;
          for (int64_t n = 0; n < N; ++n) cur[n] = fast_exp(dt * A[n]) * prev[n] + (dt * Bt[n]) * x;
        }
        // Backward: dh carries dL/dh_t (through h_{t+1} and y_t).
        std::fill(dh.begin(), dh.end(), 0.f);
        for (int64_t t = T - 1; t >= 0; --t) {
          const int64_t e = (b * T + t) * I + d;
          const int64_t row = (b * T + t) * N;
          const float raw = pdt[e] + pbias[d], dt = softplus(raw), x = pu[e], zz = pz[e];
          const float* h = hs.data() + (t + 1) * N;
          const float* prev = hs.data() + t * N;
          float acc = 0.f;
          for (int64_t n = 0; n < N; ++n) acc += pC[row + n] * h[n];
          const float g = pg[e];
          const float gy = g * silu(zz);  // gradient of (C . h + D u)
          pdz[e] = g * (acc + pD[d] * x) * silu_grad(zz);
          dD_acc += gy * x;
          float du_acc = gy * pD[d], ddt = 0.f;
          for (int64_t n = 0; n < N; ++n) {
            const float a = fast_exp(dt * A[n]);
            const float dhn = dh[n] + gy * pC[row + n];
            myC[row + n] += gy * h[n];
            myB[row + n] += dhn * dt * x;
            du_acc += dhn * dt * pB[row + n];
            ddt += dhn * (A[n] * a * prev[n] + pB[row + n] * x);
            dA[n] += dhn * a * prev[n] * dt;
            dh[n] = dhn * a;
          }
          pdu[e] = du_acc;
          const float graw = ddt * softplus_grad(raw);
          pddt[e] = graw;
          dbias_acc += graw;
        }
      }
      // A = -exp(A_log): dA_log = dA * A.
      for (int64_t n = 0; n < N; ++n) pdA[d * N + n] = dA[n] * A[n];
      pdD[d] = dD_acc;
      pdbias[d] = dbias_acc;
    }
  }
  reduce_partials(part_B, nt, btn, dB.data<float>());
  reduce_partials(part_C, nt, btn, dC.data<float>());
}

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t cols) {
  EL_ENSURE(src.dtype() == dst.dtype() && src.ndim() >= 1 && dst.ndim() >= 1,
            "cpu copy_columns: src {} {} dst {} {}", dtype_name(src.dtype()),
            shape_str(src.shape()), dtype_name(dst.dtype()), shape_str(dst.shape()));
  const int64_t cs = src.dim(-1), cd = dst.dim(-1);
  const int64_t rows = cs > 0 ? src.numel() / cs : 0;
  EL_ENSURE(src_col >= 0 && dst_col >= 0 && cols >= 0 && src_col + cols <= cs &&
                dst_col + cols <= cd && (cd > 0 ? dst.numel() / cd : 0) == rows,
            "cpu copy_columns: columns [{}, +{}) of {} into [{}, +{}) of {}", src_col, cols,
            shape_str(src.shape()), dst_col, cols, shape_str(dst.shape()));
  const size_t es = dtype_size(src.dtype());
  const char* ps = static_cast<const char*>(src.raw());
  char* pd = static_cast<char*>(dst.raw());
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * cols))
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(pd + (r * cd + dst_col) * es, ps + (r * cs + src_col) * es,
                static_cast<size_t>(cols) * es);
  }
}

}  // namespace el::cpu
