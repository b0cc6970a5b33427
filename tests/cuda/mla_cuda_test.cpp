// mla_cuda_test.cpp — multi-head latent attention (nn/mla.h) on CUDA.
//
//  * The attention kernels at MLA's head dims against the CPU backend:
//    training attention at D 192 (128 + 64 q/k heads) and 256 (tensor-core
//    forward and two-pass backward), cached attention over one shared latent
//    row (Hkv 1, the same tensor as k and v) at D = kv_lora_rank +
//    qk_rope_head_dim = 176 / 192 / 256 / 320 / 576, odd sizes included; and
//    with the values a column range of the rows (the latent after the 64
//    RoPE columns: the tensor-core kernel's latent tiles at D 176 / 256, the
//    SIMT kernel at other offsets and widths).
//  * ops::gather_columns (Backend::sum_columns, the layouts' op) forward and
//    backward against the CPU.
//  * The MLA decoder on the GPU against the same weights on the CPU: logits
//    and every parameter gradient (f32 and bf16), at the fixtures' tiny dims
//    and at the paper's (qk 128 + 64, v 128, latent 112).
//  * ops::mla_decode_prologue (the absorbed decode's latent row + query RoPE
//    kernel) against the CPU backend at the 0.5B / 1.5B / V3 dims and odd
//    ones, f32 / bf16 / f16, one cache tensor or two, rows at different
//    positions, T > 1.
//  * The absorbed decode on the GPU (prefill, then decode steps over the
//    latent cache) against the GPU's own full forward.
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "cuda_model_util.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/mla.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// The floor of relative_error, as in tests/cuda/attention_test.cpp: it keeps
// gradients that are zero in exact arithmetic (one visible key: dq = dk = 0)
// from dividing rounding noise by rounding noise; the inputs are O(1), so
// 1e-3 per element is far below any real error.
constexpr double kFloor = 1e-6;

// ---- training attention at D 192 / 256 -----------------------------------------------
struct TrainCase {
  int64_t b, t, s, h, hkv, d;
  bool causal;
};

void check_training_attention(const TrainCase& c, DType dt, uint64_t seed) {
  const std::string what = fmt::format("B{} T{} S{} H{} Hkv{} D{} {} {}", c.b, c.t, c.s, c.h,
                                       c.hkv, c.d, c.causal ? "causal" : "full", dtype_name(dt));
  Rng rng(seed);
  const Shape qs{c.b, c.t, c.h, c.d}, ks{c.b, c.s, c.hkv, c.d}, ls{c.b, c.h, c.t};
  const Tensor q = random_host(qs, rng, dt), k = random_host(ks, rng, dt),
               v = random_host(ks, rng, dt), dout = random_host(qs, rng, dt);
  const float scale = 1.f / std::sqrt(static_cast<float>(c.d));
  Tensor r_out = Tensor::empty(qs), r_lse = Tensor::empty(ls);
  Tensor r_dq = Tensor::empty(qs), r_dk = Tensor::empty(ks), r_dv = Tensor::empty(ks);
  cpu_backend().attention_forward(q, k, v, scale, c.causal, r_out, r_lse);
  cpu_backend().attention_backward(dout, q, k, v, r_out, r_lse, scale, c.causal, r_dq, r_dk, r_dv);

  const Tensor gq = to_gpu(q, dt), gk = to_gpu(k, dt), gv = to_gpu(v, dt), gdo = to_gpu(dout, dt);
  Tensor out = poisoned(qs, dt), lse = poisoned(ls, DType::f32);
  Tensor dq = poisoned(qs, dt), dk = poisoned(ks, dt), dv = poisoned(ks, dt);
  gpu_backend().attention_forward(gq, gk, gv, scale, c.causal, out, lse);
  gpu_backend().attention_backward(gdo, gq, gk, gv, out, lse, scale, c.causal, dq, dk, dv);
  gpu_backend().synchronize();
  expect_attention_matches({out, lse, dq, dk, dv}, {r_out, r_lse, r_dq, r_dk, r_dv}, dt, what,
                           kFloor);
}

TEST(MlaCuda, TrainingAttentionAtMlaHeadDimsMatchesCpu) {
  EL_REQUIRE_GPU();
  const std::vector<TrainCase> cases = {
      {1, 1, 1, 4, 4, 192, true},       // one token
      {2, 7, 7, 4, 4, 192, true},       // T below one tile
      {1, 100, 100, 6, 1, 192, true},   // MQA
      {2, 257, 257, 6, 2, 192, true},   // GQA, partial last tiles
      {1, 130, 130, 4, 4, 192, false},  // non-causal
      {1, 100, 300, 4, 2, 192, true},   // S > T: causal offset
      {1, 16, 5, 4, 4, 192, true},      // S < T: first rows see no key
      {2, 129, 129, 4, 2, 256, true},
      {1, 70, 200, 4, 4, 256, false},
  };
  uint64_t seed = 7100;
  for (const TrainCase& c : cases) {
    for (DType dt : {DType::bf16, DType::f16, DType::f32}) check_training_attention(c, dt, seed++);
  }
}

// ---- cached attention over MLA's latent rows --------------------------------------------
struct CachedCase {
  int64_t b, t, h, d, smax;
  std::vector<int32_t> pos;
  int64_t v0 = 0, dv = 0;  // values: columns [v0, v0 + dv) (dv 0: the whole row)
};

void check_cached(const CachedCase& c, DType dt, uint64_t seed) {
  const int64_t dv = c.dv > 0 ? c.dv : c.d - c.v0;
  const std::string what = fmt::format("B{} T{} H{} D{} Smax{} values [{}, {}) {}", c.b, c.t, c.h,
                                       c.d, c.smax, c.v0, c.v0 + dv, dtype_name(dt));
  Rng rng(seed);
  const Shape qs{c.b, c.t, c.h, c.d};
  const Tensor q = random_host(qs, rng, dt);
  Tensor cache = random_host({c.b, c.smax, 1, c.d}, rng, dt);
  // NaN in every row no query may see, so a read past a row's keys fails.
  float* p = cache.data<float>();
  for (int64_t i = 0; i < c.b; ++i)
    for (int64_t s = c.pos[static_cast<size_t>(i)] + c.t; s < c.smax; ++s)
      for (int64_t j = 0; j < c.d; ++j) p[(i * c.smax + s) * c.d + j] = NAN;
  const Tensor pos = Tensor::from_ints(c.pos, {c.b});
  const float scale = 1.f / std::sqrt(192.f);  // MLA's 1/sqrt(nope + rope), not 1/sqrt(D)
  const Shape os{c.b, c.t, c.h, dv};
  Tensor ref = Tensor::empty(os);
  cpu_backend().attention_cached(q, cache, cache, pos, scale, ref, Tensor(), c.v0);
  const Tensor gcache = to_gpu(cache, dt);  // one tensor as k and v, as MlaAttention passes it
  Tensor out = poisoned(os, dt);
  gpu_backend().attention_cached(to_gpu(q, dt), gcache, gcache, to_gpu(pos), scale, out, Tensor(),
                                 c.v0);
  EXPECT_TRUE(close_to(out, ref, tol(dt), "attention_cached", 2.0)) << what;
}

TEST(MlaCuda, CachedAttentionOverLatentRowsMatchesCpu) {
  EL_REQUIRE_GPU();
  const std::vector<CachedCase> cases = {
      {2, 1, 14, 176, 517, {0, 516}},   // 0.5B MLA decode (112 + 64): SIMT
      {1, 3, 14, 176, 70, {60}},        // T 3 x G 14 = 42 rows
      {2, 1, 12, 256, 700, {699, 3}},   // 1.5B (192 + 64): tensor cores, many chunks
      {1, 4, 12, 256, 100, {90}},       // 48 rows: 3 row tiles
      {1, 1, 16, 192, 4099, {4098}},    // D 192 on tensor cores, long cache
      {2, 1, 16, 320, 333, {332, 40}},  // 3B (256 + 64): SIMT
      {1, 2, 16, 576, 300, {200}},      // DeepSeek-V3 (512 + 64): SIMT's largest
      {3, 1, 5, 328, 19, {17, 0, 9}},   // odd head count, D a multiple of 8 only
      // Values = the latent after the 64 RoPE columns ([rope | latent] rows):
      {1, 1, 14, 176, 8200, {8199}, 64, 112},    // 0.5B decode at 8K: 192-wide latent tiles
      {2, 1, 14, 176, 517, {0, 516}, 64, 112},   // rows at both ends of the cache
      {1, 3, 14, 176, 70, {60}, 64, 112},        // 42 rows: 3 row tiles
      {2, 1, 12, 256, 700, {699, 3}, 64, 192},   // 1.5B: 256-wide latent tiles
      {1, 2, 12, 256, 100, {90}, 64, 192},       // 24 rows: 2 row tiles
      {1, 1, 14, 176, 300, {299}, 64, 104},      // fewer values than the tile holds
      {2, 1, 16, 320, 333, {332, 40}, 64, 256},  // 3B: SIMT
      {3, 1, 5, 40, 19, {17, 0, 9}, 8, 24},      // another offset: SIMT
      {1, 2, 3, 30, 9, {5}, 2, 27},              // odd widths: SIMT
  };
  uint64_t seed = 7200;
  for (const CachedCase& c : cases) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) check_cached(c, dt, seed++);
  }
}

TEST(MlaCuda, CachedAttentionAboveTheLimitIsReported) {
  EL_REQUIRE_GPU();
  const Tensor q = Tensor::zeros({1, 1, 2, 584}, DType::bf16, gpu());
  const Tensor cache = Tensor::zeros({1, 4, 1, 584}, DType::bf16, gpu());
  const Tensor pos = Tensor::zeros({1}, DType::i32, gpu());
  Tensor out = Tensor::zeros({1, 1, 2, 584}, DType::bf16, gpu());
  try {
    gpu_backend().attention_cached(q, cache, cache, pos, 0.1f, out);
    FAIL() << "expected an error for head dim 584";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 584 outside [1, 576]"), std::string::npos)
        << e.what();
  }
}

// ---- gather_columns (the MLA layouts' op) ------------------------------------------------
TEST(MlaCuda, GatherColumnsForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  // 37 input columns -> 3 heads of 29: a slice, a column broadcast to every
  // head (a summed backward), zero columns, odd widths; 7 x 13 rows.
  std::vector<int64_t> cols;
  for (int h = 0; h < 3; ++h) {
    for (int j = 0; j < 20; ++j) cols.push_back(h * 5 + j);
    for (int j = 0; j < 6; ++j) cols.push_back(31 + j);
    cols.insert(cols.end(), {-1, 30, -1});
  }
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Rng rng(7300 + static_cast<int>(dt));
    const Tensor x = random_host({7, 13, 37}, rng, dt);
    const Tensor dy = random_host({7, 13, static_cast<int64_t>(cols.size())}, rng, dt);
    // Forward: each backend alone.
    const ops::ColumnMap cmap = ops::make_column_map(37, cols, Device::cpu());
    const ops::ColumnMap gmap = ops::make_column_map(37, cols, gpu());
    const Tensor ref = ops::gather_columns(x, cmap);
    const Tensor got = ops::gather_columns(to_gpu(x, dt), gmap);
    EXPECT_TRUE(close_to(got, ref, tol(dt), "gather_columns")) << dtype_name(dt);
    // Backward: the transposed map, on each backend's kernel directly.
    Tensor dx_ref = Tensor::empty(x.shape());
    cpu_backend().sum_columns(dy, cmap.bwd_offsets, cmap.bwd_idx, dx_ref);
    Tensor dx = poisoned(x.shape(), dt);
    gpu_backend().sum_columns(to_gpu(dy, dt), gmap.bwd_offsets, gmap.bwd_idx, dx);
    EXPECT_TRUE(close_to(dx, dx_ref, tol(dt), "gather_columns backward", 2.0)) << dtype_name(dt);
  }
}

// ---- the MLA decoder on the GPU --------------------------------------------------------
struct Dims {
  int q_lora, kv_lora, nope, rope, v;
};

ModelCard mla_card(const Dims& d, int n_head = 2) {
  ModelCard c;
  c.name = fmt::format("mla_q{}_kv{}_n{}_r{}_v{}", d.q_lora, d.kv_lora, d.nope, d.rope, d.v);
  c.n_layer = 1;
  c.d_model = 64;
  c.n_head = c.n_kv_head = n_head;
  c.d_ff = 64;
  c.vocab_size = 97;
  c.max_seq_len = 64;
  c.tied_embeddings = false;
  c.attention = ModelCard::Attention::mla;
  c.q_lora_rank = d.q_lora;
  c.kv_lora_rank = d.kv_lora;
  c.qk_nope_head_dim = d.nope;
  c.qk_rope_head_dim = d.rope;
  c.v_head_dim = d.v;
  EL_ENSURE(validate_model_card(c).ok(), "bad test card {}", c.name);
  return c;
}

// The paper's head dims (qk 128 + 64 -> training D 192 on tensor cores, v
// 128, latent 112 -> cache rows of 176) and the fixtures' tiny ones (SIMT).
const Dims kPaper{0, 112, 128, 64, 128};
const Dims kFixture{32, 16, 16, 8, 16};

TEST(MlaCuda, ForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (const Dims& d : {kFixture, kPaper, Dims{24, 40, 64, 64, 96}}) {
    const ModelCard card = mla_card(d);
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 17).value();
    const Tensor ids = ids_tensor(2, 37, card.vocab_size, 1);
    const Tensor targets = ids_tensor(2, 37, card.vocab_size, 2);
    Tensor ref_logits;
    const std::vector<Tensor> ref = grads_of(*cpu_model, ids, targets, &ref_logits);
    for (DType dt : {DType::f32, DType::bf16}) {
      auto gpu_model = copy_model(*cpu_model, gpu(), dt);
      Tensor logits;
      const std::vector<Tensor> got = grads_of(*gpu_model, ids, targets, &logits);
      const std::string what = card.name + " " + dtype_name(dt);
      // bf16: weights and activations rounded at every op against the f32 CPU model.
      const double fwd = dt == DType::f32 ? 1e-4 : 3e-2, bwd = dt == DType::f32 ? 1e-3 : 8e-2;
      EXPECT_LT(relative_error(logits, ref_logits, kFloor), fwd) << what << " logits";
      const auto& params = gpu_model->parameters();
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_TRUE(got[i].defined() && ref[i].defined()) << what << " " << params[i].name;
        EXPECT_LT(relative_error(got[i], ref[i], kFloor), bwd)
            << what << " grad of " << params[i].name;
      }
    }
  }
}

// Prefill of 5 tokens, then decode steps through the absorbed form over the
// latent cache, each step's logits against the full forward on the GPU.
// ---- mla_decode_prologue ---------------------------------------------------------------
struct PrologueCase {
  int64_t b, t, h, latent, rope, smax;
  std::vector<int32_t> pos;
};

// Two cache layouts: MlaAttention's (nn/mla.cpp, CacheRowLayout: RoPE pair
// i at columns (i, rope/2 + i), then the latent: a partial rotation of the
// first `rope` columns) and the full-width one it used before (pair i at
// (i, D/2 + i), the latent in the rest: frequencies over all D/2 pairs, zero
// past rope/2). D even.
std::vector<int32_t> mla_row_map(int64_t latent, int64_t rope, bool partial) {
  const int64_t d = latent + rope + ((latent + rope) & 1), first = d / 2 - rope / 2;
  const int64_t second = partial ? rope / 2 : d / 2;  // column of pair i's second half
  std::vector<int32_t> map(static_cast<size_t>(d), -1);
  for (int64_t j = 0; j < latent; ++j) {
    const int64_t col = partial ? rope + j : j < first ? rope / 2 + j : d / 2 + rope / 2 + (j - first);
    map[static_cast<size_t>(col)] = static_cast<int32_t>(j);
  }
  for (int64_t m = 0; m < rope; ++m) {
    const int64_t col = m % 2 == 0 ? m / 2 : second + m / 2;
    map[static_cast<size_t>(col)] = static_cast<int32_t>(latent + m);
  }
  return map;
}

void check_prologue(const PrologueCase& c, DType dt, bool two_caches, bool partial,
                    uint64_t seed) {
  const std::vector<int32_t> map = mla_row_map(c.latent, c.rope, partial);
  const int64_t d = static_cast<int64_t>(map.size()), sources = c.latent + c.rope;
  const std::string what =
      fmt::format("B{} T{} H{} L{} R{} D{} {} {} {}", c.b, c.t, c.h, c.latent, c.rope, d,
                  dtype_name(dt), two_caches ? "k+v" : "k", partial ? "[rope | latent]" : "full");
  Rng rng(seed);
  const Tensor packed = random_host({c.b, c.t, c.h * d + sources}, rng, dt);
  const Tensor w = random_host({c.latent}, rng, dt);
  const int64_t nf = partial ? c.rope / 2 : d / 2;
  std::vector<float> f(static_cast<size_t>(nf), 0.f);
  for (int64_t i = 0; i < c.rope / 2; ++i)
    f[static_cast<size_t>(i)] = std::pow(10000.f, -2.f * static_cast<float>(i) / c.rope);
  const Tensor freq = Tensor::from_floats(f, {nf});
  const Tensor pos = Tensor::from_ints(c.pos, {c.b});
  const Shape cs{c.b, c.smax, 1, d};
  const Tensor fill = random_host(cs, rng, dt);
  // CPU reference in dt itself (it rounds where the kernel does); the caches
  // start from the same random contents.
  auto host_as = [dt](const Tensor& x) {
    Tensor y = Tensor::empty(x.shape(), dt);
    y.copy_from(x);
    return y;
  };
  Tensor rk = host_as(fill), rv = Tensor::full(cs, 5.f, dt);
  Tensor& rv_used = two_caches ? rv : rk;
  const Tensor rq = ops::mla_decode_prologue(host_as(packed), c.h, c.latent,
                                             Tensor::from_ints(map, {d}), host_as(w), 1e-6f, freq,
                                             pos, rk, rv_used);
  Tensor gk = to_gpu(fill, dt), gv = Tensor::full(cs, 5.f, dt, gpu());
  Tensor& gv_used = two_caches ? gv : gk;
  const Tensor gq = ops::mla_decode_prologue(
      to_gpu(packed, dt), c.h, c.latent, to_gpu(Tensor::from_ints(map, {d})), to_gpu(w, dt),
      1e-6f, to_gpu(freq), to_gpu(pos), gk, gv_used);
  gpu_backend().synchronize();
  // Both round the same intermediates to dt; what differs is the norm's sum
  // order and sincosf, so one unit in the last place of dt at most.
  const Tolerance t1 = dt == DType::f32 ? Tolerance{1e-5, 1e-5}
                                        : dt == DType::bf16 ? Tolerance{8e-3, 8e-3}
                                                            : Tolerance{1e-3, 1e-3};
  EXPECT_TRUE(close_to(gq.to(Device::cpu()), rq, t1, what + " q"));
  EXPECT_TRUE(close_to(gk.to(Device::cpu()), rk, t1, what + " k_cache"));
  if (two_caches) {
    EXPECT_TRUE(close_to(gv.to(Device::cpu()), rv, t1, what + " v_cache"));
  }
}

TEST(MlaCuda, DecodePrologueMatchesCpu) {
  EL_REQUIRE_GPU();
  const std::vector<PrologueCase> cases = {
      {1, 1, 14, 112, 64, 300, {299}},      // 0.5B card: D 176, the last cache row
      {2, 1, 12, 192, 64, 50, {0, 37}},     // 1.5B: D 256, rows at different positions
      {1, 3, 16, 512, 64, 40, {20}},        // DeepSeek-V3: D 576, a 3-token prefill chunk
      {3, 2, 5, 7, 4, 9, {0, 7, 3}},        // odd latent: D 12 with a zero column
      {2, 1, 1, 3, 2, 4, {3, 1}},           // one head, tiny
  };
  uint64_t seed = 7300;
  for (const PrologueCase& c : cases) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      for (bool two : {false, true}) {
        for (bool partial : {true, false}) check_prologue(c, dt, two, partial, seed++);
      }
    }
  }
}

TEST(MlaCuda, AbsorbedDecodeMatchesFullForward) {
  EL_REQUIRE_GPU();
  // Cache rows of 176 and 256 (tensor cores: the latent value tiles), 320 and 576 (SIMT).
  for (int kv : {112, 192, 256, 512}) {
    const ModelCard card = mla_card(Dims{0, kv, 128, 64, 128}, 3);
    ASSERT_EQ(mla_cache_dim(card), kv + 64);
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 23).value();
    for (DType dt : {DType::f32, DType::bf16}) {
      auto m = copy_model(*cpu_model, gpu(), dt);
      expect_decode_matches_forward(*m, ids_tensor(2, 12, card.vocab_size, 3), 5, dt,
                                    dt == DType::f32 ? 1e-4 : 3e-2,
                                    fmt::format("kv_lora {} {}", kv, dtype_name(dt)));
    }
  }
}

}  // namespace
}  // namespace el::test
