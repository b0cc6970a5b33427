// End-to-end check of the op layer on the CUDA backend: a small decoder block
// (embedding, RMSNorm, linear, RoPE, GQA attention, residual, SwiGLU MLP,
// classifier, cross-entropy) run forward and backward on the CPU and on the
// GPU from the same parameters; the loss and every parameter gradient must
// agree. This exercises the backend's wiring (attention launchers included)
// the way training calls it.
#include <gtest/gtest.h>

#include <map>

#include "autograd/tape.h"
#include "cuda_test_util.h"
#include "ops/ops.h"

namespace el::test {
namespace {

struct Block {
  std::map<std::string, Tensor> p;  // parameters by name
};

constexpr int64_t kB = 2, kT = 19, kC = 64, kH = 4, kHkv = 2, kD = 16, kF = 96, kV = 101;

Block make_params(Rng& rng) {
  Block b;
  b.p["emb"] = random_host({kV, kC}, rng, DType::f32, 0.5f);
  b.p["n1"] = random_host({kC}, rng, DType::f32, 0.1f);
  b.p["wq"] = random_host({kH * kD, kC}, rng, DType::f32, 0.125f);
  b.p["wk"] = random_host({kHkv * kD, kC}, rng, DType::f32, 0.125f);
  b.p["wv"] = random_host({kHkv * kD, kC}, rng, DType::f32, 0.125f);
  b.p["wo"] = random_host({kC, kH * kD}, rng, DType::f32, 0.125f);
  b.p["n2"] = random_host({kC}, rng, DType::f32, 0.1f);
  b.p["wg"] = random_host({kF, kC}, rng, DType::f32, 0.125f);
  b.p["wu"] = random_host({kF, kC}, rng, DType::f32, 0.125f);
  b.p["wd"] = random_host({kC, kF}, rng, DType::f32, 0.1f);
  b.p["out"] = random_host({kV, kC}, rng, DType::f32, 0.125f);
  for (auto& [name, t] : b.p) {
    if (name == "n1" || name == "n2") {  // norm weights near 1
      std::vector<float> v = t.to_floats();
      for (float& x : v) x += 1.f;
      t = Tensor::from_floats(v, t.shape());
    }
  }
  return b;
}

// The parameters on `device` in `dtype`, requiring grad.
Block on_device(const Block& host, Device device, DType dtype) {
  Block b;
  for (const auto& [name, t] : host.p) {
    Tensor d = Tensor::empty(t.shape(), dtype, device);
    d.copy_from(t);
    d.set_requires_grad(true);
    b.p[name] = d;
  }
  return b;
}

Tensor forward(Block& b, const Tensor& ids, const Tensor& targets, Device device) {
  Tensor x = ops::embedding(ids, b.p["emb"]);  // [B, T, C]
  Tensor h = ops::rmsnorm(x, b.p["n1"], 1e-5f);
  const Tensor freq = ops::rope_inv_freq(kD, 10000.f, device);
  Tensor q = ops::rope(ops::reshape(ops::linear(h, b.p["wq"]), {kB, kT, kH, kD}), freq);
  Tensor k = ops::rope(ops::reshape(ops::linear(h, b.p["wk"]), {kB, kT, kHkv, kD}), freq);
  Tensor v = ops::reshape(ops::linear(h, b.p["wv"]), {kB, kT, kHkv, kD});
  Tensor a = ops::reshape(ops::attention(q, k, v, true), {kB, kT, kH * kD});
  // The residual add fused with the next norm, as the model does it.
  const ops::ResidualNorm r = ops::add_rmsnorm(x, ops::linear(a, b.p["wo"]), b.p["n2"], 1e-5f);
  x = r.sum;
  h = r.normed;
  x = ops::add(
      x, ops::linear(ops::swiglu(ops::linear(h, b.p["wg"]), ops::linear(h, b.p["wu"])), b.p["wd"]));
  Tensor logits = ops::reshape(ops::linear(x, b.p["out"]), {kB * kT, kV});
  return ops::cross_entropy(logits, targets);
}

void run_block(DType dtype, double factor) {
  Rng rng(1234);
  const Block host = make_params(rng);
  const Tensor ids = random_ids({kB, kT}, rng, 0, kV);
  std::vector<int32_t> tv(static_cast<size_t>(kB * kT));
  for (size_t i = 0; i < tv.size(); ++i) tv[i] = i % 5 == 4 ? -1 : int32_t(rng.below(kV));
  const Tensor targets = Tensor::from_ints(tv, {kB * kT});

  Block cpu = on_device(host, Device::cpu(), dtype);
  const Tensor loss_cpu = forward(cpu, ids, targets, Device::cpu());
  tape().backward(loss_cpu);

  Block gpu_b = on_device(host, gpu(), dtype);
  const Tensor loss_gpu = forward(gpu_b, to_gpu(ids), to_gpu(targets), gpu());
  tape().backward(loss_gpu);
  gpu_backend().synchronize();

  const Tolerance t = tol(dtype);
  EXPECT_TRUE(close_to(loss_gpu, loss_cpu, t, "loss", factor)) << dtype_name(dtype);
  for (const auto& [name, p] : cpu.p) {
    ASSERT_TRUE(p.has_grad() && gpu_b.p[name].has_grad()) << name;
    EXPECT_TRUE(close_to(gpu_b.p[name].grad(), p.grad(), t, "grad " + name, factor))
        << dtype_name(dtype);
  }
}

TEST(CudaOps, DecoderBlockForwardBackwardMatchesCpuF32) {
  EL_REQUIRE_GPU();
  run_block(DType::f32, 10.0);
}

TEST(CudaOps, DecoderBlockForwardBackwardMatchesCpuBf16) {
  EL_REQUIRE_GPU();
  run_block(DType::bf16, 3.0);
}

}  // namespace
}  // namespace el::test
