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
  // The mean is over kept (target >= 0) rows, counted on the host first (N
  // values, cheap next to the N x V kernel) because the fused path needs it.
  int64_t count = 0;
  const std::vector<float> t = tgt.to_floats();
  for (float v : t) count += v >= 0.f ? 1 : 0;
  const float inv_count = count > 0 ? 1.f / static_cast<float>(count) : 0.f;
  const bool want_grad = any_requires_grad({&logits});
  // The fused classifier computes dlogits (for a backward seed of 1) in the
  // same pass as the loss, so the logits are read once and the softmax is
  // never stored. Not for f16 logits: unscaled gradients of order
  // 1 / (N V) flush to zero in f16, which is why f16 training scales the
  // loss; there the backward runs with the seed.
  const bool fused = want_grad && logits.dtype() != DType::f16;
  Tensor dlogits;
  if (fused) {
    dlogits = empty_like(logits, dev);
    be.cross_entropy_fused(logits, tgt, inv_count, losses, lse, dlogits);
  } else {
    be.cross_entropy_forward(logits, tgt, losses, lse);
  }
  double sum = 0.0;
  {
    const std::vector<float> l = losses.to_floats();
    for (int64_t i = 0; i < n; ++i) {
      if (t[static_cast<size_t>(i)] >= 0.f) sum += l[static_cast<size_t>(i)];
    }
  }
  const float mean = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.f;
  Tensor out = Tensor::full({1}, mean, DType::f32, dev);
  if (want_grad) {
    mark_output(out);
    if (fused) {
      tape().record("cross_entropy", [logits, dlogits, out]() mutable {
        Tensor dy = take_grad(out);
        if (!dy.defined()) return;
        // dy is the backward seed: 1 unless the loss is scaled.
        const float seed = dy.item();
        if (seed != 1.f) backend_for(dy.device()).scale(dlogits, seed);
        accumulate_grad(logits, dlogits);
        dlogits = Tensor();
      });
    } else {
      tape().record("cross_entropy", [logits, tgt, lse, out, inv_count]() {
        Tensor dy = take_grad(out);
        if (!dy.defined()) return;
        const float dloss = dy.item() * inv_count;
        Tensor dl = empty_like(logits, dy.device());
        backend_for(dy.device()).cross_entropy_backward(logits, tgt, lse, dloss, dl);
        accumulate_grad(logits, dl);
      });
    }
  }
  return out;
}

}  // namespace el::ops
