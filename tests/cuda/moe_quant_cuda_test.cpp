// moe_quant_cuda_test.cpp — the quantized MoE experts on the CUDA backend
// (src/cuda/cuda_moe_quant.cu, ops::grouped_quant_linear) against the CPU
// backend (the reference), f32 / bf16 / f16:
//  * the grouped quantized GEMM at decode sizes (M = 1 .. 8 rows spread over
//    a few of many experts, most experts empty: the direct kernel, whose
//    blocks of empty experts exit), an expert of more than 8 rows (several
//    token passes), int4 / int8, symmetric / asymmetric, per-channel and
//    small groups, K whose rows are not a multiple of 4 bytes (byte loads),
//    unused rows after offsets[E] (zeroed), and a prefill size (M > 64: the
//    dequantise-to-scratch + grouped GEMM path); every value checked;
//  * a tiny-moe model quantized (int4 g16) and saved on the CPU, loaded on
//    the GPU and on the CPU: logits agree and greedy generation gives the
//    same tokens.
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/moe_test_util.h"
#include "cuda_model_util.h"
#include "cuda_quant_test_util.h"
#include "cuda_test_util.h"
#include "infer/generator.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/ops.h"
#include "quant/quant_io.h"
#include "quant/quantize_model.h"

namespace el::test {
namespace {

const DType kDtypes[] = {DType::f32, DType::bf16, DType::f16};

// Budget relative to the reference's norm (relative_error): f32 sums in
// another order, bf16/f16 round x, the dequantised weights and y.
double budget(DType dt) { return dt == DType::f32 ? 1e-5 : dt == DType::bf16 ? 1e-2 : 2e-3; }

// Rows per expert: `m` rows over `e` experts, only every `stride`-th expert used.
std::vector<int32_t> spread(int64_t m, int64_t e, int64_t stride) {
  std::vector<int32_t> c(static_cast<size_t>(e), 0);
  for (int64_t i = 0; i < m; ++i) ++c[static_cast<size_t>((i * stride) % e)];
  return c;
}

TEST(MoeQuantCuda, GroupedQuantMatmulMatchesCpu) {
  EL_REQUIRE_GPU();
  struct Case {
    int64_t e, n, k;
    int bits;
    int64_t group;
    bool symmetric;
    std::vector<int32_t> counts;
    int64_t unused;
  };
  std::vector<Case> cases;
  for (int64_t m = 1; m <= 8; ++m) {  // decode: M = 1 .. 8 rows, most of 8 experts empty
    cases.push_back({8, 96, 128, m % 2 ? 4 : 8, 32, m % 3 != 0, spread(m, 8, 3), 0});
  }
  cases.push_back({5, 40, 64, 4, 64, false, {0, 11, 0, 0, 2}, 3});   // 11 rows: two token passes
  cases.push_back({3, 17, 24, 8, 8, true, {1, 0, 2}, 1});            // odd N, groups of 8
  cases.push_back({2, 9, 10, 4, 2, false, {1, 1}, 0});               // row of 5 bytes: byte loads
  cases.push_back({1, 32, 64, 8, 16, true, {4}, 0});                 // one expert
  cases.push_back({7, 64, 96, 4, 32, true, spread(150, 7, 2), 6});   // 150 rows: scratch + grouped GEMM
  cases.push_back({4, 48, 128, 8, 128, false, {0, 200, 0, 33}, 0});  // per channel, prefill
  uint64_t seed = 1;
  for (const Case& c : cases) {
    int64_t m = c.unused;
    for (int32_t r : c.counts) m += r;
    for (DType dt : kDtypes) {
      const std::string what = fmt::format("E{} N{} K{} M{} int{} g{} {} {}", c.e, c.n, c.k, m, c.bits, c.group,
                                           c.symmetric ? "sym" : "asym", dtype_name(dt));
      Rng rng(seed++);
      const QuantizedWeight wh =
          random_quant_host(c.e * c.n, c.k, c.bits, c.group, c.symmetric, rng);
      const Tensor x = random_host({m, c.k}, rng, dt);
      const Tensor off = offsets_of(c.counts);
      Tensor ref = Tensor::empty({m, c.n});
      cpu_backend().grouped_quant_matmul(x, wh, off, ref);
      Tensor y = poisoned({m, c.n}, dt);
      gpu_backend().grouped_quant_matmul(to_gpu(x, dt), quant_to_gpu(wh), to_gpu(off), y);
      gpu_backend().synchronize();
      EXPECT_LT(relative_error(y, ref), budget(dt)) << what;
      // Unused rows are exactly 0.
      const std::vector<float> got = y.to_floats();
      for (int64_t i = (m - c.unused) * c.n; i < m * c.n; ++i) {
        ASSERT_EQ(got[static_cast<size_t>(i)], 0.f) << what << " unused row value " << i;
      }
    }
  }
}

TEST(MoeQuantCuda, OpThroughOpsMatchesCpu) {
  EL_REQUIRE_GPU();
  Rng rng(77);
  const QuantizedWeight wh = random_quant_host(6 * 32, 64, 4, 16, true, rng);
  const Tensor x = random_host({5, 64}, rng, DType::bf16);
  const Tensor off = offsets_of({0, 3, 0, 0, 2, 0});
  NoGrad no_grad;
  const Tensor ref = ops::grouped_quant_linear(x, wh, off);
  const Tensor got =
      ops::grouped_quant_linear(to_gpu(x, DType::bf16), quant_to_gpu(wh), to_gpu(off));
  EXPECT_LT(relative_error(got, ref), budget(DType::bf16));
}

// tiny-moe with weights spread enough that greedy choices are not decided by
// rounding, quantized (int4 g16, RTN) on the CPU and saved.
std::string quantized_tiny_moe(const std::string& dir) {
  const ModelCard card = find_model_card("tiny-moe").value();
  auto model = DecoderLM::create(card, Device::cpu(), 7, DType::f32).value();
  Rng rng(11);
  for (auto& p : model->parameters()) {
    Tensor t = p.tensor;
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, 0.1f);
  }
  quant::QuantizeOptions o;
  o.spec = quant::QuantSpec{4, 16, true};
  auto r = quant::quantize_model(*model, o);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  const Status st = quant::save_quantized_model(*model, dir);
  EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message());
  return dir;
}

TEST(MoeQuantCuda, TinyMoeQuantizedGenerateMatchesCpu) {
  EL_REQUIRE_GPU();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("el_moe_quant_cuda_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  quantized_tiny_moe(dir.string());
  auto cpu = quant::load_quantized_model(dir.string(), Device::cpu());
  auto gpu_m = quant::load_quantized_model(dir.string(), gpu());
  ASSERT_TRUE(cpu.ok() && gpu_m.ok());
  EXPECT_EQ(gpu_m.value().metadata.experts.size(), 4u);  // 2 layers x (gate_up, down)
  const Tensor ids = ids_tensor(2, 12, 4096, 3);
  {
    NoGrad no_grad;
    const Tensor lc = cpu.value().model->forward(ids);
    const Tensor lg = gpu_m.value().model->forward(ids.to(gpu()));
    EXPECT_LT(relative_error(lg, lc), 1e-4);
  }
  infer::GenerationConfig g;
  g.max_new_tokens = 8;
  g.ignore_stop = true;
  const std::vector<std::vector<int32_t>> prompts = {{5, 8, 13, 21}, {1, 2}};
  auto rc = infer::generate(*cpu.value().model, prompts, g);
  auto rg = infer::generate(*gpu_m.value().model, prompts, g);
  ASSERT_TRUE(rc.ok() && rg.ok());
  ASSERT_EQ(rc->requests.size(), rg->requests.size());
  for (size_t i = 0; i < rc->requests.size(); ++i) {
    EXPECT_EQ(rg->requests[i].tokens, rc->requests[i].tokens) << "request " << i << ", " << rg->graph_note;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace el::test
