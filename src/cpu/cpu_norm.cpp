// cpu_norm.cpp — RMSNorm and LayerNorm over the last dimension of x[N, C].
//
// Forward and dx are independent per row (parallel over rows). dw/db sum over
// rows: each thread sums its own static block of rows into a private [C]
// buffer and the partials are added in thread order, so the result depends
// only on the thread count, not on timing.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

struct Rows {
  int64_t n;
  int64_t c;
};

Rows rows_of(const Tensor& x, const Tensor& w, const char* what) {
  EL_ENSURE(x.ndim() >= 1, "cpu {}: x must have at least one dimension", what);
  const int64_t c = x.dim(-1);
  EL_ENSURE(w.numel() == c, "cpu {}: weight {} for x {}", what, shape_str(w.shape()),
            shape_str(x.shape()));
  return {c == 0 ? 0 : x.numel() / c, c};
}

int threads_for(int64_t work) { return work >= kParallelMinWork ? omp_get_max_threads() : 1; }

// Adds the per-thread partials part[nt][C] into out[C] (overwriting out).
void reduce_partials(const std::vector<float>& part, int nt, int64_t c, float* out) {
  for (int64_t j = 0; j < c; ++j) out[j] = 0.f;
  for (int t = 0; t < nt; ++t) {
    const float* p = part.data() + t * c;
    for (int64_t j = 0; j < c; ++j) out[j] += p[j];
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  expect_f32(x, "rmsnorm_forward (x)");
  expect_f32(w, "rmsnorm_forward (w)");
  expect_f32(y, "rmsnorm_forward (y)");
  expect_f32(rstd, "rmsnorm_forward (rstd)");
  const auto [n, c] = rows_of(x, w, "rmsnorm_forward");
  EL_ENSURE(y.numel() == x.numel() && rstd.numel() == n,
            "cpu rmsnorm_forward: y {} / rstd {} for x {}", shape_str(y.shape()),
            shape_str(rstd.shape()), shape_str(x.shape()));
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* py = y.data<float>();
  float* pr = rstd.data<float>();
#pragma omp parallel for schedule(static) num_threads(threads_for(n* c))
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = px + i * c;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < c; ++j) ss += xr[j] * xr[j];
    const float r = 1.f / std::sqrt(ss / static_cast<float>(c) + eps);
    pr[i] = r;
    float* yr = py + i * c;
    for (int64_t j = 0; j < c; ++j) yr[j] = xr[j] * r * pw[j];
  }
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      Tensor& dx, Tensor& dw) {
  expect_f32(dy, "rmsnorm_backward (dy)");
  expect_f32(x, "rmsnorm_backward (x)");
  expect_f32(w, "rmsnorm_backward (w)");
  expect_f32(rstd, "rmsnorm_backward (rstd)");
  expect_f32(dx, "rmsnorm_backward (dx)");
  expect_f32(dw, "rmsnorm_backward (dw)");
  const auto [n, c] = rows_of(x, w, "rmsnorm_backward");
  EL_ENSURE(
      dy.numel() == x.numel() && dx.numel() == x.numel() && rstd.numel() == n && dw.numel() == c,
      "cpu rmsnorm_backward: dy {} dx {} rstd {} dw {} for x {}", shape_str(dy.shape()),
      shape_str(dx.shape()), shape_str(rstd.shape()), shape_str(dw.shape()), shape_str(x.shape()));
  const float* pdy = dy.data<float>();
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pr = rstd.data<float>();
  float* pdx = dx.data<float>();
  const int nt = threads_for(n * c);
  std::vector<float> part(static_cast<size_t>(nt * c), 0.f);
  const float inv_c = c > 0 ? 1.f / static_cast<float>(c) : 0.f;
#pragma omp parallel num_threads(nt)
  {
    float* my_dw = part.data() + omp_get_thread_num() * c;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* xr = px + i * c;
      const float* gr = pdy + i * c;
      const float r = pr[i];
      // y = x r w  =>  dx = r (dy w) - x r^3 / C * sum(dy w x)
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < c; ++j) dot += gr[j] * pw[j] * xr[j];
      const float k = dot * r * r * r * inv_c;
      float* dxr = pdx + i * c;
      for (int64_t j = 0; j < c; ++j) {
        dxr[j] = r * gr[j] * pw[j] - xr[j] * k;
        my_dw[j] += gr[j] * xr[j] * r;
      }
    }
  }
  reduce_partials(part, nt, c, dw.data<float>());
}

void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                       Tensor& mean, Tensor& rstd) {
  expect_f32(x, "layernorm_forward (x)");
  expect_f32(w, "layernorm_forward (w)");
  expect_f32(b, "layernorm_forward (b)");
  expect_f32(y, "layernorm_forward (y)");
  expect_f32(mean, "layernorm_forward (mean)");
  expect_f32(rstd, "layernorm_forward (rstd)");
  const auto [n, c] = rows_of(x, w, "layernorm_forward");
  EL_ENSURE(b.numel() == c && y.numel() == x.numel() && mean.numel() == n && rstd.numel() == n,
            "cpu layernorm_forward: b {} y {} mean {} rstd {} for x {}", shape_str(b.shape()),
            shape_str(y.shape()), shape_str(mean.shape()), shape_str(rstd.shape()),
            shape_str(x.shape()));
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pb = b.data<float>();
  float* py = y.data<float>();
  float* pm = mean.data<float>();
  float* pr = rstd.data<float>();
  const float inv_c = c > 0 ? 1.f / static_cast<float>(c) : 0.f;
#pragma omp parallel for schedule(static) num_threads(threads_for(n* c))
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = px + i * c;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) s += xr[j];
    const float mu = s * inv_c;
    float v = 0.f;  // two-pass variance: no cancellation for rows with a large mean
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < c; ++j) v += (xr[j] - mu) * (xr[j] - mu);
    const float r = 1.f / std::sqrt(v * inv_c + eps);
    pm[i] = mu;
    pr[i] = r;
    float* yr = py + i * c;
    for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - mu) * r * pw[j] + pb[j];
  }
}

void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  expect_f32(dy, "layernorm_backward (dy)");
  expect_f32(x, "layernorm_backward (x)");
  expect_f32(w, "layernorm_backward (w)");
  expect_f32(mean, "layernorm_backward (mean)");
  expect_f32(rstd, "layernorm_backward (rstd)");
  expect_f32(dx, "layernorm_backward (dx)");
  expect_f32(dw, "layernorm_backward (dw)");
  expect_f32(db, "layernorm_backward (db)");
  const auto [n, c] = rows_of(x, w, "layernorm_backward");
  EL_ENSURE(dy.numel() == x.numel() && dx.numel() == x.numel() && mean.numel() == n &&
                rstd.numel() == n && dw.numel() == c && db.numel() == c,
            "cpu layernorm_backward: dy {} dx {} mean {} rstd {} dw {} db {} for x {}",
            shape_str(dy.shape()), shape_str(dx.shape()), shape_str(mean.shape()),
            shape_str(rstd.shape()), shape_str(dw.shape()), shape_str(db.shape()),
            shape_str(x.shape()));
  const float* pdy = dy.data<float>();
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pm = mean.data<float>();
  const float* pr = rstd.data<float>();
  float* pdx = dx.data<float>();
  const int nt = threads_for(n * c);
  std::vector<float> part(static_cast<size_t>(2 * nt * c), 0.f);  // [nt][dw | db]
  const float inv_c = c > 0 ? 1.f / static_cast<float>(c) : 0.f;
#pragma omp parallel num_threads(nt)
  {
    float* my_dw = part.data() + omp_get_thread_num() * c;
    float* my_db = part.data() + (nt + omp_get_thread_num()) * c;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* xr = px + i * c;
      const float* gr = pdy + i * c;
      const float mu = pm[i], r = pr[i];
      // xhat = (x - mu) r; g = dy w;  dx = r (g - mean(g) - xhat mean(g xhat))
      float sg = 0.f, sgx = 0.f;
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t j = 0; j < c; ++j) {
        const float g = gr[j] * pw[j];
        sg += g;
        sgx += g * (xr[j] - mu) * r;
      }
      const float mg = sg * inv_c, mgx = sgx * inv_c;
      float* dxr = pdx + i * c;
      for (int64_t j = 0; j < c; ++j) {
        const float xhat = (xr[j] - mu) * r;
        dxr[j] = r * (gr[j] * pw[j] - mg - xhat * mgx);
        my_dw[j] += gr[j] * xhat;
        my_db[j] += gr[j];
      }
    }
  }
  reduce_partials(std::vector<float>(part.begin(), part.begin() + nt * c), nt, c, dw.data<float>());
  reduce_partials(std::vector<float>(part.begin() + nt * c, part.end()), nt, c, db.data<float>());
}

}  // namespace el::cpu
