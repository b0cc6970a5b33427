// cuda_nsa_bench.cpp — NSA attention (native sparse attention, nn/nsa.h) on
// the CUDA backend against our own full causal flash attention at the same
// shape, bf16, B 1, timed with CUDA events on the backend's stream.
//
// NSA = the kernel calls NsaAttention::attend makes, in its order:
//   forward:  compressed branch (out, lse) -> block selection -> selection
//             branch (blocks, window 0) -> window branch (no blocks, window w)
//             -> gated sum
//   backward: gated sum -> window -> selection -> compressed branch
// with the authors' defaults (window 128, compression block / stride 64,
// select block 64, 4 selected blocks). Not timed: the compression itself
// (block unfold + two small GEMMs, kc/vc are random inputs here), the
// projections, and the op layer's gradient accumulation.
// Full = Backend::attention_forward / attention_backward (causal).
// FLOPs as FlashAttention counts them, per key actually read: 4 D per
// (query head, key) forward, 2.5x that backward; NSA's key counts are the
// exact means of nsa_mean_keys (the selection's rescoring is not counted).
//
//   cuda_nsa_bench            T 4096, 8192, 16384 at D 64 (14 / 2 heads) and D 128 (12 / 2)
//   cuda_nsa_bench --quick    T 16384, D 64 only
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "cuda/cuda_backend.h"
#include "cuda_bench_util.h"
#include "ops/backend.h"

namespace {

using el::DType;
using el::Tensor;
using el::bench_util::gpu;
using el::bench_util::median_ms;  // 3 warm-up calls, then >= 10 timed calls / >= 200 ms
using el::bench_util::random_gpu;

constexpr int64_t kWindow = 128, kBlock = 64, kStride = 64, kSelBlock = 64, kSelCount = 4;

// Mean keys per query of each branch (nn/nsa.h nsa_mean_keys).
double nsa_keys(int64_t T) {
  const int64_t nc = T >= kBlock ? (T - kBlock) / kStride + 1 : 0;
  double keys = 0;
  for (int64_t t = 0; t < T; ++t) {
    keys += t >= kBlock - 1 ? std::min<int64_t>(nc, (t - kBlock + 1) / kStride + 1) : 0;
    keys += t % kSelBlock + 1 + std::min<int64_t>(kSelCount - 1, t / kSelBlock) * kSelBlock;
    keys += std::min<int64_t>(kWindow, t + 1);
  }
  return keys / static_cast<double>(T);
}

void run(int64_t T, int64_t H, int64_t Hkv, int64_t D) {
  el::Backend& be = el::backend_for(gpu());
  const DType dt = DType::bf16;
  const int64_t B = 1, nc = (T - kBlock) / kStride + 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const el::Shape qs{B, T, H, D}, ks{B, T, Hkv, D}, cs{B, nc, Hkv, D}, gs{B, T, 3 * H};
  const Tensor q = random_gpu(qs, dt, 1), k = random_gpu(ks, dt, 2), v = random_gpu(ks, dt, 3);
  const Tensor kc = random_gpu(cs, dt, 4), vc = random_gpu(cs, dt, 5), g = random_gpu(gs, dt, 6);
  const Tensor dy = random_gpu(qs, dt, 7);
  auto empty = [&](const el::Shape& s, DType t) { return Tensor::empty(s, t, gpu()); };
  Tensor o_cmp = empty(qs, dt), o_slc = empty(qs, dt), o_win = empty(qs, dt), o = empty(qs, dt);
  Tensor l_cmp = empty({B, H, T}, DType::f32), l_slc = empty({B, H, T}, DType::f32),
         l_win = empty({B, H, T}, DType::f32);
  Tensor blocks = empty({B, Hkv, T, kSelCount}, DType::i32);
  Tensor dg = empty(gs, dt), d_cmp = empty(qs, dt), d_slc = empty(qs, dt), d_win = empty(qs, dt);
  Tensor dq = empty(qs, dt), dk = empty(ks, dt), dv = empty(ks, dt), dkc = empty(cs, dt),
         dvc = empty(cs, dt);
  const Tensor none;

  auto fwd_cmp = [&] {
    be.nsa_compressed_attention_forward(q, kc, vc, scale, kBlock, kStride, 0, o_cmp, l_cmp);
  };
  auto fwd_sel = [&] {
    be.nsa_select_blocks(q, kc, l_cmp, scale, kBlock, kStride, kSelBlock, 0, blocks);
  };
  auto fwd_slc = [&] {
    be.nsa_sparse_attention_forward(q, k, v, blocks, kSelBlock, 0, scale, 0, o_slc, l_slc);
  };
  auto fwd_win = [&] {
    be.nsa_sparse_attention_forward(q, k, v, none, kSelBlock, kWindow, scale, 0, o_win, l_win);
  };
  auto fwd_gate = [&] { be.nsa_gate_combine_forward(g, o_cmp, o_slc, o_win, o); };
  auto bwd_gate = [&] {
    be.nsa_gate_combine_backward(dy, g, o_cmp, o_slc, o_win, dg, d_cmp, d_slc, d_win);
  };
  auto bwd_win = [&] {
    be.nsa_sparse_attention_backward(d_win, q, k, v, none, o_win, l_win, kSelBlock, kWindow, scale,
                                     0, dq, dk, dv);
  };
  auto bwd_slc = [&] {
    be.nsa_sparse_attention_backward(d_slc, q, k, v, blocks, o_slc, l_slc, kSelBlock, 0, scale, 0,
                                     dq, dk, dv);
  };
  auto bwd_cmp = [&] {
    be.nsa_compressed_attention_backward(d_cmp, q, kc, vc, o_cmp, l_cmp, scale, kBlock, kStride, 0,
                                         dq, dkc, dvc);
  };
  auto nsa_fwd = [&] {
    fwd_cmp();
    fwd_sel();
    fwd_slc();
    fwd_win();
    fwd_gate();
  };
  auto nsa_bwd = [&] {
    bwd_gate();
    bwd_win();
    bwd_slc();
    bwd_cmp();
  };
  nsa_fwd();
  be.synchronize();
  const double parts[9] = {median_ms(fwd_cmp), median_ms(fwd_sel), median_ms(fwd_slc),
                           median_ms(fwd_win), median_ms(fwd_gate), median_ms(bwd_gate),
                           median_ms(bwd_win), median_ms(bwd_slc), median_ms(bwd_cmp)};
  const double nf = median_ms(nsa_fwd), nb = median_ms(nsa_bwd);

  Tensor fo = empty(qs, dt), fl = empty({B, H, T}, DType::f32);
  auto full_fwd = [&] { be.attention_forward(q, k, v, scale, true, fo, fl); };
  auto full_bwd = [&] { be.attention_backward(dy, q, k, v, fo, fl, scale, true, dq, dk, dv); };
  full_fwd();
  be.synchronize();
  const double ff = median_ms(full_fwd), fb = median_ms(full_bwd);

  const double full_flops = 4.0 * B * H * double(T) * double(T) * D / 2.0;
  const double nsa_flops = 4.0 * B * H * double(T) * nsa_keys(T) * D;
  auto tf = [](double flops, double ms) { return flops / (ms * 1e-3) / 1e12; };
  std::printf("T %-6lld H %-3lld Hkv %-2lld D %-4lld | full fwd %8.3f ms %6.1f TF  bwd %8.3f ms "
              "%6.1f TF  f+b %8.3f ms | nsa fwd %7.3f ms %6.1f TF  bwd %7.3f ms %6.1f TF  f+b "
              "%7.3f ms | speedup fwd %5.2fx bwd %5.2fx f+b %5.2fx\n",
              static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(Hkv),
              static_cast<long long>(D), ff, tf(full_flops, ff), fb, tf(2.5 * full_flops, fb),
              ff + fb, nf, tf(nsa_flops, nf), nb, tf(2.5 * nsa_flops, nb), nf + nb, ff / nf,
              fb / nb, (ff + fb) / (nf + nb));
  std::printf("    nsa parts (ms): fwd cmp %.3f select %.3f slc %.3f win %.3f gate %.3f | bwd gate "
              "%.3f win %.3f slc %.3f cmp %.3f | mean keys/query %.1f of %.1f causal\n",
              parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6], parts[7],
              parts[8], nsa_keys(T), (T + 1) / 2.0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  const el::Status s = el::cuda::register_backend(0);
  if (!s.ok()) {
    std::fprintf(stderr, "cuda_nsa_bench: %s\n", s.error().message().c_str());
    return 1;
  }
  auto info = el::cuda::device_info(0);
  if (info.ok()) std::printf("device: %s\n", el::cuda::describe(info.value()).c_str());
  std::printf("NSA: window %lld, compress block %lld / stride %lld, select block %lld x %lld, "
              "bf16, B 1\n",
              static_cast<long long>(kWindow), static_cast<long long>(kBlock),
              static_cast<long long>(kStride), static_cast<long long>(kSelBlock),
              static_cast<long long>(kSelCount));
  if (quick) {
    run(16384, 14, 2, 64);
    return 0;
  }
  for (const auto& [H, Hkv, D] : {std::array<int64_t, 3>{14, 2, 64}, std::array<int64_t, 3>{12, 2, 128}})
    for (int64_t T : {4096, 8192, 16384}) run(T, H, Hkv, D);
  return 0;
}
