// Tests for the CUDA pointwise kernels, reductions, embedding and RoPE against
// the CPU backend, in f32 / bf16 / f16 at sizes that are not multiples of the
// 16-byte vectors (and on unaligned views, which take the scalar path).
#include <gtest/gtest.h>

#include <cmath>

#include "cuda/cuda_backend.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

constexpr DType kFloat[] = {DType::f32, DType::bf16, DType::f16};
constexpr int64_t kSizes[] = {1, 7, 1000, 4099, 65537};

TEST(CudaElementwise, AddAxpyScale) {
  EL_REQUIRE_GPU();
  uint64_t seed = 11;
  for (DType t : kFloat) {
    for (int64_t n : kSizes) {
      Rng rng(seed++);
      const Tensor a = random_host({n}, rng, t), b = random_host({n}, rng, t);
      Tensor ref = Tensor::empty({n});
      cpu_backend().add(a, b, ref);
      Tensor out = poisoned({n}, t);
      gpu_backend().add(to_gpu(a, t), to_gpu(b, t), out);
      EXPECT_TRUE(close_to(out, ref, tol(t), "add")) << dtype_name(t) << " n=" << n;

      Tensor y_ref = b.clone();
      cpu_backend().axpy(-0.75f, a, y_ref);
      Tensor y = to_gpu(b, t);
      gpu_backend().axpy(-0.75f, to_gpu(a, t), y);
      EXPECT_TRUE(close_to(y, y_ref, tol(t), "axpy")) << dtype_name(t) << " n=" << n;

      Tensor s_ref = a.clone();
      cpu_backend().scale(s_ref, 3.5f);
      Tensor s = to_gpu(a, t);
      gpu_backend().scale(s, 3.5f);
      EXPECT_TRUE(close_to(s, s_ref, tol(t), "scale")) << dtype_name(t) << " n=" << n;
    }
  }
}

TEST(CudaElementwise, MixedDtypesAndUnalignedViews) {
  EL_REQUIRE_GPU();
  Rng rng(21);
  const Tensor a = random_host({1001}, rng, DType::bf16), b = random_host({1001}, rng, DType::f32);
  Tensor ref = Tensor::empty({1001});
  cpu_backend().add(a, b, ref);
  Tensor out = poisoned({1001}, DType::f32);
  gpu_backend().add(to_gpu(a, DType::bf16), to_gpu(b, DType::f32), out);  // mixed kernel
  EXPECT_TRUE(close_to(out, ref, tol(DType::f32), "mixed add"));
  // Views starting one element in: not 16-byte aligned.
  Tensor ga = to_gpu(a, DType::f32), gb = to_gpu(b, DType::f32);
  Tensor o2 = poisoned({1000}, DType::f32);
  gpu_backend().add(ga.slice0(1, 1001), gb.slice0(1, 1001), o2);
  Tensor r2 = Tensor::empty({1000});
  cpu_backend().add(a.slice0(1, 1001).clone(), b.slice0(1, 1001).clone(), r2);
  EXPECT_TRUE(close_to(o2, r2, tol(DType::f32), "unaligned add"));
}

TEST(CudaElementwise, SwigluAndGelu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 31;
  for (DType t : kFloat) {
    for (int64_t n : {int64_t{5}, int64_t{1003}, int64_t{40001}}) {
      Rng rng(seed++);
      const Tensor g = random_host({n}, rng, t, 2.f), u = random_host({n}, rng, t),
                   dy = random_host({n}, rng, t);
      Tensor out_ref = Tensor::empty({n}), dg_ref = Tensor::empty({n}), du_ref = Tensor::empty({n});
      cpu_backend().swiglu_forward(g, u, out_ref);
      cpu_backend().swiglu_backward(dy, g, u, dg_ref, du_ref);
      Tensor out = poisoned({n}, t), dg = poisoned({n}, t), du = poisoned({n}, t);
      gpu_backend().swiglu_forward(to_gpu(g, t), to_gpu(u, t), out);
      gpu_backend().swiglu_backward(to_gpu(dy, t), to_gpu(g, t), to_gpu(u, t), dg, du);
      EXPECT_TRUE(close_to(out, out_ref, tol(t), "swiglu_forward")) << dtype_name(t) << " " << n;
      EXPECT_TRUE(close_to(dg, dg_ref, tol(t), "swiglu dgate")) << dtype_name(t) << " " << n;
      EXPECT_TRUE(close_to(du, du_ref, tol(t), "swiglu dup")) << dtype_name(t) << " " << n;

      Tensor ge_ref = Tensor::empty({n}), gdx_ref = Tensor::empty({n});
      cpu_backend().gelu_forward(g, ge_ref);
      cpu_backend().gelu_backward(dy, g, gdx_ref);
      Tensor ge = poisoned({n}, t), gdx = poisoned({n}, t);
      gpu_backend().gelu_forward(to_gpu(g, t), ge);
      gpu_backend().gelu_backward(to_gpu(dy, t), to_gpu(g, t), gdx);
      EXPECT_TRUE(close_to(ge, ge_ref, tol(t), "gelu_forward")) << dtype_name(t) << " " << n;
      EXPECT_TRUE(close_to(gdx, gdx_ref, tol(t), "gelu_backward")) << dtype_name(t) << " " << n;
    }
  }
}

TEST(CudaReduce, SumSquaresAndAllFinite) {
  EL_REQUIRE_GPU();
  uint64_t seed = 41;
  for (DType t : kFloat) {
    for (int64_t n : {int64_t{1}, int64_t{999}, int64_t{1} << 20, (int64_t{1} << 22) + 5}) {
      Rng rng(seed++);
      const Tensor x = random_host({n}, rng, t);
      const double ref = cpu_backend().sum_squares(x);
      const Tensor gx = to_gpu(x, t);
      EXPECT_NEAR(gpu_backend().sum_squares(gx), ref, 1e-5 * ref) << dtype_name(t) << " " << n;
      EXPECT_TRUE(gpu_backend().all_finite(gx)) << dtype_name(t);
    }
    Rng rng(seed++);
    Tensor x = random_host({5001}, rng, DType::f32);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      Tensor y = x.clone();
      y.data<float>()[4321] = bad;
      EXPECT_FALSE(gpu_backend().all_finite(to_gpu(y, t))) << dtype_name(t) << " " << bad;
    }
  }
  // Several tensors at once (global gradient norm).
  Rng rng(49);
  const Tensor a = random_host({3001}, rng, DType::f32), b = random_host({17}, rng, DType::f32);
  const double ref = cpu_backend().sum_squares(a) + cpu_backend().sum_squares(b);
  EXPECT_NEAR(el::cuda::sum_squares_many({to_gpu(a), to_gpu(b, DType::bf16)}),
              cpu_backend().sum_squares(a) + cpu_backend().sum_squares(round_to(b, DType::bf16)),
              1e-5 * ref);
  EXPECT_EQ(gpu_backend().sum_squares(Tensor::empty({0}, DType::f32, gpu())), 0.0);
  EXPECT_TRUE(gpu_backend().all_finite(Tensor::empty({0}, DType::f32, gpu())));
  EXPECT_TRUE(gpu_backend().all_finite(to_gpu(Tensor::from_ints({1, -2, 3}, {3}))));
}

TEST(CudaEmbedding, ForwardAndDeterministicBackward) {
  EL_REQUIRE_GPU();
  uint64_t seed = 51;
  for (DType t : kFloat) {
    for (auto [n, v, c] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                           {13, 37, 65},
                           {257, 5, 300},
                           {2048, 1000, 129}}) {
      Rng rng(seed++);
      const Tensor ids = random_ids({n}, rng, 0, static_cast<int32_t>(v));  // repeats likely
      const Tensor table = random_host({v, c}, rng, t);
      const Tensor dout = random_host({n, c}, rng, t);
      Tensor out_ref = Tensor::empty({n, c}), dt_ref = Tensor::empty({v, c});
      cpu_backend().embedding_forward(ids, table, out_ref);
      cpu_backend().embedding_backward(ids, dout, dt_ref);
      const Tensor gids = to_gpu(ids);
      Tensor out = poisoned({n, c}, t);
      gpu_backend().embedding_forward(gids, to_gpu(table, t), out);
      EXPECT_TRUE(close_to(out, out_ref, tol(t), "embedding_forward")) << n << " " << v << " " << c;
      Tensor dt = poisoned({v, c}, DType::f32);
      gpu_backend().embedding_backward(gids, to_gpu(dout, t), dt);
      EXPECT_TRUE(close_to(dt, dt_ref, tol(DType::f32), "embedding_backward", 2.0))
          << dtype_name(t) << " " << n << " " << v << " " << c;
      Tensor dt2 = poisoned({v, c}, DType::f32);
      gpu_backend().embedding_backward(gids, to_gpu(dout, t), dt2);
      EXPECT_EQ(dt.to_floats(), dt2.to_floats()) << "embedding_backward is not deterministic";
    }
  }
}

TEST(CudaEmbedding, BadIdIsReportedAtSynchronize) {
  EL_REQUIRE_GPU();
  const Tensor ids = to_gpu(Tensor::from_ints({1, 2, 3, 40, 5}, {5}));
  Tensor table = Tensor::zeros({37, 8}, DType::f32, gpu());
  Tensor out = Tensor::empty({5, 8}, DType::f32, gpu());
  gpu_backend().embedding_forward(ids, table, out);
  try {
    gpu_backend().synchronize();
    FAIL() << "expected el::Exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "cuda embedding_forward: id 40 at position 3 is outside [0, 37)"),
              std::string::npos)
        << e.what();
  }
  gpu_backend().synchronize();  // the record was cleared
  Tensor dtable = Tensor::empty({37, 8}, DType::f32, gpu());
  gpu_backend().embedding_backward(ids, out, dtable);
  EXPECT_THROW(gpu_backend().synchronize(), Exception);
}

TEST(CudaRope, MatchesCpuForwardAndInverse) {
  EL_REQUIRE_GPU();
  uint64_t seed = 61;
  for (DType t : kFloat) {
    for (auto [b, tt, h, d] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 2},
                               {2, 5, 3, 8},
                               {1, 17, 4, 64},
                               {2, 33, 2, 128}}) {
      Rng rng(seed++);
      const Tensor x = random_host({b, tt, h, d}, rng, t);
      std::vector<float> f(static_cast<size_t>(d / 2));
      for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.f, -2.f * i / float(d));
      const Tensor freq = Tensor::from_floats(f, {d / 2});
      for (bool inverse : {false, true}) {
        const int64_t offset = inverse ? 1000 : 3;
        Tensor ref = Tensor::empty({b, tt, h, d});
        cpu_backend().rope(x, freq, offset, inverse, ref);
        Tensor y = poisoned({b, tt, h, d}, t);
        gpu_backend().rope(to_gpu(x, t), to_gpu(freq), offset, inverse, y);
        EXPECT_TRUE(close_to(y, ref, tol(t), "rope", 2.0))
            << dtype_name(t) << " D=" << d << " inverse=" << inverse;
      }
    }
  }
}

// The packed q/k/v split with its rotation, and its backward (merge), at
// shapes whose parts are not 16-byte aligned (D = 6: every q/k/v block starts
// at a multiple of 12 bytes in bf16) and with no rotation (plain copies).
TEST(CudaPacked, SplitQkvRopeAndMergeMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 71;
  struct S {
    int64_t b, t, h, hkv, d;
  };
  for (DType t : kFloat) {
    for (const S& g : {S{1, 1, 1, 1, 2}, S{2, 5, 3, 1, 6}, S{1, 17, 4, 2, 64}, S{2, 33, 12, 4, 64},
                       S{1, 9, 2, 2, 128}}) {
      for (bool rotate : {true, false}) {
        Rng rng(seed++);
        const int64_t heads = g.h + 2 * g.hkv;
        const Tensor packed = random_host({g.b, g.t, heads, g.d}, rng, t);
        const Tensor dq = random_host({g.b, g.t, g.h, g.d}, rng, t);
        const Tensor dk = random_host({g.b, g.t, g.hkv, g.d}, rng, t);
        const Tensor dv = random_host({g.b, g.t, g.hkv, g.d}, rng, t);
        std::vector<float> f(static_cast<size_t>(g.d / 2));
        for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.f, -2.f * i / float(g.d));
        const Tensor freq = rotate ? Tensor::from_floats(f, {g.d / 2}) : Tensor();
        const Tensor gfreq = rotate ? to_gpu(freq) : Tensor();
        Tensor q_ref = Tensor::empty(dq.shape()), k_ref = Tensor::empty(dk.shape()),
               v_ref = Tensor::empty(dv.shape()), dp_ref = Tensor::empty(packed.shape());
        cpu_backend().split_qkv_rope(packed, freq, 7, q_ref, k_ref, v_ref);
        cpu_backend().merge_qkv_rope_grad(dq, dk, dv, freq, 7, dp_ref);
        Tensor q = poisoned(dq.shape(), t), k = poisoned(dk.shape(), t), v = poisoned(dv.shape(), t);
        Tensor dp = poisoned(packed.shape(), t);
        gpu_backend().split_qkv_rope(to_gpu(packed, t), gfreq, 7, q, k, v);
        gpu_backend().merge_qkv_rope_grad(to_gpu(dq, t), to_gpu(dk, t), to_gpu(dv, t), gfreq, 7, dp);
        const std::string what = std::string(dtype_name(t)) + " H=" + std::to_string(g.h) +
                                 " Hkv=" + std::to_string(g.hkv) + " D=" + std::to_string(g.d) +
                                 (rotate ? " rope" : " copy");
        EXPECT_TRUE(close_to(q, q_ref, tol(t), "split q", 2.0)) << what;
        EXPECT_TRUE(close_to(k, k_ref, tol(t), "split k", 2.0)) << what;
        EXPECT_TRUE(close_to(v, v_ref, tol(t), "split v")) << what;
        EXPECT_TRUE(close_to(dp, dp_ref, tol(t), "merge dpacked", 2.0)) << what;
      }
    }
  }
}

// SwiGLU over [gate | up] rows: F a multiple of the vector width (16-byte
// path) and not (scalar path).
TEST(CudaPacked, SwigluPackedMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 81;
  for (DType t : kFloat) {
    for (auto [rows, f] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {17, 64}, {33, 2048},
                           {5, 1003}}) {
      Rng rng(seed++);
      const Tensor gu = random_host({rows, 2 * f}, rng, t, 2.f), dy = random_host({rows, f}, rng, t);
      Tensor out_ref = Tensor::empty({rows, f}), dgu_ref = Tensor::empty({rows, 2 * f});
      cpu_backend().swiglu_packed_forward(gu, out_ref);
      cpu_backend().swiglu_packed_backward(dy, gu, dgu_ref);
      Tensor out = poisoned({rows, f}, t), dgu = poisoned({rows, 2 * f}, t);
      gpu_backend().swiglu_packed_forward(to_gpu(gu, t), out);
      gpu_backend().swiglu_packed_backward(to_gpu(dy, t), to_gpu(gu, t), dgu);
      EXPECT_TRUE(close_to(out, out_ref, tol(t), "swiglu_packed_forward")) << dtype_name(t) << " F=" << f;
      EXPECT_TRUE(close_to(dgu, dgu_ref, tol(t), "swiglu_packed_backward")) << dtype_name(t) << " F=" << f;
    }
  }
}

// LoRA/DoRA arithmetic: mul, the row-broadcast product and its v-gradient
// (column sums over many rows: the per-block partials), dropout's mask equal
// to the CPU's element for element.
TEST(CudaAdapter, MulMulLastdimAndDropoutMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 91;
  for (DType t : kFloat) {
    for (auto [rows, c] : {std::pair<int64_t, int64_t>{1, 1}, {3, 5}, {17, 64}, {5000, 67},
                           {2048, 2048}}) {
      Rng rng(seed++);
      const Tensor x = random_host({rows, c}, rng, t), y = random_host({rows, c}, rng, t);
      const Tensor v = random_host({c}, rng, t), b = random_host({c}, rng, t);
      Tensor m_ref = Tensor::empty({rows, c}), l_ref = Tensor::empty({rows, c});
      Tensor gv_ref = Tensor::empty({c}), d_ref = Tensor::empty({rows, c});
      cpu_backend().mul(x, y, m_ref);
      cpu_backend().mul_lastdim(x, v, b, l_ref);
      cpu_backend().mul_lastdim_grad_v(y, x, gv_ref);
      cpu_backend().dropout(x, 0.3f, 77, d_ref);
      Tensor m = poisoned({rows, c}, t), l = poisoned({rows, c}, t), gv = poisoned({c}, t),
             d = poisoned({rows, c}, t);
      gpu_backend().mul(to_gpu(x, t), to_gpu(y, t), m);
      gpu_backend().mul_lastdim(to_gpu(x, t), to_gpu(v, t), to_gpu(b, t), l);
      gpu_backend().mul_lastdim_grad_v(to_gpu(y, t), to_gpu(x, t), gv);
      gpu_backend().dropout(to_gpu(x, t), 0.3f, 77, d);
      Tensor n_ref = Tensor::empty({rows}), n = poisoned({rows}, DType::f32);
      cpu_backend().inv_row_norms(x, n_ref);
      gpu_backend().inv_row_norms(to_gpu(x, t), n);
      const std::string what = std::string(dtype_name(t)) + " " + std::to_string(rows) + "x" +
                               std::to_string(c);
      EXPECT_TRUE(close_to(m, m_ref, tol(t), "mul")) << what;
      EXPECT_TRUE(close_to(l, l_ref, tol(t), "mul_lastdim")) << what;
      // A sum over up to 5000 rows: the budget grows with the row count.
      EXPECT_TRUE(close_to(gv, gv_ref, tol(t), "mul_lastdim_grad_v", 8.0)) << what;
      EXPECT_TRUE(close_to(d, d_ref, tol(t), "dropout")) << what;
      EXPECT_TRUE(close_to(n, n_ref, tol(DType::f32), "inv_row_norms", 4.0)) << what;
    }
  }
}

}  // namespace
}  // namespace el::test
