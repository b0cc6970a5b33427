// decode_layer_test.cpp — the one-kernel decoder layer of a batch-1 decode
// step (cuda_decode_layer.cu, ops::decode_layer) against the same layer run
// as separate ops on the GPU (each of them tested against the CPU elsewhere)
// and against the CPU in f32 on the same rounded inputs.
//
// Quantized layers (int4 / int8 RTN, symmetric and asymmetric, group sizes
// 32-256) run the same comparisons on the same quantized codes, and a q/k/v
// bias (Qwen2) is added in the kernel's phase A.
//
// Shapes: the 1.1B layer (C 2048, 32 heads / 4 kv heads, D 64, F 5632),
// small ones with C and F not multiples of the 256-element GEMV step, head
// dim 128, MHA (group 1) and MQA (group 16), positions 0, mid-cache and the
// last cache row. Cache rows past the new position hold NaN, so a kernel that
// reads a key it must not see fails; the new row's k/v are compared too.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "cuda/cuda_kernels.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/model_card.h"
#include "ops/ops.h"
#include "quant/quantize_model.h"
#include "quant/rtn.h"

namespace el::test {
namespace {

struct Case {
  int64_t c, h, hkv, d, f, smax;
  int32_t pos;
};

struct HostLayer {
  Tensor x, in_norm, qkv, o, post_norm, gate_up, down, kc, vc;  // f32 host, rounded to dtype
};

HostLayer random_layer(const Case& k, DType dt, Rng& rng) {
  HostLayer L;
  const int64_t nqkv = (k.h + 2 * k.hkv) * k.d;
  L.x = random_host({1, 1, k.c}, rng, dt);
  auto norm_w = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& e : v) e = 1.f + 0.2f * rng.normal();
    return round_to(Tensor::from_floats(v, {n}), dt);
  };
  L.in_norm = norm_w(k.c);
  L.post_norm = norm_w(k.c);
  L.qkv = random_host({nqkv, k.c}, rng, dt, 1.f / std::sqrt(float(k.c)));
  L.o = random_host({k.c, k.h * k.d}, rng, dt, 1.f / std::sqrt(float(k.h * k.d)));
  L.gate_up = random_host({2 * k.f, k.c}, rng, dt, 1.f / std::sqrt(float(k.c)));
  L.down = random_host({k.c, k.f}, rng, dt, 1.f / std::sqrt(float(k.f)));
  // Cache rows < pos hold keys/values; rows >= pos are NaN (row pos is written).
  std::vector<float> kv(static_cast<size_t>(k.smax * k.hkv * k.d));
  for (int rep = 0; rep < 2; ++rep) {
    for (size_t i = 0; i < kv.size(); ++i) {
      const int64_t row = static_cast<int64_t>(i) / (k.hkv * k.d);
      kv[i] = row < k.pos ? rng.normal() : NAN;
    }
    Tensor t = round_to(Tensor::from_floats(kv, {1, k.smax, k.hkv, k.d}), dt);
    (rep == 0 ? L.kc : L.vc) = t;
  }
  return L;
}

DecodeLayerWeights weights_on(const HostLayer& L, const Case& k, Device dev, DType dt) {
  auto put = [&](const Tensor& t) {
    Tensor out = Tensor::empty(t.shape(), dt, dev);
    out.copy_from(t);
    return out;
  };
  DecodeLayerWeights w;
  w.input_norm = put(L.in_norm);
  w.qkv = put(L.qkv);
  w.o = put(L.o);
  w.post_norm = put(L.post_norm);
  w.gate_up = put(L.gate_up);
  w.down = put(L.down);
  w.eps = 1e-5f;
  w.n_head = k.h;
  w.n_kv_head = k.hkv;
  w.head_dim = k.d;
  return w;
}

// The layer's four projections quantized (RTN on the rounded host values),
// the norms in `dt`, all on `dev`.
DecodeLayerWeights quantized_on(const HostLayer& L, const Case& k, Device dev, DType dt,
                                const quant::QuantSpec& spec) {
  DecodeLayerWeights w = weights_on(L, k, dev, dt);
  auto q = [&](const Tensor& host) {
    const QuantizedWeight cpu = quant::quantize_rtn(host, spec).value();
    return dev.kind == DeviceKind::cpu ? cpu : quant::to_quantized_weight(quant::to_host(cpu), dev).value();
  };
  w.q_qkv = q(L.qkv);
  w.q_o = q(L.o);
  w.q_gate_up = q(L.gate_up);
  w.q_down = q(L.down);
  w.qkv = w.o = w.gate_up = w.down = Tensor();
  return w;
}

// The backend uses the kernel only when asked (cuda::decode_layer_enabled):
// on for the scope of a test.
struct KernelOn {
  KernelOn() { cuda::set_decode_layer_enabled(1); }
  ~KernelOn() { cuda::set_decode_layer_enabled(-1); }
  KernelOn(const KernelOn&) = delete;
  KernelOn& operator=(const KernelOn&) = delete;
};

// The first `rows` cache rows of two caches [1, Smax, Hkv, D].
::testing::AssertionResult cache_rows_close(const Tensor& got, const Tensor& ref, int64_t rows,
                                            Tolerance t, const std::string& what) {
  const int64_t row = got.dim(2) * got.dim(3);
  const std::vector<float> a = got.to_floats(), e = ref.to_floats();
  std::vector<float> a2(a.begin(), a.begin() + rows * row), e2(e.begin(), e.begin() + rows * row);
  return close_to(Tensor::from_floats(a2, {rows * row}), Tensor::from_floats(e2, {rows * row}), t,
                  what);
}

std::string case_name(const Case& k, DType dt) {
  return fmt::format("{} C{} H{} Hkv{} D{} F{} Smax{} pos{}", dtype_name(dt), k.c, k.h, k.hkv, k.d,
                     k.f, k.smax, k.pos);
}

TEST(CudaDecodeLayer, OneKernelEqualsSeparateOpsAndCpu) {
  EL_REQUIRE_GPU();
  const KernelOn kernel_on;
  const Case cases[] = {
      {2048, 32, 4, 64, 5632, 600, 517},  // the 1.1B layer
      {256, 4, 2, 64, 512, 64, 5},
      {200, 2, 1, 128, 344, 40, 39},      // C, F not multiples of 256; last cache row
      {384, 6, 6, 64, 1000, 300, 0},      // MHA, first position
      {512, 16, 1, 64, 768, 2000, 1999},  // MQA (group 16), long cache
      {256, 4, 4, 64, 512, 8192, 8000},   // chunks too long for 10 slots: the 8-slot ring
  };
  Rng rng(2026);
  for (const DType dt : {DType::bf16, DType::f16}) {
    for (const Case& k : cases) {
      const std::string what = case_name(k, dt);
      const HostLayer L = random_layer(k, dt, rng);
      const DecodeLayerWeights wg = weights_on(L, k, gpu(), dt);
      const Tensor freq_gpu = ops::rope_inv_freq(k.d, 10000.f, gpu());
      const Tensor pos_gpu = Tensor::from_ints({k.pos}, {1}).to(gpu());
      const Tensor x = to_gpu(L.x, dt);
      Tensor kc1 = to_gpu(L.kc, dt), vc1 = to_gpu(L.vc, dt);
      ASSERT_TRUE(ops::decode_layer_is_fused(x, wg, freq_gpu, kc1, vc1)) << what;
      const Tensor fused = ops::decode_layer(x, wg, freq_gpu, pos_gpu, kc1, vc1);
      Tensor kc2 = to_gpu(L.kc, dt), vc2 = to_gpu(L.vc, dt);
      const Tensor split = ops::decode_layer(x, wg, freq_gpu, pos_gpu, kc2, vc2, false);
      // The CPU in f32 on the same rounded values (no intermediate rounding).
      const DecodeLayerWeights wc = weights_on(L, k, Device::cpu(), DType::f32);
      Tensor kc3 = L.kc.clone(), vc3 = L.vc.clone();
      const Tensor cpu = ops::decode_layer(L.x, wc, ops::rope_inv_freq(k.d, 10000.f, Device::cpu()),
                                           Tensor::from_ints({k.pos}, {1}), kc3, vc3);
      EXPECT_TRUE(close_to(fused, split, tol(dt), what + ": out vs separate ops"));
      EXPECT_TRUE(close_to(fused, cpu, tol(dt), what + ": out vs cpu f32", 2.0));
      const int64_t rows = k.pos + 1;
      EXPECT_TRUE(cache_rows_close(kc1, kc2, rows, tol(dt), what + ": k cache"));
      EXPECT_TRUE(cache_rows_close(vc1, vc2, rows, tol(dt), what + ": v cache"));
      EXPECT_TRUE(cache_rows_close(kc1, kc3, rows, tol(dt), what + ": k cache vs cpu"));
    }
  }
}

struct QuantCase {
  Case shape;
  int bits;
  int64_t group;
  bool symmetric;
  bool bias;
};

// Quantized (and biased) layers: the kernel against the separate ops on the
// same codes (quant_linear's GEMVs) and against the CPU in f32.
TEST(CudaDecodeLayer, QuantizedAndBiasedLayersEqualSeparateOpsAndCpu) {
  EL_REQUIRE_GPU();
  const QuantCase cases[] = {
      {{2048, 32, 4, 64, 5632, 600, 517}, 4, 128, true, false},  // the 1.1B layer, int4 g128
      {{2048, 32, 4, 64, 5632, 600, 300}, 8, 128, true, false},  // int8 g128
      {{256, 4, 2, 64, 384, 64, 5}, 4, 64, false, true},         // asymmetric, q/k/v bias
      {{256, 4, 2, 64, 384, 64, 63}, 8, 32, false, false},
      {{256, 2, 1, 128, 640, 40, 39}, 4, 32, true, true},        // head dim 128, last row
      {{512, 16, 1, 64, 768, 300, 0}, 8, 64, true, false},       // MQA, first position
      {{256, 4, 2, 64, 512, 64, 7}, 16, 0, true, true},          // dense with a q/k/v bias
      // int4 with whole 128-k blocks a group: the scale after each block's mma
      {{256, 4, 2, 64, 384, 64, 5}, 4, 128, false, true},        // asymmetric g128, bias
      {{512, 8, 2, 64, 768, 100, 50}, 4, 256, true, false},      // symmetric g256
      // int8 likewise (k-blocks of 64 k), each byte as two nibble mma
      {{256, 4, 2, 64, 384, 64, 5}, 8, 128, false, true},        // asymmetric g128, bias
      {{512, 8, 2, 64, 768, 100, 50}, 8, 256, true, false},      // symmetric g256
  };
  Rng rng(77);
  for (const DType dt : {DType::bf16, DType::f16}) {
    for (const QuantCase& qc : cases) {
      const Case& k = qc.shape;
      const std::string what = fmt::format("{} int{} g{} {} bias {}", case_name(k, dt), qc.bits,
                                           qc.group, qc.symmetric ? "sym" : "asym", qc.bias);
      const HostLayer L = random_layer(k, dt, rng);
      const quant::QuantSpec spec{qc.bits == 16 ? 4 : qc.bits, qc.group, qc.symmetric};
      auto layer_on = [&](Device dev, DType t) {
        DecodeLayerWeights w = qc.bits == 16 ? weights_on(L, k, dev, t) : quantized_on(L, k, dev, t, spec);
        if (qc.bias) {
          const int64_t n = (k.h + 2 * k.hkv) * k.d;
          Tensor b = Tensor::empty({n}, t, dev);
          b.copy_from(random_host({n}, rng, dt, 0.5f));
          w.qkv_bias = b;
        }
        return w;
      };
      Rng bias_rng = rng;  // the same bias values on both devices
      const DecodeLayerWeights wg = layer_on(gpu(), dt);
      rng = bias_rng;
      const DecodeLayerWeights wc = layer_on(Device::cpu(), DType::f32);
      const Tensor freq = ops::rope_inv_freq(k.d, 10000.f, gpu());
      const Tensor pos = Tensor::from_ints({k.pos}, {1}).to(gpu());
      const Tensor x = to_gpu(L.x, dt);
      Tensor kc1 = to_gpu(L.kc, dt), vc1 = to_gpu(L.vc, dt);
      // The kernel itself (whatever cuda::decode_layer_enabled says).
      ASSERT_TRUE(cuda::decode_layer_takes(x, wg, freq, kc1, vc1)) << what;
      Tensor fused = Tensor::empty(x.shape(), dt, gpu());
      cuda::decode_layer(x, wg, freq, pos, kc1, vc1, fused);
      Tensor kc2 = to_gpu(L.kc, dt), vc2 = to_gpu(L.vc, dt);
      const Tensor split = ops::decode_layer(x, wg, freq, pos, kc2, vc2, false);
      Tensor kc3 = L.kc.clone(), vc3 = L.vc.clone();
      const Tensor cpu = ops::decode_layer(L.x, wc, ops::rope_inv_freq(k.d, 10000.f, Device::cpu()),
                                           Tensor::from_ints({k.pos}, {1}), kc3, vc3);
      EXPECT_TRUE(close_to(fused, split, tol(dt), what + ": out vs separate ops"));
      EXPECT_TRUE(close_to(fused, cpu, tol(dt), what + ": out vs cpu f32", 2.0));
      EXPECT_TRUE(cache_rows_close(kc1, kc2, k.pos + 1, tol(dt), what + ": k cache"));
      EXPECT_TRUE(cache_rows_close(vc1, vc2, k.pos + 1, tol(dt), what + ": v cache"));
    }
  }
}

TEST(CudaDecodeLayer, QuantizedLayoutsItCannotStreamFallBack) {
  // int4 rows of 172 bytes (F 344) are not whole 64-byte k-blocks, and a
  // group of 16 int4 weights splits a 16-byte chunk: the separate ops run.
  EL_REQUIRE_GPU();
  Rng rng(8);
  for (const auto& [k, group] : {std::pair<Case, int64_t>{{256, 4, 2, 64, 344, 64, 3}, 8},
                                 std::pair<Case, int64_t>{{256, 4, 2, 64, 512, 64, 3}, 16}}) {
    const HostLayer L = random_layer(k, DType::bf16, rng);
    const DecodeLayerWeights w = quantized_on(L, k, gpu(), DType::bf16, {4, group, true});
    Tensor kc = to_gpu(L.kc, DType::bf16), vc = to_gpu(L.vc, DType::bf16);
    const Tensor x = to_gpu(L.x, DType::bf16), freq = ops::rope_inv_freq(k.d, 10000.f, gpu());
    EXPECT_FALSE(cuda::decode_layer_takes(x, w, freq, kc, vc)) << case_name(k, DType::bf16);
    const Tensor out = ops::decode_layer(x, w, freq, Tensor::from_ints({k.pos}, {1}).to(gpu()), kc, vc);
    EXPECT_EQ(out.numel(), k.c);
  }
}

TEST(CudaDecodeLayer, RunsBackToBackWithoutStaleHandoffs) {
  const KernelOn kernel_on;
  // Every launch must find its own flag on the never-reset launch counter, and
  // no hand-off word the launch before left (same buffers, same layout) may
  // pass for this one's: ten layers in a row give the same result as the
  // separate ops.
  EL_REQUIRE_GPU();
  const Case k{256, 4, 2, 64, 512, 64, 9};
  Rng rng(5);
  const HostLayer L = random_layer(k, DType::bf16, rng);
  const DecodeLayerWeights w = weights_on(L, k, gpu(), DType::bf16);
  const Tensor freq = ops::rope_inv_freq(k.d, 10000.f, gpu());
  const Tensor pos = Tensor::from_ints({k.pos}, {1}).to(gpu());
  Tensor x1 = to_gpu(L.x, DType::bf16), x2 = x1;
  Tensor kc1 = to_gpu(L.kc, DType::bf16), vc1 = to_gpu(L.vc, DType::bf16);
  Tensor kc2 = to_gpu(L.kc, DType::bf16), vc2 = to_gpu(L.vc, DType::bf16);
  for (int i = 0; i < 10; ++i) {
    x1 = ops::decode_layer(x1, w, freq, pos, kc1, vc1);
    x2 = ops::decode_layer(x2, w, freq, pos, kc2, vc2, false);
  }
  EXPECT_TRUE(close_to(x1, x2, tol(DType::bf16), "ten layers", 4.0));
}

// A stack of layers in one launch (cuda::decode_layers: the residual stream
// handed from layer to layer inside the kernel) gives bit for bit what the
// same kernel gives a launch per layer: outputs and every cache. 35 layers
// pass kMaxLayers (two launches); a stack that changes format (dense bf16,
// int8, int4 asymmetric g64, dense again) splits into runs.
TEST(CudaDecodeLayer, StackInOneLaunchEqualsALaunchPerLayer) {
  EL_REQUIRE_GPU();
  const Case k{256, 4, 2, 64, 512, 64, 9};
  struct Stack {
    const char* name;
    std::vector<int> bits;  // per layer: 16 dense, 8 / 4 quantized
    int64_t group;          // int4's (int8 takes 64)
  };
  const Stack stacks[] = {{"35 dense layers", std::vector<int>(35, 16), 64},
                          {"34 int4 g128 layers", std::vector<int>(34, 4), 128},
                          {"mixed formats", {16, 16, 16, 8, 8, 4, 4, 16}, 64},
                          {"one layer", {16}, 64}};
  Rng rng(11);
  for (const Stack& st : stacks) {
    const size_t n = st.bits.size();
    std::vector<DecodeLayerWeights> w;
    std::vector<Tensor> kc1, vc1, kc2, vc2;
    Tensor x;
    for (size_t i = 0; i < n; ++i) {
      const HostLayer L = random_layer(k, DType::bf16, rng);
      if (i == 0) x = to_gpu(L.x, DType::bf16);
      const int b = st.bits[i];
      DecodeLayerWeights wi = b == 16 ? weights_on(L, k, gpu(), DType::bf16)
                                      : quantized_on(L, k, gpu(), DType::bf16,
                                                     {b, b == 4 ? st.group : 64, b == 8});
      if (i % 2 == 1) {  // a q/k/v bias on every other layer (per-layer pointers)
        const int64_t nq = (k.h + 2 * k.hkv) * k.d;
        wi.qkv_bias = to_gpu(random_host({nq}, rng, DType::bf16, 0.5f), DType::bf16);
      }
      w.push_back(wi);
      kc1.push_back(to_gpu(L.kc, DType::bf16));
      vc1.push_back(to_gpu(L.vc, DType::bf16));
      kc2.push_back(to_gpu(L.kc, DType::bf16));
      vc2.push_back(to_gpu(L.vc, DType::bf16));
    }
    const Tensor freq = ops::rope_inv_freq(k.d, 10000.f, gpu());
    const Tensor pos = Tensor::from_ints({k.pos}, {1}).to(gpu());
    for (size_t i = 0; i < n; ++i)
      ASSERT_TRUE(cuda::decode_layer_takes(x, w[i], freq, kc1[i], vc1[i])) << st.name << " " << i;
    Tensor stack = Tensor::empty(x.shape(), DType::bf16, gpu());
    cuda::decode_layers(x, w, freq, pos, kc1, vc1, stack);
    Tensor cur = x;
    for (size_t i = 0; i < n; ++i) {
      Tensor next = Tensor::empty(x.shape(), DType::bf16, gpu());
      cuda::decode_layer(cur, w[i], freq, pos, kc2[i], vc2[i], next);
      cur = next;
    }
    EXPECT_EQ(stack.to_floats(), cur.to_floats()) << st.name;
    for (size_t i = 0; i < n; ++i) {
      EXPECT_TRUE(cache_rows_close(kc1[i], kc2[i], k.pos + 1, Tolerance{0.0, 0.0},
                                   fmt::format("{}: k cache of layer {}", st.name, i)));
      EXPECT_TRUE(cache_rows_close(vc1[i], vc2[i], k.pos + 1, Tolerance{0.0, 0.0},
                                   fmt::format("{}: v cache of layer {}", st.name, i)));
    }
  }
}

TEST(CudaDecodeLayer, TakesOnlyWhatItSupports) {
  EL_REQUIRE_GPU();
  const KernelOn kernel_on;
  const Case k{256, 4, 2, 64, 512, 64, 3};
  Rng rng(1);
  const HostLayer L = random_layer(k, DType::bf16, rng);
  const Tensor freq = ops::rope_inv_freq(k.d, 10000.f, gpu());
  // f32 activations: no kernel (the separate ops run).
  const DecodeLayerWeights w32 = weights_on(L, k, gpu(), DType::f32);
  Tensor kc = to_gpu(L.kc, DType::f32), vc = to_gpu(L.vc, DType::f32);
  EXPECT_FALSE(ops::decode_layer_is_fused(to_gpu(L.x, DType::f32), w32, freq, kc, vc));
  // Head dim 32: no kernel.
  const Case k32{256, 8, 2, 32, 512, 64, 3};
  const HostLayer L32 = random_layer(k32, DType::bf16, rng);
  const DecodeLayerWeights w = weights_on(L32, k32, gpu(), DType::bf16);
  Tensor kb = to_gpu(L32.kc, DType::bf16), vb = to_gpu(L32.vc, DType::bf16);
  EXPECT_FALSE(ops::decode_layer_is_fused(to_gpu(L32.x, DType::bf16), w,
                                          ops::rope_inv_freq(32, 10000.f, gpu()), kb, vb));
}

TEST(CudaDecodeLayer, PositionPastTheCacheIsReported) {
  EL_REQUIRE_GPU();
  const KernelOn kernel_on;
  const Case k{256, 4, 2, 64, 512, 16, 0};
  Rng rng(3);
  const HostLayer L = random_layer(k, DType::bf16, rng);
  const DecodeLayerWeights w = weights_on(L, k, gpu(), DType::bf16);
  Tensor kc = to_gpu(L.kc, DType::bf16), vc = to_gpu(L.vc, DType::bf16);
  const Tensor pos = Tensor::from_ints({16}, {1}).to(gpu());
  const Tensor out = ops::decode_layer(to_gpu(L.x, DType::bf16), w,
                                       ops::rope_inv_freq(k.d, 10000.f, gpu()), pos, kc, vc);
  try {
    gpu_backend().synchronize();
    ADD_FAILURE() << "no error for cache position 16 of 16";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("16"), std::string::npos) << e.what();
  }
}

// The whole model: a bf16 decode step through the one-kernel layers gives the
// logits of the full forward at that position; quantized (int4 g64 RTN and
// int8), the same for the quantized model.
class CudaDecodeLayerModel : public ::testing::TestWithParam<int> {};

TEST_P(CudaDecodeLayerModel, DecodeLogitsEqualFullForward) {
  EL_REQUIRE_GPU();
  const KernelOn kernel_on;
  const int bits = GetParam();
  const ModelCard card = parse_model_card(R"(name: fused_decode
n_layer: 3
d_model: 256
n_head: 4
n_kv_head: 2
d_ff: 512
vocab_size: 300
max_seq_len: 64
)",
                                          "fused.yaml")
                             .value();
  auto m = DecoderLM::create(card, gpu(), 3, DType::bf16).value();
  Rng rng(4);
  for (auto& p : m->parameters()) {
    Tensor t = p.tensor;
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, 0.08f);
  }
  const std::vector<int32_t> ids = {3, 17, 42, 99, 7, 250, 11};
  const int64_t n = static_cast<int64_t>(ids.size());
  NoGrad no_grad;
  if (bits != 16) {
    quant::QuantizeOptions qo;
    qo.spec = {bits, 64, bits == 8};
    ASSERT_TRUE(quant::quantize_model(*m, qo).ok());
  }
  const Tensor full = m->forward(Tensor::from_ints(ids, {1, n}).to(gpu()));  // [1, n, V]
  KvCache cache = KvCache::create(card, 1, n, DType::bf16, gpu()).value();
  {
    const Tensor x = Tensor::empty({1, 1, card.d_model}, DType::bf16, gpu());
    EXPECT_TRUE(m->decode_layers_fused(x, cache)) << bits;
  }
  const std::vector<int32_t> prompt(ids.begin(), ids.end() - 2);
  m->forward_cached(Tensor::from_ints(prompt, {1, n - 2}).to(gpu()), cache, {int32_t(n - 3)});
  cache.advance(static_cast<int32_t>(n - 2));
  for (int64_t t = n - 2; t < n; ++t) {
    const Tensor step = Tensor::from_ints({ids[static_cast<size_t>(t)]}, {1, 1}).to(gpu());
    const Tensor logits = m->forward_cached(step, cache);
    cache.advance(1);
    const std::vector<float> f = full.to_floats();
    const int64_t v = card.vocab_size;
    const std::vector<float> row(f.begin() + t * v, f.begin() + (t + 1) * v);
    EXPECT_TRUE(close_to(logits, Tensor::from_floats(row, {1, 1, v}), tol(DType::bf16),
                         fmt::format("bits {}: decode logits at position {}", bits, t), 2.0));
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, CudaDecodeLayerModel, ::testing::Values(16, 8, 4));

}  // namespace
}  // namespace el::test
