// Edge cases of the bandwidth-tuned CUDA kernels, against the CPU backend:
//  * RoPE: odd D/2 (scalar path), D = 2, many heads (several passes per
//    block), a head dim whose cos/sin table does not fit in shared memory,
//    unaligned views, mixed x/y dtypes and in-place use (x == y);
//  * embedding backward: heavily repeated ids (runs over many tiles, runs that
//    end exactly on a tile edge, one id everywhere), odd widths, bf16 tables,
//    bit-identical results run to run, invalid ids skipped and reported;
//  * sum_squares_many: ~100 tensors of odd lengths and mixed dtypes, empty
//    and unaligned ones, with the same bits every call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

constexpr DType kFloat[] = {DType::f32, DType::bf16, DType::f16};

Tensor rope_freq(int64_t d) {
  std::vector<float> f(static_cast<size_t>(d / 2));
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.f, -2.f * i / float(d));
  return Tensor::from_floats(f, {d / 2});
}

// A contiguous GPU tensor of `shape` whose data starts one element into its
// allocation (not 16-byte aligned), holding `host`.
Tensor unaligned_gpu(const Tensor& host, DType dtype) {
  const int64_t n = host.numel();
  Tensor big = Tensor::empty({n + 1}, dtype, gpu());
  Tensor view = big.slice0(1, n + 1).view(host.shape());
  view.copy_from(host);
  return view;
}

TEST(CudaRopeFast, ShapesViewsAndDtypes) {
  EL_REQUIRE_GPU();
  uint64_t seed = 601;
  // {B, T, H, D}: odd half (3, 5), D = 2, many heads x wide heads (per-block
  // passes), 124M-like q and k shapes (small B).
  for (auto [b, tt, h, d] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 3, 2, 6},
                             {2, 7, 3, 10},
                             {3, 9, 1, 2},
                             {2, 5, 40, 128},
                             {2, 300, 12, 64},
                             {2, 300, 4, 64},
                             {1, 19, 3, 96}}) {
    const Tensor freq = rope_freq(d);
    for (DType t : kFloat) {
      Rng rng(seed++);
      const Tensor x = random_host({b, tt, h, d}, rng, t);
      for (bool inverse : {false, true}) {
        const int64_t offset = inverse ? 517 : 0;
        Tensor ref = Tensor::empty({b, tt, h, d});
        cpu_backend().rope(x, freq, offset, inverse, ref);
        const std::string what = std::string("rope ") + dtype_name(t) + " D=" +
                                 std::to_string(d) + " H=" + std::to_string(h) +
                                 (inverse ? " inverse" : "");
        Tensor y = poisoned({b, tt, h, d}, t);
        gpu_backend().rope(to_gpu(x, t), to_gpu(freq), offset, inverse, y);
        EXPECT_TRUE(close_to(y, ref, tol(t), what, 2.0));
        // In place: x == y.
        Tensor xy = to_gpu(x, t);
        gpu_backend().rope(xy, to_gpu(freq), offset, inverse, xy);
        EXPECT_TRUE(close_to(xy, ref, tol(t), what + " in-place", 2.0));
        // Unaligned views take the scalar path; in place there too.
        Tensor ux = unaligned_gpu(x, t);
        gpu_backend().rope(ux, to_gpu(freq), offset, inverse, ux);
        EXPECT_TRUE(close_to(ux, ref, tol(t), what + " unaligned in-place", 2.0));
        // Mixed dtypes (x in t, y in f32) and a bf16 frequency table.
        Tensor yf = poisoned({b, tt, h, d}, DType::f32);
        gpu_backend().rope(to_gpu(x, t), to_gpu(freq), offset, inverse, yf);
        EXPECT_TRUE(close_to(yf, ref, tol(DType::f32), what + " ->f32", 2.0));
      }
    }
  }
  // bf16 inv_freq: the kernel reads the frequencies at their run-time dtype.
  Rng rng(seed++);
  const Tensor x = random_host({2, 11, 3, 16}, rng, DType::f32);
  const Tensor freq = round_to(rope_freq(16), DType::bf16);
  Tensor ref = Tensor::empty({2, 11, 3, 16});
  cpu_backend().rope(x, freq, 5, false, ref);
  Tensor y = poisoned({2, 11, 3, 16}, DType::f32);
  gpu_backend().rope(to_gpu(x), to_gpu(freq, DType::bf16), 5, false, y);
  EXPECT_TRUE(close_to(y, ref, tol(DType::f32), "rope bf16 freq", 2.0));
}

TEST(CudaRopeFast, HeadDimBeyondTheSharedTable) {
  EL_REQUIRE_GPU();
  // D/2 = 6145 pairs: a 48 KB cos/sin row does not fit, so each pair
  // computes its own sincosf.
  const int64_t d = 12290;
  Rng rng(611);
  const Tensor x = random_host({1, 3, 2, d}, rng, DType::f32);
  const Tensor freq = rope_freq(d);
  Tensor ref = Tensor::empty({1, 3, 2, d});
  cpu_backend().rope(x, freq, 7, false, ref);
  Tensor y = poisoned({1, 3, 2, d}, DType::f32);
  gpu_backend().rope(to_gpu(x), to_gpu(freq), 7, false, y);
  EXPECT_TRUE(close_to(y, ref, tol(DType::f32), "rope D=12290", 2.0));
}

// ids with heavy repeats: id `hot` fills a share `hot_frac` of the positions,
// the rest are drawn from a skewed distribution over [0, v).
Tensor skewed_ids(int64_t n, int32_t v, int32_t hot, double hot_frac, Rng& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) {
    const double u = rng.uniform();
    if (u < hot_frac) {
      id = hot;
    } else {
      const double w = rng.uniform();  // w^3 favours small ids (a Zipf-like tail)
      id = std::min<int32_t>(v - 1, static_cast<int32_t>(w * w * w * v));
    }
  }
  return Tensor::from_ints(ids, {n});
}

void check_embedding_backward(const Tensor& ids, int64_t v, int64_t c, DType tg, DType td,
                              Rng& rng, const std::string& what) {
  const int64_t n = ids.numel();
  const Tensor dout = random_host({n, c}, rng, tg);
  Tensor ref = Tensor::empty({v, c});
  cpu_backend().embedding_backward(ids, dout, ref);
  const Tensor gids = to_gpu(ids), gdout = to_gpu(dout, tg);
  Tensor dt = poisoned({v, c}, td);
  gpu_backend().embedding_backward(gids, gdout, dt);
  // A run's partial sums are added in tile order, not position order: f32
  // rounding differs from the CPU's by a few ulps of the run's magnitude.
  const Tolerance t = td == DType::f32 ? Tolerance{2e-5, 2e-4} : tol(td);
  EXPECT_TRUE(close_to(dt, ref, t, what, 4.0));
  Tensor dt2 = poisoned({v, c}, td);
  gpu_backend().embedding_backward(gids, gdout, dt2);
  EXPECT_EQ(dt.to_floats(), dt2.to_floats()) << what << ": not deterministic";
}

TEST(CudaEmbeddingFast, RepeatedIdsOddWidthsDeterministic) {
  EL_REQUIRE_GPU();
  uint64_t seed = 621;
  // {n, v, c}: the 124M vocabulary-4096 case (small n), an odd width (scalar
  // columns), a width over 1024 columns (several column chunks).
  for (auto [n, v, c] : {std::tuple<int64_t, int64_t, int64_t>{4096, 4096, 768},
                         {3001, 500, 77},
                         {1500, 64, 1288},
                         {31, 8, 8},
                         {33, 8, 12}}) {
    for (auto [tg, td] : {std::pair{DType::f32, DType::f32}, std::pair{DType::bf16, DType::f32},
                          std::pair{DType::bf16, DType::bf16}, std::pair{DType::f16, DType::f16}}) {
      Rng rng(seed++);
      const Tensor ids = skewed_ids(n, static_cast<int32_t>(v), 3, 0.3, rng);
      check_embedding_backward(ids, v, c, tg, td, rng,
                               "embedding_backward n=" + std::to_string(n) + " c=" +
                                   std::to_string(c) + " " + dtype_name(tg) + "->" +
                                   dtype_name(td));
    }
  }
}

TEST(CudaEmbeddingFast, RunsOnTileEdges) {
  EL_REQUIRE_GPU();
  uint64_t seed = 641;
  // One id everywhere (one run over every tile), and runs whose lengths are
  // multiples of the 32-entry tile so they start and end on tile edges.
  for (int64_t n : {int64_t{1}, int64_t{32}, int64_t{33}, int64_t{64}, int64_t{1000}}) {
    Rng rng(seed++);
    const Tensor ids = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(n), 5), {n});
    check_embedding_backward(ids, 9, 24, DType::f32, DType::f32, rng,
                             "one id, n=" + std::to_string(n));
  }
  for (std::vector<int> lens : {std::vector<int>{32, 32, 64, 1, 31, 96, 33},
                                std::vector<int>{1, 63, 64, 65, 2, 30}}) {
    std::vector<int32_t> ids;
    for (size_t r = 0; r < lens.size(); ++r) {
      for (int k = 0; k < lens[r]; ++k) ids.push_back(static_cast<int32_t>(2 * r + 1));
    }
    Rng rng(seed++);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(static_cast<unsigned>(seed)));
    const auto n = static_cast<int64_t>(ids.size());
    check_embedding_backward(Tensor::from_ints(ids, {n}), 20, 40, DType::bf16, DType::f32, rng,
                             "tile-edge runs, n=" + std::to_string(n));
  }
}

TEST(CudaEmbeddingFast, InvalidIdsAreSkippedAndReported) {
  EL_REQUIRE_GPU();
  Rng rng(661);
  const int64_t n = 200, v = 10, c = 16;
  Tensor ids = skewed_ids(n, static_cast<int32_t>(v), 2, 0.5, rng);
  Tensor valid = ids.clone();
  for (int64_t i : {int64_t{7}, int64_t{50}, int64_t{199}}) {
    ids.data<int32_t>()[i] = i == 50 ? -3 : static_cast<int32_t>(v + i);
  }
  const Tensor dout = random_host({n, c}, rng, DType::f32);
  // Reference: the same gradient with the bad rows' dout zeroed.
  Tensor dz = dout.clone();
  for (int64_t i : {int64_t{7}, int64_t{50}, int64_t{199}}) {
    for (int64_t j = 0; j < c; ++j) dz.data<float>()[i * c + j] = 0.f;
  }
  Tensor ref = Tensor::empty({v, c});
  cpu_backend().embedding_backward(valid, dz, ref);
  Tensor dt = poisoned({v, c}, DType::f32);
  gpu_backend().embedding_backward(to_gpu(ids), to_gpu(dout), dt);
  try {
    gpu_backend().synchronize();
    FAIL() << "expected el::Exception";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_backward"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(close_to(dt, ref, tol(DType::f32), "embedding_backward with bad ids", 4.0));
}

TEST(CudaSumSquaresMany, ManyOddTensorsMixedDtypes) {
  EL_REQUIRE_GPU();
  Rng rng(671);
  std::vector<Tensor> gpu_xs;
  double ref = 0.0;
  // 111 tensors like a 124M model's gradients, scaled down: lengths around
  // the 32768-element chunk, odd lengths, empty ones, unaligned views.
  for (int i = 0; i < 111; ++i) {
    const DType t = kFloat[i % 3];
    int64_t n = 1 + static_cast<int64_t>(rng.below(5000));
    if (i % 7 == 0) n = 32768 + (i % 3) - 1;  // 32767, 32768, 32769
    if (i % 11 == 0) n = 100003;
    if (i == 5 || i == 50) n = 0;
    const Tensor x = random_host({n}, rng, t, 0.1f + 0.01f * float(i));
    if (n > 0) ref += cpu_backend().sum_squares(x);
    gpu_xs.push_back(i % 13 == 4 && n > 0 ? unaligned_gpu(x, t) : to_gpu(x, t));
  }
  const double got = gpu_backend().sum_squares_many(gpu_xs);
  EXPECT_NEAR(got, ref, 1e-6 * ref);
  EXPECT_EQ(gpu_backend().sum_squares_many(gpu_xs), got) << "not deterministic";
  // Matches the single-tensor reduction for one tensor, and empty inputs give 0.
  const double one = gpu_backend().sum_squares(gpu_xs[7]);
  EXPECT_NEAR(gpu_backend().sum_squares_many({gpu_xs[7]}), one, 1e-6 * one);
  EXPECT_EQ(gpu_backend().sum_squares_many({}), 0.0);
  // More tensors than one launch takes (128): several launches, one sum.
  std::vector<Tensor> many;
  double many_ref = 0.0;
  for (int i = 0; i < 300; ++i) {
    const DType t = kFloat[i % 3];
    const Tensor x = random_host({1 + static_cast<int64_t>(rng.below(700))}, rng, t);
    many_ref += cpu_backend().sum_squares(x);
    many.push_back(to_gpu(x, t));
  }
  const double many_got = gpu_backend().sum_squares_many(many);
  EXPECT_NEAR(many_got, many_ref, 1e-6 * many_ref);
  EXPECT_EQ(gpu_backend().sum_squares_many(many), many_got) << "not deterministic";
  EXPECT_EQ(gpu_backend().sum_squares_many({Tensor::empty({0}, DType::bf16, gpu())}), 0.0);
}

}  // namespace
}  // namespace el::test
