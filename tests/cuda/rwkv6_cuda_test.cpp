// rwkv6_cuda_test.cpp — the RWKV-6 kernels of the CUDA backend
// (src/cuda/cuda_rwkv6.cu) against the CPU backend (the reference):
//  * tanh forward and backward, f32 / bf16 / f16;
//  * WKV-6 forward (y, the state after step last[b]) and backward (dr, dk,
//    dv, dw, du), head sizes 8 / 16 / 32 / 64, odd B and T, T = 1 (a decode
//    step), an initial state, f32 / bf16 / f16;
//  * a two-layer RWKV-6 model on the GPU against the same weights on the
//    CPU: logits and every parameter gradient (f32), and the cached forward.
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/tape.h"
#include "cuda_model_util.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/model_card.h"

namespace el::test {
namespace {

const DType kDtypes[] = {DType::f32, DType::bf16, DType::f16};

TEST(Rwkv6Cuda, TanhMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 10;
  for (DType dt : kDtypes) {
    Rng rng(seed++);
    const Shape s{3, 1001};
    const Tensor x = random_host(s, rng, dt, 2.f), g = random_host(s, rng, dt);
    Tensor r_y = Tensor::empty(s), r_dx = Tensor::empty(s);
    cpu_backend().tanh_forward(x, r_y);
    const Tensor r_y_rounded = round_to(r_y, dt);
    cpu_backend().tanh_backward(g, r_y_rounded, r_dx);
    Tensor g_y = poisoned(s, dt), g_dx = poisoned(s, dt);
    gpu_backend().tanh_forward(to_gpu(x, dt), g_y);
    gpu_backend().tanh_backward(to_gpu(g, dt), g_y, g_dx);
    gpu_backend().synchronize();
    EXPECT_TRUE(close_to(g_y, r_y, tol(dt), std::string("tanh y ") + dtype_name(dt)));
    EXPECT_TRUE(close_to(g_dx, r_dx, tol(dt), std::string("tanh dx ") + dtype_name(dt)));
  }
}

struct Wkv6Case {
  int64_t B, T, H, N;
  bool state, last;
};

TEST(Rwkv6Cuda, WkvMatchesCpu) {
  EL_REQUIRE_GPU();
  const Wkv6Case cases[] = {{2, 37, 2, 8, false, false},  {1, 129, 3, 16, false, false},
                           {3, 9, 1, 32, true, false},    {2, 64, 2, 64, false, false},
                           {3, 10, 2, 16, true, true},    {4, 1, 2, 64, true, false},
                           {1, 257, 1, 64, true, false}};
  uint64_t seed = 300;
  for (DType dt : kDtypes) {
    for (const Wkv6Case& c : cases) {
      Rng rng(seed++);
      const int64_t C = c.H * c.N;
      const Shape ks{c.B, c.T, C};
      const Tensor r = random_host(ks, rng, dt, 0.5f), k = random_host(ks, rng, dt, 0.5f);
      const Tensor v = random_host(ks, rng, dt), dy = random_host(ks, rng, dt);
      std::vector<float> wv = random_host(ks, rng, DType::f32, 0.5f).to_floats();
      for (float& x : wv) x -= 1.f;  // decays around exp(-exp(-1)) = 0.69
      const Tensor w = round_to(Tensor::from_floats(wv, ks), dt);
      const Tensor u = random_host({C}, rng, dt, 0.5f);
      const Tensor state0 =
          c.state ? random_host({c.B, c.H, c.N, c.N}, rng, DType::f32, 0.3f) : Tensor();
      std::vector<int32_t> lastv(static_cast<size_t>(c.B));
      for (auto& l : lastv) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(c.T)));
      const Tensor last = c.last ? Tensor::from_ints(lastv, {c.B}) : Tensor();
      // CPU reference.
      Tensor r_state = c.state ? state0.clone() : Tensor();
      Tensor r_y = Tensor::empty(ks), r_dr = Tensor::empty(ks), r_dk = Tensor::empty(ks),
             r_dv = Tensor::empty(ks), r_dw = Tensor::empty(ks), r_du = Tensor::empty({C});
      cpu_backend().rwkv6_wkv_forward(r, k, v, w, u, c.N, last, r_state, r_y);
      cpu_backend().rwkv6_wkv_backward(r, k, v, w, u, c.N, dy, state0, r_dr, r_dk, r_dv, r_dw,
                                       r_du);
      // GPU.
      const Tensor g_r = to_gpu(r, dt), g_k = to_gpu(k, dt), g_v = to_gpu(v, dt),
                   g_w = to_gpu(w, dt), g_u = to_gpu(u, dt), g_dy = to_gpu(dy, dt);
      Tensor g_state = c.state ? to_gpu(state0) : Tensor();
      const Tensor g_state0 = c.state ? to_gpu(state0) : Tensor();
      const Tensor g_last = c.last ? to_gpu(last) : Tensor();
      Tensor g_y = poisoned(ks, dt), g_dr = poisoned(ks, dt), g_dk = poisoned(ks, dt),
             g_dv = poisoned(ks, dt), g_dw = poisoned(ks, dt), g_du = poisoned({C}, dt);
      gpu_backend().rwkv6_wkv_forward(g_r, g_k, g_v, g_w, g_u, c.N, g_last, g_state, g_y);
      gpu_backend().rwkv6_wkv_backward(g_r, g_k, g_v, g_w, g_u, c.N, g_dy, g_state0, g_dr, g_dk,
                                       g_dv, g_dw, g_du);
      gpu_backend().synchronize();
      const std::string what = fmt::format("wkv6 B{} T{} H{} N{} state{} last{} {}", c.B, c.T,
                                           c.H, c.N, c.state, c.last, dtype_name(dt));
      // Sums of N (y, dr, dk, dv) or T N (dw, du) products: loose factors.
      EXPECT_TRUE(close_to(g_y, r_y, tol(dt), what + " y", 2.0));
      if (c.state) {
        EXPECT_TRUE(close_to(g_state, r_state, tol(DType::f32), what + " state", 4.0));
      }
      EXPECT_TRUE(close_to(g_dr, r_dr, tol(dt), what + " dr", 4.0));
      EXPECT_TRUE(close_to(g_dk, r_dk, tol(dt), what + " dk", 4.0));
      EXPECT_TRUE(close_to(g_dv, r_dv, tol(dt), what + " dv", 4.0));
      EXPECT_TRUE(close_to(g_dw, r_dw, tol(dt), what + " dw", 8.0));
      EXPECT_TRUE(close_to(g_du, r_du, tol(dt), what + " du", 8.0));
    }
  }
}

ModelCard rwkv6_card() {
  auto c = parse_model_card(
      "name: r6\nblock: rwkv6\nn_layer: 2\nd_model: 64\nvocab_size: 97\nmax_seq_len: 64\n"
      "init_std: 0.1\nrwkv6_head_size: 16\nrwkv6_time_mix_extra_dim: 8\n"
      "rwkv6_time_decay_extra_dim: 8\n",
      "r6.yaml");
  EXPECT_TRUE(c.ok()) << c.error().message();
  return c.value();
}

TEST(Rwkv6Cuda, ModelMatchesCpu) {
  EL_REQUIRE_GPU();
  const ModelCard c = rwkv6_card();
  auto cpu = DecoderLM::create(c, Device::cpu(), 3).value();
  auto gm = DecoderLM::create(c, gpu(), 3).value();
  const auto& cp = cpu->parameters();
  const auto& gp = gm->parameters();
  ASSERT_EQ(cp.size(), gp.size());
  Rng rng(5);
  for (size_t i = 0; i < cp.size(); ++i) {
    Tensor t = cp[i].tensor;
    if (cp[i].name.find("_w1") != std::string::npos) {  // open the LoRA paths
      NoGrad no_grad;
      t.copy_from(random_host(t.shape(), rng, DType::f32, 0.3f));
    }
    Tensor g = gp[i].tensor;
    g.copy_from(t.to(gpu()));
  }
  const Tensor ids = random_ids({2, 13}, rng, 0, 97), targets = random_ids({2, 13}, rng, 0, 97);
  Tensor lc = cpu->loss(ids, targets);
  tape().backward(lc);
  Tensor lg = gm->loss(ids.to(gpu()), targets.to(gpu()));
  tape().backward(lg);
  EXPECT_NEAR(lg.to(Device::cpu()).item(), lc.item(), 1e-4);
  for (size_t i = 0; i < cp.size(); ++i) {
    ASSERT_TRUE(gp[i].tensor.has_grad()) << gp[i].name;
    EXPECT_TRUE(close_to(gp[i].tensor.grad(), cp[i].tensor.grad(), tol(DType::f32),
                         gp[i].name + " grad", 8.0));
  }
  NoGrad no_grad;
  const std::vector<float> full = cpu->forward(ids).to_floats();
  KvCache cache = KvCache::create(c, 2, 13, DType::f32, gpu()).value();
  const Tensor pre = gm->forward_cached(
      Tensor::from_ints(std::vector<int32_t>(ids.data<int32_t>(), ids.data<int32_t>() + 26),
                        {2, 13})
          .to(gpu()),
      cache);
  EXPECT_TRUE(close_to(pre, Tensor::from_floats(full, {2, 13, 97}), tol(DType::f32),
                       "cached prefill", 4.0));
}

}  // namespace
}  // namespace el::test
