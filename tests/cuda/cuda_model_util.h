// cuda_model_util.h — helpers of the CUDA tests that compare whole models
// and whole layers across backends (mamba_cuda_test.cpp, mla_cuda_test.cpp,
// moe_cuda_test.cpp, nsa_cuda_test.cpp, rwkv_cuda_test.cpp): a card from
// YAML text, seeded token ids, a copy of a model on another device and
// dtype, a model's logits and parameter gradients, the norm-relative error
// and its attention budgets, and the comparisons of a whole step and of
// generation.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/cached_forward.h"
#include "common/ops_tolerance.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"

namespace el::test {

// The card of a test, from YAML text; a card the parser rejects is a broken
// test, reported with the parser's message.
inline ModelCard test_card(const std::string& yaml, const std::string& source_name) {
  auto r = parse_model_card(yaml, source_name);
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

// [B, T] token ids in [0, vocab), drawn from Rng(seed).
inline Tensor ids_tensor(int64_t B, int64_t T, int vocab, uint64_t seed) {
  Rng rng(seed);
  return random_ids({B, T}, rng, 0, vocab);
}

// A model on `device` in `dtype` holding `src`'s parameter values.
inline std::unique_ptr<DecoderLM> copy_model(const DecoderLM& src, Device device, DType dtype) {
  auto m = DecoderLM::create(src.card(), device, 0, dtype, /*init_weights=*/false).value();
  const auto& from = src.parameters();
  const auto& to = m->parameters();
  EL_ENSURE(from.size() == to.size(), "parameter lists differ");
  for (size_t i = 0; i < from.size(); ++i) {
    Tensor t = to[i].tensor;  // a handle on the model's parameter
    t.copy_from(from[i].tensor);
  }
  return m;
}

// The logits (on the host, in *logits) and every parameter's gradient of the
// loss on (ids, targets), in parameters() order (undefined where a parameter
// got none); the gradients are cleared from the model afterwards.
inline std::vector<Tensor> grads_of(DecoderLM& m, const Tensor& ids, const Tensor& targets,
                                    Tensor* logits) {
  {
    NoGrad no_grad;
    *logits = m.forward(ids.to(m.device())).to(Device::cpu());
  }
  Tensor loss = m.loss(ids.to(m.device()), targets.to(m.device()));
  tape().backward(loss);
  std::vector<Tensor> g;
  for (const auto& p : m.parameters()) {
    Tensor t = p.tensor;
    g.push_back(t.has_grad() ? t.grad().to(Device::cpu()) : Tensor());
    t.set_grad(Tensor());
  }
  return g;
}

// ||got - ref|| / ||ref|| over the finite reference values; a non-finite
// reference value (an lse of -inf) must be matched exactly. NaN when the
// sizes differ, when got has a non-finite value where ref is finite, or
// differs from a non-finite one. `floor` > 0 bounds ||ref||^2 below by floor
// per value, so values that are zero in exact arithmetic (a gradient with
// one visible key) do not divide rounding noise by rounding noise; with 0,
// an all-zero ref gives the absolute norm.
inline double relative_error(const Tensor& got, const Tensor& ref, double floor = 0.0) {
  const std::vector<float> a = got.to_floats(), e = ref.to_floats();
  if (a.size() != e.size()) return NAN;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(e[i])) {
      if (a[i] != e[i]) return NAN;
      continue;
    }
    if (!std::isfinite(a[i])) return NAN;
    num += (double(a[i]) - e[i]) * (double(a[i]) - e[i]);
    den += double(e[i]) * e[i];
  }
  if (floor > 0) den = std::max(den, floor * static_cast<double>(a.size()));
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Norm-relative budgets of an attention kernel's output and gradients, as
// tests/cuda/attention_test.cpp sets them: the forward rounds P and out to
// the 16-bit type, the backward rounds more intermediates.
inline double attention_fwd_budget(DType dt) {
  return tolerance_for(dt).rel * (dt == DType::f32 ? 1.0 : 0.5);
}
inline double attention_bwd_budget(DType dt) {
  return tolerance_for(dt).rel * (dt == DType::f32 ? 2.0 : 1.0);
}

// What an attention forward + backward produces, for a comparison.
struct AttentionResult {
  const Tensor& out;
  const Tensor& lse;
  const Tensor& dq;
  const Tensor& dk;
  const Tensor& dv;
};

// out, dq, dk and dv within the attention budgets of `dt` (relative_error
// with `floor`), lse elementwise; failures name `what` and the tensor.
inline void expect_attention_matches(const AttentionResult& got, const AttentionResult& ref,
                                     DType dt, const std::string& what, double floor = 0.0) {
  EXPECT_LT(relative_error(got.out, ref.out, floor), attention_fwd_budget(dt)) << what << " out";
  EXPECT_TRUE(close_to(got.lse, ref.lse, Tolerance{dt == DType::f32 ? 1e-4 : 2e-3, 0.0}, "lse"))
      << what;
  EXPECT_LT(relative_error(got.dq, ref.dq, floor), attention_bwd_budget(dt)) << what << " dq";
  EXPECT_LT(relative_error(got.dk, ref.dk, floor), attention_bwd_budget(dt)) << what << " dk";
  EXPECT_LT(relative_error(got.dv, ref.dv, floor), attention_bwd_budget(dt)) << what << " dv";
}

// One training step's logits and every parameter gradient of `cpu_model`
// copied to `device` in `dtype`, against the CPU model's: relative errors
// below `fwd` (logits) and `bwd` (each gradient), failures naming the
// parameter.
inline void expect_model_matches_cpu(DecoderLM& cpu_model, Device device, DType dtype,
                                     const Tensor& ids, const Tensor& targets, double fwd,
                                     double bwd) {
  Tensor ref_logits, logits;
  const std::vector<Tensor> ref = grads_of(cpu_model, ids, targets, &ref_logits);
  auto model = copy_model(cpu_model, device, dtype);
  const std::vector<Tensor> got = grads_of(*model, ids, targets, &logits);
  const std::string what = dtype_name(dtype);
  EXPECT_LT(relative_error(logits, ref_logits), fwd) << what << " logits";
  const auto& params = cpu_model.parameters();
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(got[i].defined(), ref[i].defined()) << params[i].name;
    if (ref[i].defined()) {
      EXPECT_LT(relative_error(got[i], ref[i]), bwd) << what << " grad " << params[i].name;
    }
  }
}

// Generation on the model's device (common/cached_forward.h) with a cache of
// `cache_dtype`: each step's logits against the model's full forward of the
// host ids [B, T], relative error below `budget`.
inline void expect_decode_matches_forward(DecoderLM& model, const Tensor& ids, int64_t prefill,
                                          DType cache_dtype, double budget,
                                          const std::string& what) {
  std::vector<double> full;
  {
    NoGrad no_grad;
    const std::vector<float> f = model.forward(ids.to(model.device())).to_floats();
    full.assign(f.begin(), f.end());
  }
  EXPECT_TRUE(check_cached_steps(
      model, ids, full, prefill, cache_dtype,
      [&](const Tensor& got, const std::vector<double>& want, int64_t t0,
          int64_t) -> ::testing::AssertionResult {
        const double err = relative_error(
            got, Tensor::from_floats(std::vector<float>(want.begin(), want.end()), got.shape()));
        if (err < budget) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure()
               << what << " tokens from " << t0 << ": relative error " << err << ", budget "
               << budget;
      }));
}

}  // namespace el::test
