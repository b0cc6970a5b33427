// cuda_attention_bench.cpp — TFLOP/s of the CUDA attention launchers
// (cuda/attention.cuh), in bf16, timed with CUDA events.
//
// Shapes: the 124M training layer (B16 T1024 H12 Hkv4 D64, causal) and the
// FlashAttention-2/3 benchmark grid (seqlen 512..16k with B * seqlen = 16k,
// H * D = 2048, D 64 and 128, causal and not, MHA), so the numbers sit next
// to the published FA2/FA3 figures. FLOPs as FlashAttention counts them:
// forward 4 B H T S D (halved when causal), backward 2.5x forward,
// forward+backward 3.5x forward. Each timing: 3 warm-up calls, then the median
// of >= 10 calls (more for short ones). Inputs are random bf16 (never zeros).
//
//   cuda_attention_bench              training shape + FA grid
//   cuda_attention_bench --quick      training shape only
//   cuda_attention_bench --variants   also sweep the tile variants (tuning)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "cuda/attention.cuh"

namespace {

using el::DType;
using el::cuda::AttentionShape;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "cuda_attention_bench: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

struct Buffers {
  void *q, *k, *v, *out, *dout, *dq, *dk, *dv, *ws;
  float* lse;
  size_t elems, ws_bytes;
};

// Random bf16 in [-2, 2) from a xorshift (fast enough for 32M elements per tensor).
void fill_random(void* dst, size_t n, uint64_t seed) {
  std::vector<uint16_t> h(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float x = static_cast<float>((s >> 40) & 0xFFFFFF) / 16777216.f * 4.f - 2.f;
    h[i] = el::f32_to_bf16(x);
  }
  check(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice), "upload");
}

Buffers make_buffers(size_t elems, size_t lse_elems, size_t ws_bytes) {
  Buffers b{};
  b.elems = elems;
  b.ws_bytes = ws_bytes;
  void** all[] = {&b.q, &b.k, &b.v, &b.out, &b.dout, &b.dq, &b.dk, &b.dv};
  for (void** p : all) check(cudaMalloc(p, elems * 2), "cudaMalloc");
  check(cudaMalloc(&b.ws, ws_bytes), "cudaMalloc workspace");
  check(cudaMalloc(reinterpret_cast<void**>(&b.lse), lse_elems * 4), "cudaMalloc lse");
  fill_random(b.q, elems, 1);
  fill_random(b.k, elems, 2);
  fill_random(b.v, elems, 3);
  fill_random(b.dout, elems, 4);
  return b;
}

// Median milliseconds of fn over repeats, after warm-up.
double time_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  check(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  std::vector<float> ms;
  float total = 0.f;
  for (int i = 0; i < 200 && (i < 10 || total < 200.f); ++i) {
    check(cudaEventRecord(a), "record");
    fn();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    float t = 0.f;
    check(cudaEventElapsedTime(&t, a, b), "elapsed");
    ms.push_back(t);
    total += t;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Result {
  double fwd_ms, bwd_ms, fwd_tf, bwd_tf, fb_tf;
};

Result run_shape(const Buffers& buf, const AttentionShape& s) {
  auto fwd = [&] {
    check(el::cuda::attention_forward(buf.q, buf.k, buf.v, buf.out, buf.lse, s, DType::bf16,
                                      nullptr),
          "attention_forward");
  };
  auto bwd = [&] {
    check(el::cuda::attention_backward(buf.dout, buf.q, buf.k, buf.v, buf.out, buf.lse, buf.dq,
                                       buf.dk, buf.dv, buf.ws, s, DType::bf16, nullptr),
          "attention_backward");
  };
  fwd();
  check(cudaDeviceSynchronize(), "forward");
  Result r{};
  r.fwd_ms = time_ms(fwd);
  r.bwd_ms = time_ms(bwd);
  const double flops =
      4.0 * s.B * s.H * double(s.T) * double(s.S) * s.D / (s.causal ? 2.0 : 1.0);
  r.fwd_tf = flops / (r.fwd_ms * 1e-3) / 1e12;
  r.bwd_tf = 2.5 * flops / (r.bwd_ms * 1e-3) / 1e12;
  r.fb_tf = 3.5 * flops / ((r.fwd_ms + r.bwd_ms) * 1e-3) / 1e12;
  return r;
}

void print_row(const char* label, const AttentionShape& s, const Result& r) {
  std::printf("%-26s B%-3d T%-6d H%-3d Hkv%-3d D%-4d %-7s | fwd %8.3f ms %6.1f TF | bwd %8.3f ms "
              "%6.1f TF | fwd+bwd %6.1f TF\n",
              label, s.B, s.T, s.H, s.Hkv, s.D, s.causal ? "causal" : "full", r.fwd_ms, r.fwd_tf,
              r.bwd_ms, r.bwd_tf, r.fb_tf);
  std::fflush(stdout);
}

// Times every forward tile variant (backward default) and every backward
// variant (forward default); see attention_fwd.cu / attention_bwd.cu.
void sweep_variants(const Buffers& buf, const AttentionShape& s) {
  const int n_fwd = s.D == 64 ? 7 : 5, n_bwd = s.D == 64 ? 8 : 4;
  for (int fv = 1; fv <= n_fwd; ++fv) {
    el::cuda::detail::set_attention_variants(fv, 0);
    char label[32];
    std::snprintf(label, sizeof label, "  fwd variant %d", fv);
    print_row(label, s, run_shape(buf, s));
  }
  for (int bv = 1; bv <= n_bwd; ++bv) {
    el::cuda::detail::set_attention_variants(0, bv);
    char label[32];
    std::snprintf(label, sizeof label, "  bwd variant %d", bv);
    print_row(label, s, run_shape(buf, s));
  }
  el::cuda::detail::set_attention_variants(0, 0);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, variants = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--variants") == 0) variants = true;
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--variants]\n", argv[0]);
      return 2;
    }
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "cuda_attention_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  // Every FA-grid shape holds 16k tokens x 2048 (= H * D) elements per tensor,
  // more than the training shape, so one set of buffers serves all.
  const size_t elems = size_t(16384) * 2048;
  const size_t lse_elems = size_t(16384) * 32;  // B * H * T for H = 32 (D 64)
  const AttentionShape biggest{1, 16384, 16384, 32, 32, 64, 0.125f, true};
  const size_t ws = el::cuda::attention_backward_workspace_bytes(biggest, DType::bf16);
  const Buffers buf = make_buffers(elems, lse_elems, ws);

  const AttentionShape train{16, 1024, 1024, 12, 4, 64, 0.125f, true};
  print_row("train-124M (GQA 12/4)", train, run_shape(buf, train));
  if (variants) sweep_variants(buf, train);
  if (quick) return 0;

  for (int d : {64, 128}) {
    for (bool causal : {false, true}) {
      for (int seq : {512, 1024, 2048, 4096, 8192, 16384}) {
        const int h = 2048 / d;
        const AttentionShape s{16384 / seq, seq, seq, h, h, d,
                               1.f / std::sqrt(static_cast<float>(d)), causal};
        print_row("FA-grid", s, run_shape(buf, s));
        if (variants && (seq == 1024 || seq == 8192)) sweep_variants(buf, s);
      }
    }
  }
  return 0;
}
