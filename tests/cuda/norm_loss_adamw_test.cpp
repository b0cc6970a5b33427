// Tests for the CUDA RMSNorm / LayerNorm (forward and backward), the fused
// cross-entropy (forward, backward, fused in place) and AdamW (plain and with
// f32 master weights) against the CPU backend, f32 and bf16 (and f16 where
// cheap), at row widths that are not multiples of the block or the vectors.
#include <gtest/gtest.h>

#include <tuple>

#include "cuda/cuda_backend.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

constexpr std::tuple<int64_t, int64_t> kRows[] = {{1, 1},    {3, 7},     {17, 100}, {64, 768},
                                                  {5, 4097}, {300, 129}, {2, 20000}};

TEST(CudaNorm, RmsNormForwardBackward) {
  EL_REQUIRE_GPU();
  uint64_t seed = 71;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (auto [n, c] : kRows) {
      Rng rng(seed++);
      const Tensor x = random_host({n, c}, rng, t), dy = random_host({n, c}, rng, t);
      const Tensor w = random_host({c}, rng, DType::f32, 0.5f);
      Tensor y_ref = Tensor::empty({n, c}), r_ref = Tensor::empty({n});
      Tensor dx_ref = Tensor::empty({n, c}), dw_ref = Tensor::empty({c});
      cpu_backend().rmsnorm_forward(x, w, 1e-5f, y_ref, r_ref);
      cpu_backend().rmsnorm_backward(dy, x, w, r_ref, Tensor(), dx_ref, dw_ref);
      const Tensor gx = to_gpu(x, t), gw = to_gpu(w);
      Tensor y = poisoned({n, c}, t), r = poisoned({n}, DType::f32);
      gpu_backend().rmsnorm_forward(gx, gw, 1e-5f, y, r);
      EXPECT_TRUE(close_to(y, y_ref, tol(t), "rmsnorm y")) << dtype_name(t) << " " << n << "x" << c;
      EXPECT_TRUE(close_to(r, r_ref, tol(DType::f32), "rmsnorm rstd", 2.0)) << n << "x" << c;
      Tensor dx = poisoned({n, c}, t), dw = poisoned({c}, DType::f32);
      gpu_backend().rmsnorm_backward(to_gpu(dy, t), gx, gw, to_gpu(r_ref), Tensor(), dx, dw);
      EXPECT_TRUE(close_to(dx, dx_ref, tol(t), "rmsnorm dx", 2.0))
          << dtype_name(t) << " " << n << "x" << c;
      EXPECT_TRUE(close_to(dw, dw_ref, tol(DType::f32), "rmsnorm dw", 4.0))
          << dtype_name(t) << " " << n << "x" << c;
    }
  }
}

// The fused residual add + RMSNorm forward against the CPU's add then norm.
TEST(CudaNorm, AddRmsNormForwardMatchesAddThenNorm) {
  EL_REQUIRE_GPU();
  uint64_t seed = 271;
  constexpr std::tuple<int64_t, int64_t> kShapes[] = {{1, 8}, {33, 768}, {17, 896}, {3, 1000}, {4, 12}};
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (auto [n, c] : kShapes) {
      Rng rng(seed++);
      const Tensor x = random_host({n, c}, rng, t), b = random_host({n, c}, rng, t);
      const Tensor w = random_host({c}, rng, t, 0.5f);
      // CPU reference: the sum rounded to the dtype (as the GPU stores it), then the norm.
      Tensor s_ref = Tensor::empty({n, c});
      cpu_backend().add(x, b, s_ref);
      s_ref = round_to(s_ref, t);
      Tensor y_ref = Tensor::empty({n, c}), r_ref = Tensor::empty({n});
      cpu_backend().rmsnorm_forward(s_ref, w, 1e-5f, y_ref, r_ref);
      Tensor s = poisoned({n, c}, t), y = poisoned({n, c}, t), r = poisoned({n}, DType::f32);
      gpu_backend().add_rmsnorm_forward(to_gpu(x, t), to_gpu(b, t), to_gpu(w, t), 1e-5f, s, y, r);
      const std::string what = std::string(dtype_name(t)) + " " + std::to_string(n) + "x" +
                               std::to_string(c);
      EXPECT_TRUE(close_to(s, s_ref, tol(t), "add_rmsnorm sum")) << what;
      EXPECT_TRUE(close_to(y, y_ref, tol(t), "add_rmsnorm y", 2.0)) << what;
      EXPECT_TRUE(close_to(r, r_ref, tol(DType::f32), "add_rmsnorm rstd", 2.0)) << what;
    }
  }
}

// The model's layout (weight in the activations' dtype: the warp-per-row
// path) and the gradient x already had added into dx, in place or not.
TEST(CudaNorm, RmsNormBackwardAddsPriorGradient) {
  EL_REQUIRE_GPU();
  uint64_t seed = 171;
  constexpr std::tuple<int64_t, int64_t> kShapes[] = {
      {1, 8}, {7, 64}, {33, 768}, {64, 896}, {5, 2048}, {9, 4096}, {3, 1000}, {2, 12}};
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (auto [n, c] : kShapes) {
      for (bool in_place : {false, true}) {
        Rng rng(seed++);
        const Tensor x = random_host({n, c}, rng, t), dy = random_host({n, c}, rng, t);
        const Tensor w = random_host({c}, rng, t, 0.5f), prior = random_host({n, c}, rng, t);
        Tensor y_ref = Tensor::empty({n, c}), r_ref = Tensor::empty({n});
        Tensor dx_ref = Tensor::empty({n, c}), dw_ref = Tensor::empty({c});
        cpu_backend().rmsnorm_forward(x, w, 1e-5f, y_ref, r_ref);
        cpu_backend().rmsnorm_backward(dy, x, w, r_ref, prior, dx_ref, dw_ref);
        const Tensor gx = to_gpu(x, t), gw = to_gpu(w, t);
        Tensor y = poisoned({n, c}, t), r = poisoned({n}, DType::f32);
        gpu_backend().rmsnorm_forward(gx, gw, 1e-5f, y, r);
        const std::string what = std::string(dtype_name(t)) + " " + std::to_string(n) + "x" +
                                 std::to_string(c) + (in_place ? " in place" : "");
        EXPECT_TRUE(close_to(y, y_ref, tol(t), "rmsnorm y")) << what;
        Tensor gprior = to_gpu(prior, t);
        Tensor dx = in_place ? gprior : poisoned({n, c}, t);
        Tensor dw = poisoned({c}, t);
        gpu_backend().rmsnorm_backward(to_gpu(dy, t), gx, gw, r, gprior, dx, dw);
        EXPECT_TRUE(close_to(dx, dx_ref, tol(t), "rmsnorm dx + prior", 2.0)) << what;
        EXPECT_TRUE(close_to(dw, dw_ref, tol(t), "rmsnorm dw", 4.0)) << what;
      }
    }
  }
}

TEST(CudaNorm, LayerNormForwardBackward) {
  EL_REQUIRE_GPU();
  uint64_t seed = 81;
  for (DType t : {DType::f32, DType::bf16}) {
    for (auto [n, c] : kRows) {
      Rng rng(seed++);
      Tensor x = random_host({n, c}, rng, t);
      {  // a row mean several times the spread, where a one-pass variance would cancel
        std::vector<float> v = x.to_floats();
        for (float& e : v) e += 8.f;
        x = round_to(Tensor::from_floats(v, {n, c}), t);
      }
      const Tensor dy = random_host({n, c}, rng, t);
      const Tensor w = random_host({c}, rng, DType::f32), b = random_host({c}, rng, DType::f32);
      Tensor y_ref = Tensor::empty({n, c}), m_ref = Tensor::empty({n}), r_ref = Tensor::empty({n});
      Tensor dx_ref = Tensor::empty({n, c}), dw_ref = Tensor::empty({c}),
             db_ref = Tensor::empty({c});
      cpu_backend().layernorm_forward(x, w, b, 1e-5f, y_ref, m_ref, r_ref);
      cpu_backend().layernorm_backward(dy, x, w, m_ref, r_ref, dx_ref, dw_ref, db_ref);
      const Tensor gx = to_gpu(x, t), gw = to_gpu(w), gb = to_gpu(b);
      Tensor y = poisoned({n, c}, t), m = poisoned({n}, DType::f32), r = poisoned({n}, DType::f32);
      gpu_backend().layernorm_forward(gx, gw, gb, 1e-5f, y, m, r);
      const std::string what =
          std::string(dtype_name(t)) + " " + std::to_string(n) + "x" + std::to_string(c);
      // The f32 row sums of an offset row carry ~sqrt(C) ulps of the sum on
      // either side, so y's budget grows with C.
      EXPECT_TRUE(close_to(y, y_ref, tol(t), "layernorm y", 4.0)) << what;
      EXPECT_TRUE(close_to(m, m_ref, tol(DType::f32), "layernorm mean", 2.0)) << what;
      EXPECT_TRUE(close_to(r, r_ref, tol(DType::f32), "layernorm rstd", 4.0)) << what;
      Tensor dx = poisoned({n, c}, t), dw = poisoned({c}, DType::f32),
             db = poisoned({c}, DType::f32);
      gpu_backend().layernorm_backward(to_gpu(dy, t), gx, gw, to_gpu(m_ref), to_gpu(r_ref), dx, dw,
                                       db);
      EXPECT_TRUE(close_to(dx, dx_ref, tol(t), "layernorm dx", 4.0)) << what;
      EXPECT_TRUE(close_to(dw, dw_ref, tol(DType::f32), "layernorm dw", 4.0)) << what;
      EXPECT_TRUE(close_to(db, db_ref, tol(DType::f32), "layernorm db", 4.0)) << what;
    }
  }
}

// Includes the fused classifier's shared-memory path (V a multiple of the
// 16-byte vector, rows up to 96 KiB: bf16 1000 ... 32776, f32 up to 24576)
// and sizes off it (f32 32000, V not a multiple of 8).
constexpr std::tuple<int64_t, int64_t> kLogits[] = {
    {1, 1},     {4, 2},      {7, 1000},  {3, 50257}, {16, 32000},
    {65, 129},  {5, 4096},   {3, 32768}, {2, 32776}, {4, 4100}};

// targets in [0, v) with every third row ignored (-1).
Tensor targets_for(int64_t n, int64_t v, Rng& rng) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    t[i] = i % 3 == 2 ? -1 : static_cast<int32_t>(rng.below(static_cast<uint64_t>(v)));
  }
  return Tensor::from_ints(t, {n});
}

TEST(CudaLoss, CrossEntropyForwardBackwardFused) {
  EL_REQUIRE_GPU();
  uint64_t seed = 91;
  for (DType t : {DType::f32, DType::bf16}) {
    for (auto [n, v] : kLogits) {
      Rng rng(seed++);
      const Tensor logits = random_host({n, v}, rng, t, 3.f);
      const Tensor targets = targets_for(n, v, rng);
      const float dloss = 1.f / static_cast<float>(n);
      Tensor loss_ref = Tensor::empty({n}), lse_ref = Tensor::empty({n});
      Tensor d_ref = Tensor::empty({n, v});
      cpu_backend().cross_entropy_forward(logits, targets, loss_ref, lse_ref);
      cpu_backend().cross_entropy_backward(logits, targets, lse_ref, dloss, d_ref);
      const Tensor gl = to_gpu(logits, t), gt = to_gpu(targets);
      const std::string what =
          std::string(dtype_name(t)) + " " + std::to_string(n) + "x" + std::to_string(v);
      Tensor loss = poisoned({n}, DType::f32), lse = poisoned({n}, DType::f32);
      gpu_backend().cross_entropy_forward(gl, gt, loss, lse);
      EXPECT_TRUE(close_to(loss, loss_ref, tol(DType::f32), "ce loss", 4.0)) << what;
      EXPECT_TRUE(close_to(lse, lse_ref, tol(DType::f32), "ce lse", 4.0)) << what;
      Tensor d = poisoned({n, v}, t);
      gpu_backend().cross_entropy_backward(gl, gt, lse, dloss, d);
      EXPECT_TRUE(close_to(d, d_ref, tol(t), "ce dlogits", 2.0)) << what;
      // Fused, writing the gradient over the logits.
      Tensor inplace = to_gpu(logits, t);
      Tensor loss2 = poisoned({n}, DType::f32), lse2 = poisoned({n}, DType::f32);
      el::cuda::cross_entropy_fused(inplace, gt, dloss, loss2, lse2, inplace);
      EXPECT_TRUE(close_to(loss2, loss_ref, tol(DType::f32), "fused loss", 4.0)) << what;
      EXPECT_TRUE(close_to(lse2, lse_ref, tol(DType::f32), "fused lse", 4.0)) << what;
      EXPECT_TRUE(close_to(inplace, d_ref, tol(t), "fused dlogits", 2.0)) << what;
      // Fused into a separate buffer (what ops::cross_entropy does).
      Tensor d3 = poisoned({n, v}, t);
      Tensor loss3 = poisoned({n}, DType::f32), lse3 = poisoned({n}, DType::f32);
      gpu_backend().cross_entropy_fused(gl, gt, dloss, loss3, lse3, d3);
      EXPECT_TRUE(close_to(loss3, loss_ref, tol(DType::f32), "fused loss (copy)", 4.0)) << what;
      EXPECT_TRUE(close_to(d3, d_ref, tol(t), "fused dlogits (copy)", 2.0)) << what;
    }
  }
}

TEST(CudaLoss, TargetOutOfVocabIsReported) {
  EL_REQUIRE_GPU();
  const Tensor logits = Tensor::zeros({3, 10}, DType::f32, gpu());
  const Tensor targets = to_gpu(Tensor::from_ints({1, 12, -1}, {3}));
  Tensor loss = Tensor::empty({3}, DType::f32, gpu()), lse = Tensor::empty({3}, DType::f32, gpu());
  gpu_backend().cross_entropy_forward(logits, targets, loss, lse);
  try {
    gpu_backend().synchronize();
    FAIL() << "expected el::Exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "cuda cross_entropy: target 12 at row 1 is not below the vocab size 10"),
              std::string::npos)
        << e.what();
  }
  gpu_backend().synchronize();
}

struct AdamCase {
  DType param, grad;
  bool master;
};

TEST(CudaAdamW, MatchesCpuOverSeveralSteps) {
  EL_REQUIRE_GPU();
  const AdamCase cases[] = {{DType::f32, DType::f32, false},  {DType::bf16, DType::bf16, false},
                            {DType::f32, DType::bf16, false}, {DType::bf16, DType::bf16, true},
                            {DType::f16, DType::f32, true},   {DType::f32, DType::f32, true}};
  uint64_t seed = 101;
  for (const AdamCase& ac : cases) {
    for (int64_t n : {int64_t{1}, int64_t{1003}, int64_t{70001}}) {
      Rng rng(seed++);
      const Tensor p0 = random_host({n}, rng, ac.param);
      Tensor cp = p0.clone(), cm = Tensor::zeros({n}), cv = Tensor::zeros({n});
      Tensor cmaster = p0.clone();
      Tensor gp = to_gpu(p0, ac.param), gm = Tensor::zeros({n}, DType::f32, gpu()),
             gv = Tensor::zeros({n}, DType::f32, gpu()), gmaster = to_gpu(p0);
      Tensor cp_low = Tensor::empty({n}, ac.param);  // the CPU param in its storage dtype
      cp_low.copy_from(p0);
      for (int64_t step = 1; step <= 3; ++step) {
        const Tensor g = random_host({n}, rng, ac.grad);
        AdamWStep st;
        st.lr = 1e-2f;
        st.weight_decay = 0.1f;
        st.grad_scale = 0.5f;
        st.step = step;
        Tensor g_low = Tensor::empty({n}, ac.grad);
        g_low.copy_from(g);
        if (ac.master) {
          cpu_backend().adamw_update_master(cp_low, g_low, cmaster, cm, cv, st);
          gpu_backend().adamw_update_master(gp, to_gpu(g, ac.grad), gmaster, gm, gv, st);
        } else {
          cpu_backend().adamw_update(cp_low, g_low, cm, cv, st);
          gpu_backend().adamw_update(gp, to_gpu(g, ac.grad), gm, gv, st);
        }
      }
      const std::string what = std::string(dtype_name(ac.param)) + " param, " +
                               dtype_name(ac.grad) + " grad" + (ac.master ? ", master" : "") +
                               ", n=" + std::to_string(n);
      Tensor cp32 = Tensor::empty({n});
      cp32.copy_from(cp_low);
      EXPECT_TRUE(close_to(gp, cp32, tol(ac.param), "adamw param")) << what;
      EXPECT_TRUE(close_to(gm, cm, tol(DType::f32), "adamw m")) << what;
      EXPECT_TRUE(close_to(gv, cv, tol(DType::f32), "adamw v")) << what;
      if (ac.master) {
        EXPECT_TRUE(close_to(gmaster, cmaster, tol(DType::f32), "master")) << what;
      }
    }
  }
}

// Two identical copies of each parameter: `one` updated a tensor at a time,
// `many` through the multi-tensor call, compared after a few steps.
struct AdamParam {
  Tensor param, grad, master, m, v;
};
struct AdamPair {
  std::vector<AdamParam> one, many;
  void add(const Tensor& p0, DType param_dtype, const Tensor& g, DType grad_dtype, bool master) {
    const int64_t n = p0.numel();
    for (std::vector<AdamParam>* set : {&one, &many}) {
      AdamParam p;
      p.param = to_gpu(p0, param_dtype);
      p.grad = to_gpu(g, grad_dtype);
      p.master = master ? to_gpu(p0) : Tensor();
      p.m = Tensor::zeros({n}, DType::f32, gpu());
      p.v = Tensor::zeros({n}, DType::f32, gpu());
      set->push_back(p);
    }
  }
  // many_update: the multi-tensor entry point under test.
  template <class ManyUpdate>
  void step(const AdamWStep& st, ManyUpdate many_update) {
    std::vector<AdamWTensors> slots;
    for (size_t i = 0; i < one.size(); ++i) {
      AdamParam& a = one[i];
      if (a.master.defined()) {
        gpu_backend().adamw_update_master(a.param, a.grad, a.master, a.m, a.v, st);
      } else {
        gpu_backend().adamw_update(a.param, a.grad, a.m, a.v, st);
      }
      AdamParam& b = many[i];
      slots.push_back({&b.param, &b.grad, b.master.defined() ? &b.master : nullptr, &b.m, &b.v});
    }
    many_update(slots, st);
  }
  void expect_equal(size_t i, const Tolerance& param_tol, const std::string& what) const {
    EXPECT_TRUE(close_to(many[i].param, one[i].param, param_tol, what));
    EXPECT_TRUE(close_to(many[i].m, one[i].m, {1e-6, 1e-6}, what + " m"));
    EXPECT_TRUE(close_to(many[i].v, one[i].v, {1e-6, 1e-6}, what + " v"));
    if (one[i].master.defined()) {
      EXPECT_TRUE(close_to(many[i].master, one[i].master, {1e-6, 1e-6}, what + " master"));
    }
  }
};

TEST(CudaAdamW, MultiTensorMatchesPerTensor) {
  EL_REQUIRE_GPU();
  // 30 parameters (more than one launch of 24), mixed dtypes, some with f32
  // masters, sizes from 1 to several chunks.
  AdamPair pair;
  Rng rng(123);
  for (int i = 0; i < 30; ++i) {
    const int64_t n = i % 5 == 0 ? 40000 + i : 1 + 37 * i;
    const DType pt = i % 3 == 0 ? DType::bf16 : DType::f32;
    const Tensor p0 = random_host({n}, rng, pt), g = random_host({n}, rng, DType::f32);
    pair.add(p0, pt, g, i % 2 ? DType::bf16 : DType::f32, i % 4 == 1);
  }
  AdamWStep st;
  st.lr = 1e-2f;
  st.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 2; ++step) {
    st.step = step;
    pair.step(st, [](const std::vector<AdamWTensors>& s, const AdamWStep& a) {
      el::cuda::adamw_update_many(s, a);
    });
  }
  for (size_t i = 0; i < pair.one.size(); ++i) {
    // One f32 ulp apart (FMA contraction may differ) can round a bf16 param one bf16 ulp apart.
    const Tolerance pt = i % 3 == 0 ? tol(DType::bf16) : Tolerance{1e-6, 1e-6};
    pair.expect_equal(i, pt, "param " + std::to_string(i));
  }
}

// Batches of one dtype layout take the vectorised kernels (bf16 / f16 param
// and grad with f32 master; f32 training); sizes not multiples of 4.
TEST(CudaAdamW, MultiTensorUniformBatchesMatchPerTensor) {
  EL_REQUIRE_GPU();
  struct Layout {
    DType param;
    bool master;
  };
  for (const Layout lay : {Layout{DType::bf16, true}, Layout{DType::f16, true},
                           Layout{DType::f32, false}}) {
    AdamPair pair;
    Rng rng(321);
    for (int i = 0; i < 27; ++i) {
      const int64_t n = i % 5 == 0 ? 40000 + i : 1 + 37 * i;
      const Tensor p0 = random_host({n}, rng, lay.param), g = random_host({n}, rng, lay.param);
      pair.add(p0, lay.param, g, lay.param, lay.master);
    }
    AdamWStep st;
    st.lr = 1e-2f;
    st.weight_decay = 0.1f;
    for (int64_t step = 1; step <= 2; ++step) {
      st.step = step;
      st.grad_scale = 0.5f;
      pair.step(st, [](const std::vector<AdamWTensors>& s, const AdamWStep& a) {
        gpu_backend().adamw_update_many(s, a);
      });
    }
    for (size_t i = 0; i < pair.one.size(); ++i) {
      const Tolerance pt = lay.param == DType::f32 ? Tolerance{1e-6, 1e-6} : tol(lay.param);
      pair.expect_equal(i, pt, std::string(dtype_name(lay.param)) + " param " + std::to_string(i));
    }
  }
}

}  // namespace
}  // namespace el::test
