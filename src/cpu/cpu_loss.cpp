// cpu_loss.cpp — fused log-softmax + cross-entropy over logits[N, V].
//
// Rows are independent, so both passes run parallel over rows. The forward
// subtracts the row max before exponentiating (no overflow for any finite
// logits) and keeps lse[N] so the backward is one exp per logit, no re-max.
#include <cmath>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

void check_targets(const Tensor& targets, int64_t n, int64_t v, const char* what) {
  EL_ENSURE(targets.numel() == n, "cpu {}: {} targets for {} rows", what, targets.numel(), n);
  const int32_t* t = targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    EL_ENSURE(t[i] < v, "cpu {}: target {} at row {} is not below the vocab size {}", what, t[i], i,
              v);
  }
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                           Tensor& lse) {
  expect_f32(logits, "cross_entropy_forward (logits)");
  expect_dtype(targets, DType::i32, "cross_entropy_forward (targets)");
  expect_f32(losses, "cross_entropy_forward (losses)");
  expect_f32(lse, "cross_entropy_forward (lse)");
  EL_ENSURE(logits.ndim() == 2, "cpu cross_entropy_forward: logits must be [N, V], got {}",
            shape_str(logits.shape()));
  const int64_t n = logits.dim(0), v = logits.dim(1);
  EL_ENSURE(v > 0 && losses.numel() == n && lse.numel() == n,
            "cpu cross_entropy_forward: losses {} / lse {} for logits {}",
            shape_str(losses.shape()), shape_str(lse.shape()), shape_str(logits.shape()));
  check_targets(targets, n, v, "cross_entropy_forward");
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  float* ploss = losses.data<float>();
  float* plse = lse.data<float>();
#pragma omp parallel for schedule(static) if (n * v >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = pl + i * v;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, row[j]);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < v; ++j) s += fast_exp(row[j] - mx);
    const float l = mx + std::log(s);
    plse[i] = l;
    ploss[i] = pt[i] >= 0 ? l - row[pt[i]] : 0.f;
  }
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float dloss, Tensor& dlogits) {
  expect_f32(logits, "cross_entropy_backward (logits)");
  expect_dtype(targets, DType::i32, "cross_entropy_backward (targets)");
  expect_f32(lse, "cross_entropy_backward (lse)");
  expect_f32(dlogits, "cross_entropy_backward (dlogits)");
  EL_ENSURE(logits.ndim() == 2 && dlogits.numel() == logits.numel(),
            "cpu cross_entropy_backward: dlogits {} for logits {}", shape_str(dlogits.shape()),
            shape_str(logits.shape()));
  const int64_t n = logits.dim(0), v = logits.dim(1);
  EL_ENSURE(lse.numel() == n, "cpu cross_entropy_backward: lse {} for logits {}",
            shape_str(lse.shape()), shape_str(logits.shape()));
  check_targets(targets, n, v, "cross_entropy_backward");
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  const float* plse = lse.data<float>();
  float* pd = dlogits.data<float>();
#pragma omp parallel for schedule(static) if (n * v >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    float* drow = pd + i * v;
    if (pt[i] < 0) {
      for (int64_t j = 0; j < v; ++j) drow[j] = 0.f;
      continue;
    }
    const float* row = pl + i * v;
    const float l = plse[i];
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) drow[j] = fast_exp(row[j] - l) * dloss;
    drow[pt[i]] -= dloss;
  }
}

}  // namespace el::cpu
