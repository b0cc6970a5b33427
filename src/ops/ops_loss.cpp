// ops_loss.cpp — mean cross-entropy with ignored targets.
#include <vector>

#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_dtype;
using detail::check_float;
using detail::check_same_device;
using detail::desc;
using detail::empty_like;

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_float("cross_entropy", "logits", logits);
  check_dtype("cross_entropy", "targets", targets, DType::i32);
  check_same_device("cross_entropy", "logits", logits, "targets", targets);
  EL_ENSURE(logits.ndim() == 2 && logits.dim(1) > 0,
            "ops::cross_entropy: logits {} must be [N, V] with V > 0", desc(logits));
  const int64_t n = logits.dim(0);
  EL_ENSURE(targets.numel() == n,
            "ops::cross_entropy: targets {} do not match logits {} (need {} targets)",
            desc(targets), desc(logits), n);
  const Device dev = logits.device();
  Backend& be = backend_for(dev);
  Tensor tgt = targets.ndim() == 1 ? targets : targets.view({n});
  // Per-row losses, lse and the mean are f32 whatever the logits' dtype.
  Tensor losses = Tensor::empty({n}, DType::f32, dev);
  Tensor lse = Tensor::empty({n}, DType::f32, dev);
  be.cross_entropy_forward(logits, tgt, losses, lse);
  // The mean is over kept (target >= 0) rows; counted and summed on the host
  // in f64 (N values, cheap next to the N x V kernel).
  int64_t count = 0;
  double sum = 0.0;
  {
    const std::vector<float> l = losses.to_floats();
    const std::vector<float> t = tgt.to_floats();
    for (int64_t i = 0; i < n; ++i) {
      if (t[static_cast<size_t>(i)] >= 0.f) {
        ++count;
        sum += l[static_cast<size_t>(i)];
      }
    }
  }
  const float mean = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.f;
  Tensor out = Tensor::full({1}, mean, DType::f32, dev);
  if (any_requires_grad({&logits})) {
    mark_output(out);
    tape().record("cross_entropy", [logits, tgt, lse, out, count]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      // dy is the backward seed (the loss scale under fp16 training).
      const float dloss = count > 0 ? dy.item() / static_cast<float>(count) : 0.f;
      Tensor dlogits = empty_like(logits, dy.device());
      backend_for(dy.device()).cross_entropy_backward(logits, tgt, lse, dloss, dlogits);
      accumulate_grad(logits, dlogits);
    });
  }
  return out;
}

}  // namespace el::ops
