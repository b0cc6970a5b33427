// moe_cuda_test.cpp — the mixture-of-experts kernels of the CUDA backend
// (src/cuda/cuda_moe.cu, cuda_moe_loss.cu, cuda_moe_gemm.cu) against the CPU backend (the
// reference), f32 / bf16 / f16:
//  * router top-k (softmax / sigmoid, normalised or not, k = 1 .. 8, E up to
//    256, odd token counts) forward (ids exactly, weights) and backward, on
//    well-separated logits so no rounding can reorder two experts;
//  * grouping (dropless and capacity-limited, an expert with no token,
//    several 1024-slot chunks, dozens of them): sorted_slot, slot_row and
//    offsets exactly (the chunk scan runs in the count kernel's last block:
//    the cases run back to back also check its arrival counter is reset);
//  * gather and combine (f32 and activation-dtype weights, the gated shared
//    expert, dropped slots, unused rows, widths of one 16-byte vector, of a
//    part of a warp's and of several) forward and backward;
//  * the grouped GEMMs, forward (x w_e^T), dX (dy w_e) and dW (dy_e^T x_e):
//    the tensor-core paths (bf16 / f16, multiples of 8: wgmma on Hopper,
//    mma.sync elsewhere or with EL_MOE_GEMM=mma), the SIMT path (f32, odd
//    widths), experts of 0 and 1 rows, several experts inside one 128-row
//    tile range, row counts around 64 / 128, K and O not multiples of 64, a
//    4096-token top-2 projection, unused rows; every value checked; dW
//    accumulated into old values (gradient accumulation), empty experts
//    keeping theirs;
//  * the balance loss and z-loss, values and gradients (one block, grids
//    walking several tokens per warp, k above 32), and bitwise equal
//    results when run again (fixed reduction orders);
//  * a two-layer MoE decoder (shared expert included) on the GPU against the
//    same weights on the CPU, logits and every parameter gradient: f32 with
//    top-2 routing, bf16 with every expert chosen (k = E, so rounding cannot
//    flip a routing decision and the comparison measures the kernels).
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common/moe_test_util.h"
#include "cuda_model_util.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/ops.h"

namespace el::test {
namespace {

const DType kDtypes[] = {DType::f32, DType::bf16, DType::f16};

// Budgets relative to the reference's norm (relative_error, cuda_model_util.h).
double fwd_budget(DType dt) { return dt == DType::f32 ? 1e-5 : dt == DType::bf16 ? 1e-2 : 2e-3; }
double bwd_budget(DType dt) { return dt == DType::f32 ? 1e-4 : dt == DType::bf16 ? 2e-2 : 4e-3; }

// Exactly representable logits 0.25 apart: no rounding can reorder two experts.
Tensor exact_logits(int64_t n, int64_t e, Rng& rng) {
  return separated_logits(n, e, rng, 0.25f, 0.f);
}
Tensor route_ids(int64_t n, int64_t e, int64_t k, Rng& rng, int64_t skip) {
  return Tensor::from_ints(random_routes(n, e, k, rng, skip), {n, k});
}

std::vector<int32_t> ints(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  return std::vector<int32_t>(h.data<int32_t>(), h.data<int32_t>() + h.numel());
}

struct Groups {
  Tensor sorted, rows, offsets;
};

Groups group_on(Backend& be, const Tensor& ids, int64_t e, int64_t capacity, Device dev) {
  const int64_t m = ids.numel();
  Groups g{Tensor::empty({m}, DType::i32, dev), Tensor::empty({m}, DType::i32, dev),
           Tensor::empty({e + 1}, DType::i32, dev)};
  be.moe_group(ids.device() == dev ? ids : ids.to(dev), capacity, g.sorted, g.rows, g.offsets);
  return g;
}

TEST(MoeCuda, RouterMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 1;
  struct Case {
    int64_t n, e, k;
    bool sigmoid, normalize;
  };
  const Case cases[] = {{333, 8, 2, false, true},  {333, 8, 2, false, false},
                        {77, 60, 4, false, false}, {129, 256, 8, true, true},
                        {50, 8, 1, true, false},   {31, 5, 5, false, true}};
  for (const Case& c : cases) {
    for (DType dt : kDtypes) {
      const std::string what = fmt::format("router N{} E{} k{} {} {} {}", c.n, c.e, c.k,
                                           c.sigmoid ? "sigmoid" : "softmax",
                                           c.normalize ? "norm" : "raw", dtype_name(dt));
      Rng rng(seed++);
      const MoeScore score = c.sigmoid ? MoeScore::sigmoid : MoeScore::softmax;
      const Tensor logits = exact_logits(c.n, c.e, rng);
      const Tensor dw = random_host({c.n, c.k}, rng, DType::f32);
      Tensor r_ids = Tensor::empty({c.n, c.k}, DType::i32), r_w = Tensor::empty({c.n, c.k}),
             r_dl = Tensor::empty({c.n, c.e});
      cpu_backend().moe_router_forward(logits, score, c.normalize, r_ids, r_w);
      cpu_backend().moe_router_backward(dw, logits, r_ids, r_w, score, c.normalize, r_dl);
      const Tensor gl = to_gpu(logits, dt);
      Tensor ids = Tensor::empty({c.n, c.k}, DType::i32, gpu()), w = poisoned({c.n, c.k}, DType::f32),
             dl = poisoned({c.n, c.e}, dt);
      gpu_backend().moe_router_forward(gl, score, c.normalize, ids, w);
      gpu_backend().moe_router_backward(to_gpu(dw), gl, ids, w, score, c.normalize, dl);
      gpu_backend().synchronize();
      EXPECT_EQ(ints(ids), ints(r_ids)) << what;
      EXPECT_TRUE(close_to(w, r_w, tol(DType::f32), what + " weights", 10.0));
      EXPECT_TRUE(close_to(dl, r_dl, tol(dt), what + " dlogits", 2.0));
    }
  }
}

TEST(MoeCuda, GroupingMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 50;
  struct Case {
    int64_t n, e, k, capacity, skip;
  };
  const Case cases[] = {{1500, 8, 2, 0, 3},    {1500, 8, 2, 300, -1}, {5, 4, 2, 0, -1},
                        {700, 60, 4, 0, 0},    {2100, 256, 8, 70, 9}, {3, 3, 3, 1, -1},
                        {1024, 16, 1, 0, 15},  {20000, 8, 2, 0, -1}, {20000, 8, 2, 4000, 3},
                        {1, 1, 1, 0, -1}};
  for (const Case& c : cases) {
    const std::string what =
        fmt::format("group N{} E{} k{} cap{}", c.n, c.e, c.k, c.capacity);
    Rng rng(seed++);
    const Tensor ids = route_ids(c.n, c.e, c.k, rng, c.skip);
    const Groups want = group_on(cpu_backend(), ids, c.e, c.capacity, Device::cpu());
    const Groups got = group_on(gpu_backend(), ids, c.e, c.capacity, gpu());
    EXPECT_EQ(ints(got.offsets), ints(want.offsets)) << what;
    EXPECT_EQ(ints(got.rows), ints(want.rows)) << what;
    EXPECT_EQ(ints(got.sorted), ints(want.sorted)) << what;
  }
}

TEST(MoeCuda, GatherAndCombineMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : kDtypes) {
    for (const auto& [n, c, capacity, shared, act_weights] :
         {std::tuple<int64_t, int64_t, int64_t, bool, bool>{301, 64, 0, false, false},
          {301, 64, 50, true, false},
          {97, 37, 0, true, true},   // odd width: scalar path
          {97, 40, 20, false, true},
          {513, 1024, 0, true, false},  // 4 vectors per lane
          {77, 136, 30, false, false},  // 17 vectors a row: part of the warp
          {200, 8, 60, true, true}}) {  // one vector a row (bf16 / f16)
      const int64_t e = 8, k = 2, m = n * k;
      const std::string what = fmt::format("N{} C{} cap{} shared{} wdt{} {}", n, c, capacity,
                                           shared, act_weights, dtype_name(dt));
      Rng rng(seed++);
      const Tensor ids = route_ids(n, e, k, rng, 5);
      const Groups rg = group_on(cpu_backend(), ids, e, capacity, Device::cpu());
      const Groups gg = group_on(gpu_backend(), ids, e, capacity, gpu());
      const DType wdt = act_weights ? dt : DType::f32;
      const Tensor x = random_host({n, c}, rng, dt), ys = random_host({m, c}, rng, dt),
                   w = random_host({n, k}, rng, wdt), dout = random_host({n, c}, rng, dt),
                   dgx = random_host({m, c}, rng, dt);
      const Tensor sh = shared ? random_host({n, c}, rng, dt) : Tensor(),
                   gate = shared ? random_host({n, 1}, rng, dt, 2.f) : Tensor();
      // CPU reference.
      Tensor r_g = Tensor::empty({m, c}), r_dx = Tensor::empty({n, c}), r_out = Tensor::empty({n, c}),
             r_dys = Tensor::empty({m, c}), r_dw = Tensor::empty({n, k}),
             r_dsh = shared ? Tensor::empty({n, c}) : Tensor(),
             r_dgate = shared ? Tensor::empty({n, 1}) : Tensor();
      Backend& cb = cpu_backend();
      cb.moe_gather_forward(x, rg.sorted, k, r_g);
      cb.moe_gather_backward(dgx, rg.rows, r_dx);
      cb.moe_combine_forward(ys, w, rg.rows, sh, gate, r_out);
      cb.moe_combine_backward(dout, ys, w, rg.sorted, rg.rows, sh, gate, r_dys, r_dw, r_dsh,
                              r_dgate);
      // GPU.
      Backend& gb = gpu_backend();
      Tensor g = poisoned({m, c}, dt), dx = poisoned({n, c}, dt), out = poisoned({n, c}, dt),
             dys = poisoned({m, c}, dt), dw = poisoned({n, k}, wdt),
             dsh = shared ? poisoned({n, c}, dt) : Tensor(),
             dgate = shared ? poisoned({n, 1}, dt) : Tensor();
      const Tensor gsh = shared ? to_gpu(sh, dt) : Tensor(),
                   ggate = shared ? to_gpu(gate, dt) : Tensor(), gys = to_gpu(ys, dt),
                   gw = to_gpu(w, wdt), gdout = to_gpu(dout, dt);
      gb.moe_gather_forward(to_gpu(x, dt), gg.sorted, k, g);
      gb.moe_gather_backward(to_gpu(dgx, dt), gg.rows, dx);
      gb.moe_combine_forward(gys, gw, gg.rows, gsh, ggate, out);
      gb.moe_combine_backward(gdout, gys, gw, gg.sorted, gg.rows, gsh, ggate, dys, dw, dsh, dgate);
      gb.synchronize();
      EXPECT_TRUE(close_to(g, r_g, Tolerance{0, 0}, what + " gather (a copy)"));
      EXPECT_TRUE(close_to(dx, r_dx, tol(dt), what + " gather backward"));
      EXPECT_TRUE(close_to(out, r_out, tol(dt), what + " combine"));
      EXPECT_TRUE(close_to(dys, r_dys, tol(dt), what + " dys"));
      EXPECT_TRUE(close_to(dw, r_dw, tol(wdt), what + " dweights", dt == DType::f32 ? 5.0 : 2.0));
      if (shared) {
        EXPECT_TRUE(close_to(dsh, r_dsh, tol(dt), what + " dshared"));
        EXPECT_TRUE(close_to(dgate, r_dgate, tol(dt), what + " dgate", 2.0));
      }
    }
  }
}

// y = x w_e^T, dx = dy w_e, dw = dy_e^T x_e on the rows of the grouping of
// `ids` [n, k_route]: relative error within the dtype's budget, every value
// within the dtype's tolerance (an unwritten value is NaN: poisoned), and
// exact zeros for the dW of experts without rows and the unused rows of y.
void check_grouped_gemm_ids(const Tensor& ids, int64_t e, int64_t capacity, int64_t K, int64_t O,
                            DType dt, Rng& rng, const std::string& what) {
  const int64_t m = ids.numel();
  const Groups rg = group_on(cpu_backend(), ids, e, capacity, Device::cpu());
  const Groups gg = group_on(gpu_backend(), ids, e, capacity, gpu());
  const Tensor x = random_host({m, K}, rng, dt), w = random_host({e, O, K}, rng, dt, 0.2f),
               dy = random_host({m, O}, rng, dt);
  Tensor r_y = Tensor::empty({m, O}), r_dx = Tensor::empty({m, K}), r_dw = Tensor::empty({e, O, K});
  cpu_backend().grouped_gemm(x, w, true, rg.offsets, r_y);
  cpu_backend().grouped_gemm(dy, w, false, rg.offsets, r_dx);
  cpu_backend().grouped_gemm_dw(dy, x, rg.offsets, r_dw);
  Tensor y = poisoned({m, O}, dt), dx = poisoned({m, K}, dt), dw = poisoned({e, O, K}, dt);
  const Tensor gx = to_gpu(x, dt), gw = to_gpu(w, dt), gdy = to_gpu(dy, dt);
  gpu_backend().grouped_gemm(gx, gw, true, gg.offsets, y);
  gpu_backend().grouped_gemm(gdy, gw, false, gg.offsets, dx);
  gpu_backend().grouped_gemm_dw(gdy, gx, gg.offsets, dw);
  gpu_backend().synchronize();
  EXPECT_LT(relative_error(y, r_y), fwd_budget(dt)) << what << " y";
  EXPECT_LT(relative_error(dx, r_dx), fwd_budget(dt)) << what << " dx";
  EXPECT_LT(relative_error(dw, r_dw), bwd_budget(dt)) << what << " dw";
  EXPECT_TRUE(close_to(y, r_y, tol(dt), what + " y"));
  EXPECT_TRUE(close_to(dx, r_dx, tol(dt), what + " dx"));
  EXPECT_TRUE(close_to(dw, r_dw, tol(dt), what + " dw"));
  // Exact zeros where they must be: the dW of experts without rows, the unused rows.
  const std::vector<int32_t> off = ints(gg.offsets);
  const std::vector<float> dwv = dw.to_floats();
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    if (off[x_e + 1] != off[x_e]) continue;
    for (int64_t i = x_e * O * K; i < (x_e + 1) * O * K; ++i)
      ASSERT_EQ(dwv[i], 0.f) << what << " dW of empty expert " << x_e;
  }
  const std::vector<float> yv = y.to_floats();
  for (int64_t i = off.back() * O; i < m * O; ++i) ASSERT_EQ(yv[i], 0.f) << what << " unused row";
}

// Random top-k routes over e experts, the last of which gets no row.
void check_grouped_gemm(int64_t n, int64_t e, int64_t k_route, int64_t capacity, int64_t K,
                        int64_t O, DType dt, uint64_t seed) {
  const std::string what = fmt::format("grouped gemm N{} E{} k{} cap{} K{} O{} {}", n, e, k_route,
                                       capacity, K, O, dtype_name(dt));
  Rng rng(seed);
  const Tensor ids = route_ids(n, e, k_route, rng, e - 1);
  check_grouped_gemm_ids(ids, e, capacity, K, O, dt, rng, what);
}

// Top-1 routes giving expert i exactly rows[i] tokens, in a shuffled order.
void check_grouped_gemm_rows(const std::vector<int32_t>& rows, int64_t K, int64_t O, DType dt,
                             uint64_t seed) {
  const std::string what = fmt::format("grouped gemm rows [{}] K{} O{} {}", fmt::join(rows, " "),
                                       K, O, dtype_name(dt));
  Rng rng(seed);
  std::vector<int32_t> v;
  for (size_t i = 0; i < rows.size(); ++i) v.insert(v.end(), rows[i], static_cast<int32_t>(i));
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
  const int64_t n = static_cast<int64_t>(v.size());
  check_grouped_gemm_ids(Tensor::from_ints(v, {n, 1}), static_cast<int64_t>(rows.size()), 0, K, O,
                         dt, rng, what);
}

TEST(MoeCuda, GroupedGemmMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 200;
  for (DType dt : kDtypes) {
    check_grouped_gemm(700, 8, 2, 0, 256, 384, dt, seed++);   // tensor cores (bf16/f16), 1-2 tiles
    check_grouped_gemm(1200, 4, 2, 0, 64, 136, dt, seed++);   // experts of ~600 rows: 5 row tiles
    check_grouped_gemm(301, 8, 2, 60, 128, 96, dt, seed++);   // capacity: unused rows
    // Few tiles over a long K: the wgmma kernel splits them along K (Sched), with unused rows.
    check_grouped_gemm(301, 8, 2, 60, 1000, 136, dt, seed++);
    // Widths of 256 + 64 and 3 x 256 + 128 (the paper's 0.5B d_model): a last column
    // tile with at most 128 columns runs the half-width instruction (EL_MOE_NARROW).
    check_grouped_gemm(1000, 8, 2, 0, 896, 320, dt, seed++);
    check_grouped_gemm(97, 5, 1, 0, 100, 70, dt, seed++);     // widths not multiples of 8: SIMT
    check_grouped_gemm(33, 60, 4, 0, 32, 40, dt, seed++);     // many experts with few rows
  }
}

// The tile edges of the tensor-core paths (EL_MOE_GEMM, cuda_moe_gemm.cu, picks
// the wgmma or the mma.sync kernel; run it under each): experts of 0 and 1
// rows, several experts inside one 128-row range, row counts around 64 / 128,
// a 64-deep dW slice cut short, K and O multiples of 8 but not of 64 / 128.
// (Most cases have fewer tiles than a quarter of the SMs, so wgmma's fwd / dx split
// each tile along K; EL_MOE_SPLIT=1 runs them whole.)
TEST(MoeCuda, GroupedGemmTileEdgesMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 400;
  struct Case {
    std::vector<int32_t> rows;
    int64_t K, O;
  };
  const Case cases[] = {
      {{1, 0, 5, 130, 64, 0, 200, 3, 17, 128, 1, 63, 65, 0}, 200, 344},
      {{1}, 200, 344},                    // one row in all
      {{0, 777, 0}, 344, 200},            // 13 dW slices, the last of 9 rows
      {{129, 255, 256, 257, 127}, 64, 520},  // O: two 256-column tiles and 8 columns
      {{40, 40, 40, 40, 40, 40, 40, 40}, 1024, 136},
      {{2, 3, 0, 4, 1, 6, 5, 7, 0, 9}, 8, 8},  // the narrowest tiles
  };
  for (DType dt : {DType::bf16, DType::f16}) {
    for (const Case& c : cases) check_grouped_gemm_rows(c.rows, c.K, c.O, dt, seed++);
  }
}

// The benchmark's projection at half width: 4096 tokens top-2 over 8 experts
// (8192 rows), C 1024, F 2816, many tiles per expert and several persistent rounds.
TEST(MoeCuda, GroupedGemmLargeMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType dt : {DType::bf16, DType::f16}) {
    check_grouped_gemm(4096, 8, 2, 0, 1024, 2816, dt, seed++);
  }
}

// dW added to the old gradient by the kernel (grouped_gemm_dw with accumulate
// = true, gradient accumulation's later micro-batches) against the CPU doing
// the same: rows[i] rows for expert i (in order, offsets given directly), 3
// unused rows at the end, dW starting from random old values of `wdt`. The
// product is summed in f32 and added before the one rounding, so the budgets
// are those of the plain dW; an expert without rows keeps its old values bit
// for bit (no tile of it may store, and no partial slice of its neighbours
// may touch its rows).
void check_grouped_gemm_dw_accumulate(const std::vector<int32_t>& rows, int64_t K, int64_t O,
                                      DType dt, DType wdt, uint64_t seed) {
  const std::string what = fmt::format("dW accumulate rows [{}] K{} O{} {} into {}",
                                       fmt::join(rows, " "), K, O, dtype_name(dt), dtype_name(wdt));
  Rng rng(seed);
  const int64_t e = static_cast<int64_t>(rows.size());
  std::vector<int32_t> off{0};
  for (int32_t r : rows) off.push_back(off.back() + r);
  const int64_t m = off.back() + 3;
  const Tensor offsets = Tensor::from_ints(off, {e + 1});
  const Tensor x = random_host({m, K}, rng, dt), dy = random_host({m, O}, rng, dt);
  const Tensor old = random_host({e, O, K}, rng, wdt);
  Tensor r_dw = old.clone();
  cpu_backend().grouped_gemm_dw(dy, x, offsets, r_dw, /*accumulate=*/true);
  Tensor dw = to_gpu(old, wdt);
  gpu_backend().grouped_gemm_dw(to_gpu(dy, dt), to_gpu(x, dt), offsets.to(gpu()), dw,
                                /*accumulate=*/true);
  gpu_backend().synchronize();
  EXPECT_LT(relative_error(dw, r_dw), bwd_budget(dt)) << what;
  EXPECT_TRUE(close_to(dw, r_dw, tol(dt), what));
  const std::vector<float> got = dw.to_floats(), was = old.to_floats();
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    if (rows[x_e] != 0) continue;
    for (int64_t i = x_e * O * K; i < (x_e + 1) * O * K; ++i)
      ASSERT_EQ(got[i], was[i]) << what << ": old dW of empty expert " << x_e << " changed";
  }
}

// Under whichever tensor-core path EL_MOE_GEMM picks (wgmma on Hopper by
// default; run again with EL_MOE_GEMM=mma, wgmma128, wgmma256), the SIMT path
// (f32, widths not multiples of 8) and an f32 gradient of bf16 activations
// (computed in bf16, converted, then added).
TEST(MoeCuda, GroupedGemmDwAccumulateMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 600;
  for (DType dt : kDtypes) {
    // tensor cores for bf16 / f16: empty experts between partial 128-row tiles,
    // a 64-deep slice cut short, K and O not multiples of 64
    check_grouped_gemm_dw_accumulate({1, 0, 5, 130, 64, 0, 200, 3, 17, 0}, 200, 344, dt, dt,
                                     seed++);
    check_grouped_gemm_dw_accumulate({0, 777, 0}, 344, 200, dt, dt, seed++);
    check_grouped_gemm_dw_accumulate({40, 0, 40, 40, 40, 40, 40, 40}, 1024, 136, dt, dt, seed++);
    check_grouped_gemm_dw_accumulate({5, 0, 33, 2}, 100, 70, dt, dt, seed++);  // SIMT
    check_grouped_gemm_dw_accumulate({2, 3, 0, 4, 1}, 8, 8, dt, dt, seed++);   // narrowest
  }
  check_grouped_gemm_dw_accumulate({3, 0, 90, 9}, 64, 48, DType::bf16, DType::f32, seed++);
  check_grouped_gemm_dw_accumulate({3, 0, 90, 9}, 63, 45, DType::bf16, DType::f32, seed++);
}

TEST(MoeCuda, RouterLossesMatchCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType dt : kDtypes) {
    for (const auto& [n, e, k, sigmoid] : {std::tuple<int64_t, int64_t, int64_t, bool>{333, 8, 2, false},
                                           {1000, 60, 4, true},
                                           {7, 256, 8, false},
                                           {1, 4, 1, true},       // one block
                                           {5000, 8, 2, false},   // blocks walk tokens
                                           {300, 64, 40, true}}) {  // k above a warp
      const std::string what = fmt::format("losses N{} E{} k{} {} {}", n, e, k,
                                           sigmoid ? "sigmoid" : "softmax", dtype_name(dt));
      Rng rng(seed++);
      const MoeScore score = sigmoid ? MoeScore::sigmoid : MoeScore::softmax;
      const Tensor logits = random_host({n, e}, rng, dt, 2.f);
      const Tensor ids = route_ids(n, e, k, rng, -1);
      const Tensor dloss = Tensor::full({1}, 0.7f);
      Tensor r_b = Tensor::empty({1}), r_z = Tensor::empty({1}), r_db = Tensor::empty({n, e}),
             r_dz = Tensor::empty({n, e});
      Backend& cb = cpu_backend();
      cb.moe_balance_loss_forward(logits, ids, score, r_b);
      cb.moe_balance_loss_backward(dloss, logits, ids, score, r_db);
      cb.moe_z_loss_forward(logits, r_z);
      cb.moe_z_loss_backward(dloss, logits, r_dz);
      Backend& gb = gpu_backend();
      const Tensor gl = to_gpu(logits, dt), gids = to_gpu(ids), gdl = to_gpu(dloss);
      Tensor b = poisoned({1}, DType::f32), z = poisoned({1}, DType::f32),
             db = poisoned({n, e}, dt), dz = poisoned({n, e}, dt);
      gb.moe_balance_loss_forward(gl, gids, score, b);
      gb.moe_balance_loss_backward(gdl, gl, gids, score, db);
      gb.moe_z_loss_forward(gl, z);
      gb.moe_z_loss_backward(gdl, gl, dz);
      gb.synchronize();
      EXPECT_TRUE(close_to(b, r_b, Tolerance{1e-5, 1e-5}, what + " balance"));
      EXPECT_TRUE(close_to(z, r_z, Tolerance{1e-5, 1e-5}, what + " z-loss"));
      EXPECT_TRUE(close_to(db, r_db, tol(dt), what + " dlogits (balance)", 2.0));
      EXPECT_TRUE(close_to(dz, r_dz, tol(dt), what + " dlogits (z)", 2.0));
    }
  }
}

// The losses reduce in orders fixed by the indices (one launch each, the last
// block summing the partials): the same inputs give the same bits, run after run.
TEST(MoeCuda, RouterLossesAreDeterministic) {
  EL_REQUIRE_GPU();
  Rng rng(350);
  const int64_t n = 4096, e = 8, k = 2;
  const Tensor gl = to_gpu(random_host({n, e}, rng, DType::bf16, 2.f), DType::bf16);
  const Tensor gids = to_gpu(route_ids(n, e, k, rng, -1));
  const Tensor gdl = to_gpu(Tensor::full({1}, 0.3f));
  Backend& gb = gpu_backend();
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    Tensor b = poisoned({1}, DType::f32), z = poisoned({1}, DType::f32),
           db = poisoned({n, e}, DType::bf16);
    gb.moe_balance_loss_forward(gl, gids, MoeScore::softmax, b);
    gb.moe_z_loss_forward(gl, z);
    gb.moe_balance_loss_backward(gdl, gl, gids, MoeScore::softmax, db);
    gb.synchronize();
    std::vector<float> v = b.to_floats();
    const std::vector<float> zv = z.to_floats(), dbv = db.to_floats();
    v.insert(v.end(), zv.begin(), zv.end());
    v.insert(v.end(), dbv.begin(), dbv.end());
    ASSERT_TRUE(std::isfinite(v[0]) && std::isfinite(v[1])) << "run " << run;
    if (run == 0) {
      first = v;
    } else {
      ASSERT_EQ(v, first) << "run " << run;
    }
  }
}

// ---- a whole MoE decoder -----------------------------------------------------------

ModelCard moe_card(int top_k) {
  const std::string yaml = fmt::format(
      "name: moe-cuda\nn_layer: 2\nd_model: 256\nn_head: 4\nn_kv_head: 2\nd_ff: 256\n"
      "vocab_size: 64\nmax_seq_len: 128\nmoe_experts: 8\nmoe_top_k: {}\nmoe_d_ff: 128\n"
      "moe_shared_experts: 1\nmoe_shared_d_ff: 64\nmoe_aux_loss_coef: 0.1\n"
      "moe_z_loss_coef: 0.01\n",
      top_k);
  return test_card(yaml, "moe-cuda.yaml");
}

TEST(MoeCuda, DecoderForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (const auto& [dt, k] : {std::pair<DType, int>{DType::f32, 2}, {DType::bf16, 8}}) {
    const ModelCard card = moe_card(k);
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 23).value();
    Rng rng(7);
    const Tensor ids = random_ids({2, 61}, rng, 0, static_cast<int32_t>(card.vocab_size));
    const Tensor targets = random_ids({2, 61}, rng, 0, static_cast<int32_t>(card.vocab_size));
    const double fwd = dt == DType::f32 ? 1e-4 : 3e-2, bwd = dt == DType::f32 ? 1e-3 : 8e-2;
    expect_model_matches_cpu(*cpu_model, gpu(), dt, ids, targets, fwd, bwd);
  }
}

}  // namespace
}  // namespace el::test
