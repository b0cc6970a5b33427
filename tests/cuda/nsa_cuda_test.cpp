// nsa_cuda_test.cpp — the NSA (native sparse attention) kernels of the CUDA
// backend (src/cuda/cuda_nsa*.cu) against the CPU backend (the reference):
//  * compressed and sparse branches, forward (out, lse) and backward (dq, dk,
//    dv), f32 / bf16 / f16, head dims 64 and 128 (tensor cores) and 40
//    (SIMT), GQA groups 1 / 2 / 7, odd T, T not a multiple of the blocks,
//    select blocks not a multiple of the kernels' 32-key chunks, q_offset > 0
//    (generation recompute), selection only / window only / both, block
//    lists with -1 padding and duplicates, T > 1024 (the key-major
//    backward split over position ranges);
//  * block selection on well-separated random scores (a row may differ only
//    on a near-tie: at most 1% of the rows);
//  * the limit case: every block selected, or a window >= T, equals full
//    causal attention (ops' attention kernels on the GPU), forward and backward;
//  * the gated sum, forward and backward;
//  * a two-layer NSA decoder (DecoderLM, attention: nsa) on the GPU against
//    the same weights on the CPU: logits and every parameter gradient;
//  * bad input: an unsupported head dim and a selection past shared memory.
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "cuda_model_util.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/ops.h"

namespace el::test {
namespace {

double max_abs(const Tensor& t) {
  double m = 0;
  for (float x : t.to_floats()) m = std::max(m, std::abs(double(x)));
  return m;
}

// Each query's own block plus random earlier ones, -1 padding, duplicates.
Tensor random_blocks(Rng& rng, int64_t B, int64_t Hkv, int64_t T, int64_t n, int64_t sb,
                     int64_t q_offset) {
  std::vector<int32_t> out(static_cast<size_t>(B * Hkv * T * n), -1);
  for (int64_t r = 0; r < B * Hkv; ++r)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t jt = (q_offset + t) / sb;
      int32_t* row = out.data() + (r * T + t) * n;
      row[0] = static_cast<int32_t>(jt);
      for (int64_t i = 1; i < n; ++i) {
        const int64_t u = static_cast<int64_t>(rng.below(static_cast<uint64_t>(jt + 2))) - 1;
        row[i] = static_cast<int32_t>(std::min(u, jt));  // -1 .. jt, repeats allowed
      }
    }
  return Tensor::from_ints(out, {B, Hkv, T, n});
}

struct Branch {
  int64_t B, T, H, Hkv, D;
  bool compressed;
  int64_t l, d;          // compressed token geometry
  int64_t sb, n, w;      // sparse: select block, entries (0 = none), window
  int64_t q_offset;
  std::string name() const {
    return compressed ? fmt::format("cmp B{} T{} H{} Hkv{} D{} l{} d{} off{}", B, T, H, Hkv, D, l,
                                    d, q_offset)
                      : fmt::format("sparse B{} T{} H{} Hkv{} D{} sb{} n{} w{} off{}", B, T, H,
                                    Hkv, D, sb, n, w, q_offset);
  }
};

void check_branch(const Branch& c, DType dt, uint64_t seed) {
  const std::string what = c.name() + " " + dtype_name(dt);
  Rng rng(seed);
  const int64_t S = c.q_offset + c.T;
  const int64_t keys = c.compressed ? (S - c.l) / c.d + 1 : S;
  const Shape qs{c.B, c.T, c.H, c.D}, ks{c.B, keys, c.Hkv, c.D}, ls{c.B, c.H, c.T};
  const Tensor q = random_host(qs, rng, dt), k = random_host(ks, rng, dt),
               v = random_host(ks, rng, dt), dout = random_host(qs, rng, dt);
  const Tensor blocks = c.n > 0 ? random_blocks(rng, c.B, c.Hkv, c.T, c.n, c.sb, c.q_offset)
                                : Tensor();
  const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
  auto run = [&](Backend& be, const Tensor& q_, const Tensor& k_, const Tensor& v_,
                 const Tensor& dout_, const Tensor& bl, Tensor& out, Tensor& lse, Tensor& dq,
                 Tensor& dk, Tensor& dv) {
    if (c.compressed) {
      be.nsa_compressed_attention_forward(q_, k_, v_, scale, c.l, c.d, c.q_offset, out, lse);
      be.nsa_compressed_attention_backward(dout_, q_, k_, v_, out, lse, scale, c.l, c.d,
                                           c.q_offset, dq, dk, dv);
    } else {
      be.nsa_sparse_attention_forward(q_, k_, v_, bl, c.sb, c.w, scale, c.q_offset, out, lse);
      be.nsa_sparse_attention_backward(dout_, q_, k_, v_, bl, out, lse, c.sb, c.w, scale,
                                       c.q_offset, dq, dk, dv);
    }
  };
  Tensor r_out = Tensor::empty(qs), r_lse = Tensor::empty(ls), r_dq = Tensor::empty(qs),
         r_dk = Tensor::empty(ks), r_dv = Tensor::empty(ks);
  run(cpu_backend(), q, k, v, dout, blocks, r_out, r_lse, r_dq, r_dk, r_dv);

  Tensor out = poisoned(qs, dt), lse = poisoned(ls, DType::f32), dq = poisoned(qs, dt),
         dk = poisoned(ks, dt), dv = poisoned(ks, dt);
  run(gpu_backend(), to_gpu(q, dt), to_gpu(k, dt), to_gpu(v, dt), to_gpu(dout, dt),
      blocks.defined() ? to_gpu(blocks) : Tensor(), out, lse, dq, dk, dv);
  gpu_backend().synchronize();
  expect_attention_matches({out, lse, dq, dk, dv}, {r_out, r_lse, r_dq, r_dk, r_dv}, dt, what);
}

const DType kDtypes[] = {DType::f32, DType::bf16, DType::f16};

TEST(NsaCuda, CompressedBranchMatchesCpu) {
  EL_REQUIRE_GPU();
  const Branch cases[] = {
      {2, 77, 4, 2, 64, true, 16, 8, 0, 0, 0, 0},     // overlapping tokens, ragged tail
      {1, 130, 14, 2, 128, true, 32, 32, 0, 0, 0, 0},  // GQA 7, D 128
      {1, 19, 7, 1, 64, true, 16, 16, 0, 0, 0, 50},    // q_offset: positions 50..68
      {1, 33, 2, 1, 40, true, 4, 2, 0, 0, 0, 0},       // D 40: SIMT path
      {1, 200, 2, 2, 64, true, 8, 4, 0, 0, 0, 0},      // GQA 1, many tokens
      {1, 1100, 14, 2, 64, true, 64, 64, 0, 0, 0, 0},  // T > 1024: split key-major pass
  };
  uint64_t seed = 1;
  for (const Branch& c : cases)
    for (DType dt : kDtypes) check_branch(c, dt, seed++);
}

TEST(NsaCuda, SparseBranchMatchesCpu) {
  EL_REQUIRE_GPU();
  const Branch cases[] = {
      {2, 77, 4, 2, 64, false, 0, 0, 16, 3, 0, 0},     // selection only
      {1, 130, 7, 1, 64, false, 0, 0, 16, 0, 33, 0},   // window only, GQA 7
      {1, 91, 2, 2, 128, false, 0, 0, 16, 3, 20, 0},   // both, GQA 1, D 128
      {1, 37, 14, 2, 64, false, 0, 0, 32, 4, 40, 70},  // GQA 7, q_offset 70
      {1, 101, 4, 2, 64, false, 0, 0, 24, 2, 0, 0},    // select block 24 (not a chunk multiple)
      {1, 300, 7, 1, 128, false, 0, 0, 64, 4, 0, 0},   // the authors' blocks, selection
      {1, 300, 7, 1, 128, false, 0, 0, 64, 0, 128, 0},  // and window
      {1, 50, 4, 2, 40, false, 0, 0, 8, 2, 5, 0},      // D 40: SIMT path
      {2, 45, 6, 2, 64, false, 0, 0, 4, 5, 7, 3},      // tiny blocks (many per 64 keys)
      {1, 1100, 7, 1, 64, false, 0, 0, 64, 4, 0, 0},   // T > 1024: split key-major pass
      // Window only over a whole sequence runs the flash kernels with a window,
      // forward and backward (cuda_nsa.cu window_as_flash; attention_bwd.cu kWin):
      // a band across many tiles, an odd window with q_offset and batch 2, the
      // diagonal alone, the SIMT fallback (D 40: the NSA kernels backward).
      {1, 1100, 14, 2, 64, false, 0, 0, 64, 0, 128, 0},
      {2, 333, 6, 3, 128, false, 0, 0, 16, 0, 77, 40},
      {1, 200, 2, 2, 64, false, 0, 0, 16, 0, 1, 0},
      {1, 70, 4, 1, 40, false, 0, 0, 8, 0, 9, 0},
  };
  uint64_t seed = 100;
  for (const Branch& c : cases)
    for (DType dt : kDtypes) check_branch(c, dt, seed++);
}

// Selection on the GPU against the CPU, each from its own compressed lse.
void check_selection(int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t l,
                     int64_t d, int64_t sb, int64_t n, int64_t q_offset, DType dt, uint64_t seed) {
  const std::string what = fmt::format("select B{} T{} H{} Hkv{} D{} l{} d{} sb{} n{} off{} {}", B,
                                       T, H, Hkv, D, l, d, sb, n, q_offset, dtype_name(dt));
  Rng rng(seed);
  const int64_t nc = (q_offset + T - l) / d + 1;
  const Tensor q = random_host({B, T, H, D}, rng, dt, 1.5f);
  const Tensor kc = random_host({B, nc, Hkv, D}, rng, dt, 1.5f);
  const Tensor vc = random_host({B, nc, Hkv, D}, rng, dt);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({B, H, T});
  cpu_backend().nsa_compressed_attention_forward(q, kc, vc, scale, l, d, q_offset, out, lse);
  Tensor want = Tensor::empty({B, Hkv, T, n}, DType::i32);
  cpu_backend().nsa_select_blocks(q, kc, lse, scale, l, d, sb, q_offset, want);

  const Tensor gq = to_gpu(q, dt), gkc = to_gpu(kc, dt), gvc = to_gpu(vc, dt);
  Tensor gout = Tensor::empty(q.shape(), dt, gpu()), glse = Tensor::empty({B, H, T}, DType::f32, gpu());
  gpu_backend().nsa_compressed_attention_forward(gq, gkc, gvc, scale, l, d, q_offset, gout, glse);
  Tensor got = Tensor::empty({B, Hkv, T, n}, DType::i32, gpu());
  gpu_backend().nsa_select_blocks(gq, gkc, glse, scale, l, d, sb, q_offset, got);
  const Tensor host = got.to(Device::cpu());
  const int32_t* g = host.data<int32_t>();
  const int32_t* w = want.data<int32_t>();
  int64_t bad = 0;
  const int64_t rows = B * Hkv * T;
  for (int64_t r = 0; r < rows; ++r) {
    bool same = true;
    for (int64_t i = 0; i < n; ++i) same &= g[r * n + i] == w[r * n + i];
    if (!same) {
      ++bad;
      // Each row still holds the own block, ascending and -1 padded.
      const int64_t t = r % T, jt = (q_offset + t) / sb;
      bool own = false;
      for (int64_t i = 0; i < n; ++i) {
        own |= g[r * n + i] == jt;
        if (i > 0 && g[r * n + i] >= 0) {
          EXPECT_LT(g[r * n + i - 1], g[r * n + i]) << what;
        }
      }
      EXPECT_TRUE(own) << what << " row " << r;
    }
  }
  EXPECT_LE(bad, std::max<int64_t>(1, rows / 100)) << what << ": rows differing from the CPU";
}

TEST(NsaCuda, SelectionMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType dt : kDtypes) {
    check_selection(2, 40, 4, 2, 64, 4, 4, 4, 3, 0, dt, seed++);     // l = l' = d
    check_selection(1, 45, 4, 1, 64, 4, 2, 8, 2, 0, dt, seed++);     // overlapping tokens
    check_selection(1, 6, 14, 2, 64, 4, 2, 8, 3, 30, dt, seed++);    // q_offset, GQA 7
    check_selection(1, 700, 14, 2, 64, 64, 64, 64, 4, 0, dt, seed++);  // the authors' defaults
    check_selection(1, 333, 6, 2, 40, 16, 8, 32, 16, 0, dt, seed++);   // n > available blocks
    check_selection(1, 300, 12, 2, 128, 64, 64, 64, 4, 0, dt, seed++);  // GQA 6, D 128
    check_selection(2, 150, 16, 2, 64, 16, 16, 16, 4, 0, dt, seed++);   // GQA 8
    check_selection(1, 150, 18, 2, 64, 16, 16, 16, 4, 0, dt, seed++);   // GQA 9
  }
}

// Every block selected (ascending, -1 padded) or a window >= T: both sparse
// branches are full causal attention.
TEST(NsaCuda, LimitCaseEqualsCausalAttention) {
  EL_REQUIRE_GPU();
  const int64_t B = 1, T = 150, H = 14, Hkv = 2, D = 64, sb = 64, n = 4;
  for (DType dt : {DType::f32, DType::bf16}) {
    Rng rng(dt == DType::f32 ? 41 : 42);
    const Shape qs{B, T, H, D}, ks{B, T, Hkv, D};
    const Tensor q = to_gpu(random_host(qs, rng, dt), dt), k = to_gpu(random_host(ks, rng, dt), dt),
                 v = to_gpu(random_host(ks, rng, dt), dt), dy = to_gpu(random_host(qs, rng, dt), dt);
    std::vector<int32_t> bl(static_cast<size_t>(B * Hkv * T * n), -1);
    for (int64_t r = 0; r < B * Hkv; ++r)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j <= t / sb; ++j) bl[static_cast<size_t>((r * T + t) * n + j)] = int32_t(j);
    const Tensor blocks = to_gpu(Tensor::from_ints(bl, {B, Hkv, T, n}));
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    Backend& be = gpu_backend();
    Tensor f_out = Tensor::empty(qs, dt, gpu()), f_lse = Tensor::empty({B, H, T}, DType::f32, gpu());
    Tensor f_dq = Tensor::empty(qs, dt, gpu()), f_dk = Tensor::empty(ks, dt, gpu()),
           f_dv = Tensor::empty(ks, dt, gpu());
    be.attention_forward(q, k, v, scale, true, f_out, f_lse);
    be.attention_backward(dy, q, k, v, f_out, f_lse, scale, true, f_dq, f_dk, f_dv);
    for (int mode = 0; mode < 2; ++mode) {
      const std::string what = fmt::format("{} {}", mode == 0 ? "all blocks" : "full window",
                                           dtype_name(dt));
      const Tensor bt = mode == 0 ? blocks : Tensor();
      const int64_t w = mode == 0 ? 0 : T;
      Tensor out = poisoned(qs, dt), lse = poisoned({B, H, T}, DType::f32), dq = poisoned(qs, dt),
             dk = poisoned(ks, dt), dv = poisoned(ks, dt);
      be.nsa_sparse_attention_forward(q, k, v, bt, sb, w, scale, 0, out, lse);
      be.nsa_sparse_attention_backward(dy, q, k, v, bt, out, lse, sb, w, scale, 0, dq, dk, dv);
      be.synchronize();
      expect_attention_matches({out, lse, dq, dk, dv}, {f_out, f_lse, f_dq, f_dk, f_dv}, dt,
                               what);
    }
  }
}

TEST(NsaCuda, GateCombineMatchesCpu) {
  EL_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType dt : kDtypes) {
    for (const auto& [B, T, H, D] : {std::array<int64_t, 4>{2, 7, 3, 64},
                                     std::array<int64_t, 4>{1, 33, 14, 5}}) {
      Rng rng(seed++);
      const Shape bs{B, T, H, D}, gs{B, T, 3 * H};
      const Tensor g = random_host(gs, rng, dt, 2.f), a = random_host(bs, rng, dt),
                   s = random_host(bs, rng, dt), w = random_host(bs, rng, dt),
                   dy = random_host(bs, rng, dt);
      Tensor r_out = Tensor::empty(bs), r_dg = Tensor::empty(gs), r_da = Tensor::empty(bs),
             r_ds = Tensor::empty(bs), r_dw = Tensor::empty(bs);
      cpu_backend().nsa_gate_combine_forward(g, a, s, w, r_out);
      cpu_backend().nsa_gate_combine_backward(dy, g, a, s, w, r_dg, r_da, r_ds, r_dw);
      const Tensor gg = to_gpu(g, dt), ga = to_gpu(a, dt), gs2 = to_gpu(s, dt),
                   gw = to_gpu(w, dt), gdy = to_gpu(dy, dt);
      Tensor out = poisoned(bs, dt), dg = poisoned(gs, dt), da = poisoned(bs, dt),
             ds = poisoned(bs, dt), dw = poisoned(bs, dt);
      gpu_backend().nsa_gate_combine_forward(gg, ga, gs2, gw, out);
      gpu_backend().nsa_gate_combine_backward(gdy, gg, ga, gs2, gw, dg, da, ds, dw);
      gpu_backend().synchronize();
      const std::string what = fmt::format("gate B{} T{} H{} D{} {}", B, T, H, D, dtype_name(dt));
      EXPECT_TRUE(close_to(out, r_out, tol(dt), what + " out"));
      EXPECT_TRUE(close_to(dg, r_dg, tol(dt), what + " dgates", 2.0));
      EXPECT_TRUE(close_to(da, r_da, tol(dt), what + " do_cmp"));
      EXPECT_TRUE(close_to(ds, r_ds, tol(dt), what + " do_slc"));
      EXPECT_TRUE(close_to(dw, r_dw, tol(dt), what + " do_win"));
    }
  }
}

// ---- a whole NSA decoder -----------------------------------------------------------

ModelCard nsa_card(int64_t select_count) {
  const std::string yaml = fmt::format(
      "name: nsa-cuda\nn_layer: 2\nd_model: 256\nn_head: 4\nn_kv_head: 2\nd_ff: 128\n"
      "vocab_size: 64\nmax_seq_len: 128\nattention: nsa\nnsa_window: 16\n"
      "nsa_compress_block: 16\nnsa_compress_stride: 8\nnsa_select_block: 16\n"
      "nsa_select_count: {}\n",
      select_count);
  return test_card(yaml, "nsa-cuda.yaml");
}

// f32 (SIMT kernels, 3 selected blocks of up to 7) and bf16 (tensor cores,
// every block selected so that rounding cannot flip a near-tie selection).
TEST(NsaCuda, DecoderForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (const auto& [dt, n] : {std::pair<DType, int64_t>{DType::f32, 3}, {DType::bf16, 8}}) {
    const ModelCard card = nsa_card(n);
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 17).value();
    const Tensor ids = ids_tensor(2, 97, card.vocab_size, 1);
    const Tensor targets = ids_tensor(2, 97, card.vocab_size, 2);
    Tensor ref_logits;
    const std::vector<Tensor> ref = grads_of(*cpu_model, ids, targets, &ref_logits);
    auto gpu_model = copy_model(*cpu_model, gpu(), dt);
    Tensor logits;
    const std::vector<Tensor> got = grads_of(*gpu_model, ids, targets, &logits);
    const std::string what = dtype_name(dt);
    const double fwd = dt == DType::f32 ? 1e-4 : 3e-2, bwd = dt == DType::f32 ? 1e-3 : 8e-2;
    EXPECT_LT(relative_error(logits, ref_logits), fwd) << what << " logits";
    const auto& params = cpu_model->parameters();
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(got[i].defined(), ref[i].defined()) << params[i].name;
      if (!ref[i].defined()) continue;
      // compress_k.pos adds one vector to every compressed key (the
      // compression is linear), so it shifts each query's compressed scores
      // by a constant: softmax ignores that and its gradient is zero in exact
      // arithmetic; both sides are rounding noise, compared absolutely.
      if (params[i].name.find("compress_k.pos") != std::string::npos) {
        EXPECT_LT(max_abs(got[i]), dt == DType::f32 ? 1e-4 : 1e-2) << what << " grad " << params[i].name;
        continue;
      }
      EXPECT_LT(relative_error(got[i], ref[i]), bwd) << what << " grad " << params[i].name;
    }
  }
}

TEST(NsaCuda, BadInputIsReported) {
  EL_REQUIRE_GPU();
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Rng rng(9);
  const Tensor q = to_gpu(random_host({1, 4, 2, 300}, rng, DType::f32));
  const Tensor k = to_gpu(random_host({1, 4, 2, 300}, rng, DType::f32));
  EXPECT_NE(message([&] { ops::nsa_sparse_attention(q, k, k, Tensor(), 4, 2, 0.f); })
                .find("head dim 300"),
            std::string::npos);
  // A selection whose per-block scores do not fit in shared memory.
  const Tensor q1 = to_gpu(random_host({1, 1, 1, 64}, rng, DType::f32));
  const Tensor kc = to_gpu(random_host({1, 1, 1, 64}, rng, DType::f32));
  Tensor lse = Tensor::zeros({1, 1, 1}, DType::f32, gpu());
  Tensor blocks = Tensor::empty({1, 1, 1, 2}, DType::i32, gpu());
  EXPECT_NE(message([&] {
              gpu_backend().nsa_select_blocks(q1, kc, lse, 0.125f, 1, 1, 1, 60000, blocks);
            }).find("shared memory"),
            std::string::npos);
}

}  // namespace
}  // namespace el::test
