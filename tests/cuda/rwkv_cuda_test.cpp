// rwkv_cuda_test.cpp — the RWKV-4 kernels of the CUDA backend
// (src/cuda/cuda_rwkv.cu, sigmoid_mul / relu_square in cuda_elementwise.cu)
// against the CPU backend (the reference):
//  * token shift + time mix, forward (1 to 3 mixes, with and without prev)
//    and backward (dx, dmix), f32 / bf16 / f16, odd sizes;
//  * WKV forward (y, the state after step last[b]) and backward (dk, dv,
//    dtime_decay, dtime_first), odd B / T / C, T longer than a block of
//    loads, keys that overflow e^k in f32, an initial state, a decode step
//    (T = 1, the state updated in place);
//  * sigmoid_mul and relu_square forward and backward;
//  * a two-layer RWKV model (DecoderLM, block: rwkv) on the GPU against the
//    same weights on the CPU: logits and every parameter gradient, f32 and
//    bf16, and the cached forward (right-padded prefill, then decode steps).
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
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

// A WKV state as the forward leaves it (den >= 1), f32 [B, 3, C].
Tensor random_state(Rng& rng, int64_t B, int64_t C) {
  std::vector<float> s(static_cast<size_t>(B * 3 * C));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      float* p = s.data() + b * 3 * C + c;
      p[C] = 1.f + 2.f * rng.uniform();
      p[0] = p[C] * rng.normal();
      p[2 * C] = rng.normal();
    }
  return Tensor::from_floats(s, {B, 3, C});
}

TEST(RwkvCuda, TimeMixMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : kDtypes) {
    for (const auto& [B, T, C, M, with_prev] :
         {std::array<int64_t, 5>{2, 7, 33, 3, 1}, std::array<int64_t, 5>{1, 129, 64, 2, 0},
          std::array<int64_t, 5>{3, 1, 17, 3, 1}, std::array<int64_t, 5>{1, 5, 8, 1, 0}}) {
      Rng rng(seed++);
      const Shape xs{B, T, C};
      const Tensor x = random_host(xs, rng, dt);
      const Tensor prev = with_prev ? random_host({B, C}, rng, dt) : Tensor();
      std::vector<Tensor> mix, douts, r_outs, r_dmix, g_mix, g_douts, g_outs, g_dmix;
      for (int64_t j = 0; j < M; ++j) {
        std::vector<float> m(static_cast<size_t>(C));
        for (float& v : m) v = rng.uniform();
        mix.push_back(round_to(Tensor::from_floats(m, {1, 1, C}), dt));
        douts.push_back(random_host(xs, rng, dt));
        r_outs.push_back(Tensor::empty(xs));
        r_dmix.push_back(Tensor::empty({1, 1, C}));
        g_mix.push_back(to_gpu(mix.back(), dt));
        g_douts.push_back(to_gpu(douts.back(), dt));
        g_outs.push_back(poisoned(xs, dt));
        g_dmix.push_back(poisoned({1, 1, C}, dt));
      }
      Tensor r_dx = Tensor::empty(xs), g_dx = poisoned(xs, dt);
      cpu_backend().rwkv_time_mix_forward(x, prev, mix, r_outs);
      cpu_backend().rwkv_time_mix_backward(douts, x, prev, mix, r_dx, r_dmix);
      const Tensor gx = to_gpu(x, dt), gp = with_prev ? to_gpu(prev, dt) : Tensor();
      gpu_backend().rwkv_time_mix_forward(gx, gp, g_mix, g_outs);
      gpu_backend().rwkv_time_mix_backward(g_douts, gx, gp, g_mix, g_dx, g_dmix);
      gpu_backend().synchronize();
      const std::string what =
          fmt::format("mix B{} T{} C{} M{} prev{} {}", B, T, C, M, with_prev, dtype_name(dt));
      for (int64_t j = 0; j < M; ++j) {
        EXPECT_TRUE(close_to(g_outs[j], r_outs[j], tol(dt), what + " out"));
        // dmix sums B T products: a long reduction.
        EXPECT_TRUE(close_to(g_dmix[j], r_dmix[j], tol(dt), what + " dmix", 4.0));
      }
      EXPECT_TRUE(close_to(g_dx, r_dx, tol(dt), what + " dx", 2.0));
    }
  }
}

struct WkvCase {
  int64_t B, T, C;
  float key_offset;
  bool state, last;
};

TEST(RwkvCuda, WkvMatchesCpu) {
  EL_REQUIRE_GPU();
  const WkvCase cases[] = {{2, 37, 33, 0.f, false, false}, {1, 300, 64, 0.f, false, false},
                           {3, 9, 5, 100.f, false, false}, {2, 6, 7, -60.f, false, false},
                           {2, 11, 19, 0.f, true, false},  {3, 10, 8, 0.f, true, true},
                           {4, 1, 65, 0.f, true, false}};  // the last: a decode step
  uint64_t seed = 200;
  for (DType dt : kDtypes) {
    for (const WkvCase& c : cases) {
      Rng rng(seed++);
      const Shape ks{c.B, c.T, c.C};
      const Tensor td = random_host({c.C}, rng, dt), tf = random_host({c.C}, rng, dt);
      std::vector<float> kv = random_host(ks, rng, DType::f32).to_floats();
      for (float& x : kv) x += c.key_offset;
      const Tensor k = round_to(Tensor::from_floats(kv, ks), dt), v = random_host(ks, rng, dt);
      const Tensor dy = random_host(ks, rng, dt);
      const Tensor state0 = c.state ? random_state(rng, c.B, c.C) : Tensor();
      std::vector<int32_t> lastv(static_cast<size_t>(c.B));
      for (auto& l : lastv) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(c.T)));
      const Tensor last = c.last ? Tensor::from_ints(lastv, {c.B}) : Tensor();
      // CPU reference.
      Tensor r_state = c.state ? state0.clone() : Tensor();
      Tensor r_y = Tensor::empty(ks), r_dtd = Tensor::empty({c.C}), r_dtf = Tensor::empty({c.C}),
             r_dk = Tensor::empty(ks), r_dv = Tensor::empty(ks);
      cpu_backend().rwkv_wkv_forward(td, tf, k, v, last, r_state, r_y);
      // The backward reads y as the op saved it: rounded to the dtype.
      const Tensor r_y_rounded = round_to(r_y, dt);
      cpu_backend().rwkv_wkv_backward(td, tf, k, v, r_y_rounded, dy, state0, r_dtd, r_dtf, r_dk,
                                      r_dv);
      // GPU.
      const Tensor g_td = to_gpu(td, dt), g_tf = to_gpu(tf, dt), g_k = to_gpu(k, dt),
                   g_v = to_gpu(v, dt), g_dy = to_gpu(dy, dt);
      Tensor g_state = c.state ? to_gpu(state0) : Tensor();
      const Tensor g_state0 = c.state ? to_gpu(state0) : Tensor();
      const Tensor g_last = c.last ? to_gpu(last) : Tensor();
      Tensor g_y = poisoned(ks, dt), g_dtd = poisoned({c.C}, dt), g_dtf = poisoned({c.C}, dt),
             g_dk = poisoned(ks, dt), g_dv = poisoned(ks, dt);
      gpu_backend().rwkv_wkv_forward(g_td, g_tf, g_k, g_v, g_last, g_state, g_y);
      gpu_backend().rwkv_wkv_backward(g_td, g_tf, g_k, g_v, g_y, g_dy, g_state0, g_dtd, g_dtf,
                                      g_dk, g_dv);
      gpu_backend().synchronize();
      const std::string what = fmt::format("wkv B{} T{} C{} koff{} state{} last{} {}", c.B, c.T,
                                           c.C, c.key_offset, c.state, c.last, dtype_name(dt));
      EXPECT_TRUE(close_to(g_y, r_y, tol(dt), what + " y"));
      if (c.state) {
        EXPECT_TRUE(close_to(g_state, r_state, tol(DType::f32), what + " state", 4.0));
      }
      // Gradients sum over T (dk, dv) and over B and T (dtime_*).
      EXPECT_TRUE(close_to(g_dk, r_dk, tol(dt), what + " dk", 4.0));
      EXPECT_TRUE(close_to(g_dv, r_dv, tol(dt), what + " dv", 4.0));
      EXPECT_TRUE(close_to(g_dtd, r_dtd, tol(dt), what + " dtime_decay", 8.0));
      EXPECT_TRUE(close_to(g_dtf, r_dtf, tol(dt), what + " dtime_first", 8.0));
    }
  }
}

TEST(RwkvCuda, GatesMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType dt : kDtypes) {
    Rng rng(seed++);
    const Shape s{3, 7, 45};
    const Tensor r = random_host(s, rng, dt, 2.f), y = random_host(s, rng, dt),
                 dout = random_host(s, rng, dt);
    Tensor r_o = Tensor::empty(s), r_dr = Tensor::empty(s), r_dy = Tensor::empty(s),
           r_sq = Tensor::empty(s), r_dsq = Tensor::empty(s);
    cpu_backend().sigmoid_mul_forward(r, y, r_o);
    cpu_backend().sigmoid_mul_backward(dout, r, y, r_dr, r_dy);
    cpu_backend().relu_square_forward(r, r_sq);
    cpu_backend().relu_square_backward(dout, r, r_dsq);
    const Tensor gr = to_gpu(r, dt), gy = to_gpu(y, dt), gd = to_gpu(dout, dt);
    Tensor o = poisoned(s, dt), dr = poisoned(s, dt), dyy = poisoned(s, dt), sq = poisoned(s, dt),
           dsq = poisoned(s, dt);
    gpu_backend().sigmoid_mul_forward(gr, gy, o);
    gpu_backend().sigmoid_mul_backward(gd, gr, gy, dr, dyy);
    gpu_backend().relu_square_forward(gr, sq);
    gpu_backend().relu_square_backward(gd, gr, dsq);
    gpu_backend().synchronize();
    const std::string what = dtype_name(dt);
    EXPECT_TRUE(close_to(o, r_o, tol(dt), what + " sigmoid_mul"));
    EXPECT_TRUE(close_to(dr, r_dr, tol(dt), what + " sigmoid_mul dr"));
    EXPECT_TRUE(close_to(dyy, r_dy, tol(dt), what + " sigmoid_mul dy"));
    EXPECT_TRUE(close_to(sq, r_sq, tol(dt), what + " relu_square"));
    EXPECT_TRUE(close_to(dsq, r_dsq, tol(dt), what + " relu_square dx"));
  }
}

// ---- a whole RWKV model ------------------------------------------------------------

ModelCard rwkv_card() {
  return test_card("name: rwkv-cuda\nblock: rwkv\nn_layer: 2\nd_model: 64\nd_ff: 96\n"
                   "vocab_size: 64\nmax_seq_len: 128\nrwkv_attention_hidden_size: 48\n"
                   "init_std: 0.1\n",
                   "rwkv-cuda.yaml");
}

TEST(RwkvCuda, DecoderForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    const ModelCard card = rwkv_card();
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 17).value();
    Rng rng(1);
    const Tensor ids = random_ids({2, 97}, rng, 0, card.vocab_size);
    const Tensor targets = random_ids({2, 97}, rng, 0, card.vocab_size);
    expect_model_matches_cpu(*cpu_model, gpu(), dt, ids, targets, dt == DType::f32 ? 1e-4 : 3e-2,
                             dt == DType::f32 ? 1e-3 : 8e-2);
  }
}

// Prompts of 9 and 4 tokens in one right-padded prefill, then decode steps
// (T = 1: the state updated in place), on both backends.
TEST(RwkvCuda, CachedForwardMatchesCpu) {
  EL_REQUIRE_GPU();
  NoGrad no_grad;
  const ModelCard card = rwkv_card();
  auto cpu_model = DecoderLM::create(card, Device::cpu(), 23).value();
  auto gpu_model = copy_model(*cpu_model, gpu(), DType::f32);
  Rng rng(2);
  const Tensor prompt = random_ids({2, 9}, rng, 0, card.vocab_size);
  KvCache c_cache = KvCache::create(card, 2, 16, DType::f32, Device::cpu()).value();
  KvCache g_cache = KvCache::create(card, 2, 16, DType::f32, gpu()).value();
  const std::vector<int32_t> last = {8, 3};
  EXPECT_LT(relative_error(gpu_model->forward_cached(prompt.to(gpu()), g_cache, last).to(Device::cpu()),
                      cpu_model->forward_cached(prompt, c_cache, last)),
            1e-4)
      << "prefill";
  c_cache.set_positions({9, 4});
  g_cache.set_positions({9, 4});
  for (int step = 0; step < 4; ++step) {
    const Tensor next = random_ids({2, 1}, rng, 0, card.vocab_size);
    const Tensor want = cpu_model->forward_cached(next, c_cache);
    const Tensor got = gpu_model->forward_cached(next.to(gpu()), g_cache).to(Device::cpu());
    c_cache.advance(1);
    g_cache.advance(1);
    EXPECT_LT(relative_error(got, want), 1e-4) << "decode step " << step;
  }
  for (size_t l = 0; l < c_cache.rwkv_wkv.size(); ++l) {
    EXPECT_TRUE(close_to(g_cache.rwkv_wkv[l].to(Device::cpu()), c_cache.rwkv_wkv[l],
                         tol(DType::f32), "wkv state of layer " + std::to_string(l), 4.0));
  }
}

}  // namespace
}  // namespace el::test
