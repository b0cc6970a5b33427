// mamba_cuda_test.cpp — the Mamba-1 kernels of the CUDA backend
// (src/cuda/cuda_mamba.cu) against the CPU backend (the reference):
//  * the selective scan forward (y) and backward (du, ddelta, dz, dA_log,
//    dB, dC, dD, ddelta_bias), f32 and bf16: channels not a multiple of the
//    blocks' 16 / 32, T across several 128-step checkpoint chunks and not a
//    multiple of the 16-step groups, N = 1, 5, 12, 16, 24, 40, 64, 100 and
//    256 (every lanes-per-channel / states-per-lane layout of the scan;
//    EL_MAMBA_SCAN_BWD_BLOCKS=1 runs the one-block-per-SM backward, the
//    default three where it fits),
//    T = 1; with the time split into segments (cuda_mamba_scan_v2.cuh): the
//    default heuristic, off, and forced counts (segments of one or several
//    checkpoint chunks, T past the last chunk's end not a chunk multiple);
//  * the generation form: from a random state, rows stopping at `last`;
//  * the conv with SiLU (K = 1, 3, 4, with and without bias), forward,
//    backward and the cached form with its state update;
//  * the column copy of split_columns;
//  * a two-layer Mamba model (DecoderLM, block: mamba) on the GPU against the
//    same weights on the CPU: logits and every parameter gradient, f32 and
//    bf16; generation on the GPU (prefill + decode) against the full forward;
//  * bad input: a state size past the kernels' 256.
// Skipped where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/tape.h"
#include "cuda_model_util.h"
#include "cuda_test_util.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/model_card.h"
#include "ops/ops.h"

// The scan's segment setting (src/cuda/cuda_mamba.cuh, a CUDA-only header):
// -1 auto, 0 off, n forced; returns the setting before.
namespace el::cuda::mamba {
int scan_set_segments(int n);
}

namespace el::test {
namespace {

// Sets the scan's segments for a scope, then restores the setting.
struct SegmentsScope {
  int old;
  explicit SegmentsScope(int n) : old(cuda::mamba::scan_set_segments(n)) {}
  ~SegmentsScope() { cuda::mamba::scan_set_segments(old); }
};

// Budgets of the relative (L2) error: f32 differs by summation order only;
// bf16 outputs are rounded (2^-9 relative) on the GPU and not on the CPU.
double fwd_budget(DType dt) { return dt == DType::f32 ? 1e-5 : 8e-3; }
double bwd_budget(DType dt) { return dt == DType::f32 ? 1e-4 : 1.5e-2; }

struct ScanCase {
  int64_t B, T, I, N;
  // delta_bias - 3 (dt ~ 0.07, Mamba's init range): states decay slowly enough
  // that what one segment carries into the next shows in y and the gradients
  // (at the default scales it has decayed below f32's precision within a chunk).
  bool slow = false;
  std::string name() const {
    return fmt::format("B{} T{} I{} N{}{}", B, T, I, N, slow ? " slow" : "");
  }
};

// The scan's inputs as f32 host tensors rounded through dt: u, delta, A_log,
// B, C, D, z, delta_bias (ops.h mamba_scan), at the ops tests' scales.
std::vector<Tensor> scan_inputs(const ScanCase& c, Rng& rng, DType dt) {
  Tensor al = random_host({c.I, c.N}, rng, DType::f32, 0.3f);
  std::vector<float> v = al.to_floats();
  for (int64_t d = 0; d < c.I; ++d)
    for (int64_t n = 0; n < c.N; ++n) v[d * c.N + n] += std::log(static_cast<float>(n + 1));
  auto delta_bias = [&] {  // (drawn last, as before the slow cases)
    std::vector<float> b = random_host({c.I}, rng, DType::f32, 0.5f).to_floats();
    for (float& x : b) x -= c.slow ? 3.f : 0.f;
    return round_to(Tensor::from_floats(b, {c.I}), dt);
  };
  return {random_host({c.B, c.T, c.I}, rng, dt),
          random_host({c.B, c.T, c.I}, rng, dt),
          round_to(Tensor::from_floats(v, {c.I, c.N}), dt),
          random_host({c.B, c.T, c.N}, rng, dt),
          random_host({c.B, c.T, c.N}, rng, dt),
          random_host({c.I}, rng, dt),
          random_host({c.B, c.T, c.I}, rng, dt),
          delta_bias()};
}


// The long cases span several checkpoint chunks (128 steps by default): the
// segmented passes run there.
const std::vector<ScanCase> kScanCases = {
    {2, 37, 20, 16},  {1, 300, 33, 5},   {2, 130, 16, 40}, {1, 21, 3, 256},
    {1, 1, 7, 1},     {3, 129, 18, 16},  {1, 260, 70, 64}, {2, 60, 36, 100},
    {1, 150, 40, 12}, {1, 140, 40, 24},  {1, 1000, 40, 16, true}, {2, 517, 33, 5, true},
    {1, 768, 20, 64}, {1, 900, 130, 16, true}, {1, 300, 24, 40, true}};
// Segment settings each case runs under: the default (auto; several
// segments at these small grids), off, and forced 2, 3 and 1000 (clamped to
// the chunks: one chunk a segment).
constexpr int kSegmentSettings[] = {-1, 0, 2, 3, 1000};

TEST(MambaCuda, ScanForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const ScanCase& c : kScanCases) {
      const std::string what = c.name() + " " + dtype_name(dt);
      Rng rng(31 + static_cast<uint64_t>(c.T * 7 + c.N));
      const std::vector<Tensor> in = scan_inputs(c, rng, dt);
      const Tensor dy = random_host({c.B, c.T, c.I}, rng, dt);
      // CPU reference in f32 on the rounded inputs.
      Backend& cb = cpu_backend();
      Tensor y_ref = Tensor::empty(in[0].shape()), none, no_ckpt;
      cb.mamba_scan_forward(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], Tensor(), none,
                            y_ref, no_ckpt);
      std::vector<Tensor> ref = {Tensor::empty(in[0].shape()), Tensor::empty(in[1].shape()),
                                 Tensor::empty(in[2].shape()), Tensor::empty(in[3].shape()),
                                 Tensor::empty(in[4].shape()), Tensor::empty(in[5].shape()),
                                 Tensor::empty(in[6].shape()), Tensor::empty(in[7].shape())};
      cb.mamba_scan_backward(dy, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], Tensor(),
                             ref[0], ref[1], ref[2], ref[3], ref[4], ref[5], ref[6], ref[7]);
      // GPU: forward with checkpoints, then the backward from them, per
      // segment setting (one only where T is a single chunk).
      Backend& gb = gpu_backend();
      std::vector<Tensor> g;
      for (const Tensor& t : in) g.push_back(to_gpu(t, dt));
      const Tensor gdy = to_gpu(dy, dt);
      const int64_t L = gb.mamba_scan_chunk();
      ASSERT_GT(L, 0);
      for (const int segs : kSegmentSettings) {
        if (segs != -1 && c.T <= L) continue;
        const SegmentsScope scope(segs);
        const std::string at = fmt::format("{} segments {}", what, segs);
        Tensor ckpt = poisoned({c.B, c.I, (c.T + L - 1) / L, c.N}, DType::f32);
        Tensor y = poisoned(in[0].shape(), dt), gnone;
        gb.mamba_scan_forward(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], Tensor(), gnone, y,
                              ckpt);
        EXPECT_LT(relative_error(y.to(Device::cpu()), y_ref), fwd_budget(dt)) << at << " y";
        Tensor du = poisoned(in[0].shape(), dt), ddelta = poisoned(in[1].shape(), dt),
               dz = poisoned(in[6].shape(), dt);
        Tensor dA = poisoned(in[2].shape(), DType::f32), dB = poisoned(in[3].shape(), DType::f32),
               dC = poisoned(in[4].shape(), DType::f32), dD = poisoned(in[5].shape(), DType::f32),
               dbias = poisoned(in[7].shape(), DType::f32);
        gb.mamba_scan_backward(gdy, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], ckpt, du,
                               ddelta, dA, dB, dC, dD, dz, dbias);
        const std::pair<const char*, const Tensor*> got[] = {
            {"du", &du}, {"ddelta", &ddelta}, {"dA_log", &dA}, {"dB", &dB},
            {"dC", &dC}, {"dD", &dD},         {"dz", &dz},     {"ddelta_bias", &dbias}};
        for (size_t i = 0; i < std::size(got); ++i) {
          EXPECT_LT(relative_error(got[i].second->to(Device::cpu()), ref[i]), bwd_budget(dt))
              << at << " " << got[i].first;
        }
      }
    }
  }
}

TEST(MambaCuda, ScanFromAStateStopsAtLast) {
  EL_REQUIRE_GPU();
  for (const ScanCase& c : {ScanCase{3, 45, 19, 16}, ScanCase{3, 150, 37, 5}}) {
    Rng rng(5);
    const std::vector<Tensor> in = scan_inputs(c, rng, DType::f32);
    const Tensor state0 = random_host({c.B, c.I, c.N}, rng, DType::f32);
    const Tensor last = Tensor::from_ints({static_cast<int32_t>(c.T - 1), 0, 17}, {c.B});
    Tensor s_ref = state0.clone(), y_ref = Tensor::empty(in[0].shape()), no_ckpt;
    cpu_backend().mamba_scan_forward(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], last,
                                     s_ref, y_ref, no_ckpt);
    std::vector<Tensor> g;
    for (const Tensor& t : in) g.push_back(to_gpu(t));
    Tensor s = to_gpu(state0), y = poisoned(in[0].shape(), DType::f32), gno;
    const SegmentsScope scope(3);  // (the generation form runs unsegmented)
    gpu_backend().mamba_scan_forward(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], to_gpu(last),
                                     s, y, gno);
    EXPECT_LT(relative_error(y.to(Device::cpu()), y_ref), 1e-5) << c.name() << " y";
    EXPECT_LT(relative_error(s.to(Device::cpu()), s_ref), 1e-5) << c.name() << " state";
  }
}

TEST(MambaCuda, ConvMatchesCpu) {
  EL_REQUIRE_GPU();
  for (const DType dt : {DType::f32, DType::bf16}) {
    // K 4 runs the register-window kernels (chunks of 32 / 64 steps: T 150
    // crosses several, the last one partial), K 3 and 1 the general ones.
    for (const auto& [K, bias, T] : {std::tuple<int64_t, bool, int64_t>{4, true, 23},
                                     {4, false, 150}, {4, true, 150}, {3, false, 23},
                                     {3, true, 150}, {1, true, 23}}) {
      const int64_t B = 2, I = 37;
      const std::string what = fmt::format("K{} bias{} T{} {}", K, bias, T, dtype_name(dt));
      Rng rng(7 + static_cast<uint64_t>(K));
      const Tensor x = random_host({B, T, I}, rng, dt), w = random_host({I, K}, rng, dt, 0.5f);
      const Tensor b = bias ? random_host({I}, rng, dt, 0.5f) : Tensor();
      const Tensor dout = random_host({B, T, I}, rng, dt);
      Tensor out_ref = Tensor::empty({B, T, I}), none;
      cpu_backend().mamba_conv1d_forward(x, w, b, Tensor(), none, out_ref);
      Tensor dx_ref = Tensor::empty({B, T, I}), dw_ref = Tensor::empty({I, K}),
             db_ref = bias ? Tensor::empty({I}) : Tensor();
      cpu_backend().mamba_conv1d_backward(dout, x, w, b, dx_ref, dw_ref, db_ref);
      const Tensor gx = to_gpu(x, dt), gw = to_gpu(w, dt), gb = bias ? to_gpu(b, dt) : Tensor();
      Tensor out = poisoned({B, T, I}, dt), gnone;
      gpu_backend().mamba_conv1d_forward(gx, gw, gb, Tensor(), gnone, out);
      EXPECT_LT(relative_error(out.to(Device::cpu()), out_ref), fwd_budget(dt)) << what << " out";
      Tensor dx = poisoned({B, T, I}, dt), dw = poisoned({I, K}, DType::f32),
             db = bias ? poisoned({I}, DType::f32) : Tensor();
      gpu_backend().mamba_conv1d_backward(to_gpu(dout, dt), gx, gw, gb, dx, dw, db);
      EXPECT_LT(relative_error(dx.to(Device::cpu()), dx_ref), bwd_budget(dt)) << what << " dx";
      EXPECT_LT(relative_error(dw.to(Device::cpu()), dw_ref), bwd_budget(dt)) << what << " dw";
      if (bias) {
        EXPECT_LT(relative_error(db.to(Device::cpu()), db_ref), bwd_budget(dt)) << what << " db";
      }
      // The cached form: from a random state, rows stopping at `last`.
      if (K > 1) {
        const Tensor state0 = random_host({B, K - 1, I}, rng, DType::f32);
        const Tensor last = Tensor::from_ints({5, static_cast<int32_t>(T - 1)}, {B});
        Tensor s_ref = state0.clone(), o_ref = Tensor::empty({B, T, I});
        cpu_backend().mamba_conv1d_forward(x, w, b, last, s_ref, o_ref);
        Tensor s = to_gpu(state0), o = poisoned({B, T, I}, dt);
        gpu_backend().mamba_conv1d_forward(gx, gw, gb, to_gpu(last), s, o);
        EXPECT_LT(relative_error(o.to(Device::cpu()), o_ref), fwd_budget(dt))
            << what << " cached out";
        EXPECT_EQ(s.to(Device::cpu()).to_floats(), s_ref.to_floats()) << what << " state";
      }
    }
  }
}

TEST(MambaCuda, CopyColumnsMatchesCpu) {
  EL_REQUIRE_GPU();
  for (const DType dt : {DType::f32, DType::bf16}) {
    Rng rng(3);
    const Tensor src = random_host({5, 3, 11}, rng, dt);
    Tensor ref = Tensor::zeros({5, 3, 6}, dt), dst = to_gpu(Tensor::zeros({5, 3, 6}), dt);
    Tensor src_dt = Tensor::empty(src.shape(), dt);
    src_dt.copy_from(src);
    cpu_backend().copy_columns(src_dt, 4, ref, 1, 5);
    gpu_backend().copy_columns(to_gpu(src, dt), 4, dst, 1, 5);
    EXPECT_EQ(dst.to(Device::cpu()).to_floats(), ref.to_floats()) << dtype_name(dt);
  }
}

ModelCard mamba_card(int64_t n_state) {
  const std::string yaml = fmt::format(
      "name: m\nblock: mamba\nn_layer: 2\nd_model: 40\nvocab_size: 67\nmax_seq_len: 512\n"
      "mamba_d_state: {}\nmamba_d_conv: 4\nmamba_expand: 2\ntied_embeddings: false\n",
      n_state);
  return test_card(yaml, "m.yaml");
}

TEST(MambaCuda, DecoderForwardAndBackwardMatchCpu) {
  EL_REQUIRE_GPU();
  for (const DType dt : {DType::f32, DType::bf16}) {
    const ModelCard card = mamba_card(16);
    auto cpu_model = DecoderLM::create(card, Device::cpu(), 17).value();
    Rng rng(9);
    const Tensor ids = random_ids({2, 157}, rng, 0, static_cast<int32_t>(card.vocab_size));
    const Tensor targets = random_ids({2, 157}, rng, 0, static_cast<int32_t>(card.vocab_size));
    expect_model_matches_cpu(*cpu_model, gpu(), dt, ids, targets, dt == DType::f32 ? 1e-4 : 3e-2,
                             dt == DType::f32 ? 1e-3 : 8e-2);
  }
}

// Prefill of 9 tokens, then decode steps (the one-step recurrence) on the
// GPU, against the GPU's full forward of the whole sequence.
TEST(MambaCuda, GenerationMatchesFullForward) {
  EL_REQUIRE_GPU();
  auto model = DecoderLM::create(mamba_card(16), gpu(), 21).value();
  Rng rng(4);
  const Tensor ids = random_ids({2, 14}, rng, 0, model->card().vocab_size);
  expect_decode_matches_forward(*model, ids, 9, DType::f32, 1e-5, "mamba");
}

TEST(MambaCuda, BadInputIsReported) {
  EL_REQUIRE_GPU();
  const ScanCase c{1, 4, 3, 300};
  Rng rng(2);
  std::vector<Tensor> g;
  for (const Tensor& t : scan_inputs(c, rng, DType::f32)) g.push_back(to_gpu(t));
  Tensor y = poisoned({1, 4, 3}, DType::f32), none, no_ckpt;
  try {
    gpu_backend().mamba_scan_forward(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], Tensor(),
                                     none, y, no_ckpt);
    FAIL() << "N 300 was accepted";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("N <= 256"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace el::test
