// cuda_decode_attention_bench.cpp — one decode step's attention over a KV
// cache (Backend::attention_cached, cuda_infer.cu) at the 1.1B shape of the
// inference axis: 32 query heads, 4 KV heads of dim 64 (GQA group 8), bf16
// q and caches, one new token per row, every row at position ctx - 1 (it
// sees ctx keys). Args: B, ctx, Smax (the cache's allocated length; rows
// past ctx are never read, so Smax > ctx measures the blocks that exit at
// once), D. Also greedy argmax over [B, vocab] logits.
// Counters: microseconds per call and GB/s of K/V bytes read
// (2 * B * ctx * Hkv * D * 2 bytes; q and out are negligible) — against the
// HBM bandwidth this is the decode attention roofline.
//   build/<dir>/benchmarks/cuda_decode_attention_bench --benchmark_filter=Decode
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/cuda_backend.h"
#include "ops/backend.h"

namespace {

using el::DType;
using el::Tensor;

el::Device gpu() { return el::Device::cuda(0); }

bool ready(benchmark::State& state) {
  const el::Status s = el::cuda::register_backend(0);
  if (!s.ok()) state.SkipWithError(s.error().message().c_str());
  return s.ok();
}

// Random values: one block of 2^20 normals drawn on the host, uploaded once
// and tiled over the tensor on the device.
Tensor random_gpu(const el::Shape& shape, DType dtype, uint64_t seed) {
  constexpr int64_t kBlock = int64_t{1} << 20;
  const int64_t total = el::shape_numel(shape);
  const int64_t nb = std::min(total, kBlock);
  el::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(nb));
  for (float& x : v) x = rng.normal();
  Tensor block = Tensor::empty({nb}, dtype, gpu());
  block.copy_from(Tensor::from_floats(v, {nb}));
  Tensor t = Tensor::empty({total}, dtype, gpu());
  for (int64_t off = 0; off < total; off += nb) {
    const int64_t len = std::min(nb, total - off);
    Tensor dst = t.slice0(off, off + len);
    dst.copy_from(block.slice0(0, len));
  }
  return t.view(shape);
}

// Runs `call` batch times per iteration; sets us/call and GB/s from `bytes` per call.
template <class F>
void time_batches(benchmark::State& state, int batch, double bytes, F&& call) {
  el::Backend& be = el::backend_for(gpu());
  for (int i = 0; i < 3; ++i) call();  // warm-up: allocator cache, lazy module loading
  be.synchronize();
  el::cuda::EventTimer timer;
  double total_ms = 0;
  int64_t calls = 0;
  for (auto _ : state) {
    timer.start();
    for (int i = 0; i < batch; ++i) call();
    timer.stop();
    const double ms = timer.elapsed_ms();
    state.SetIterationTime(ms * 1e-3);
    total_ms += ms;
    calls += batch;
  }
  be.synchronize();
  const double us = total_ms * 1e3 / double(std::max<int64_t>(calls, 1));
  state.counters["us/call"] = us;
  state.counters["GB/s"] = bytes / (us * 1e-6) * 1e-9;
}

// Args: B, ctx, Smax, D (H 32, Hkv 4, bf16, T 1).
void BM_DecodeAttention(benchmark::State& state) {
  if (!ready(state)) return;
  const int64_t b = state.range(0), ctx = state.range(1), smax = state.range(2);
  const int64_t d = state.range(3), h = 32, hkv = 4;
  const Tensor q = random_gpu({b, 1, h, d}, DType::bf16, 1);
  const Tensor kc = random_gpu({b, smax, hkv, d}, DType::bf16, 2);
  const Tensor vc = random_gpu({b, smax, hkv, d}, DType::bf16, 3);
  Tensor out = Tensor::empty({b, 1, h, d}, DType::bf16, gpu());
  Tensor pos = Tensor::empty({b}, DType::i32, gpu());
  pos.copy_from(Tensor::from_ints(
      std::vector<int32_t>(static_cast<size_t>(b), static_cast<int32_t>(ctx - 1)), {b}));
  el::Backend& be = el::backend_for(gpu());
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const double bytes = 2.0 * double(b) * double(ctx) * double(hkv) * double(d) * 2.0;
  time_batches(state, 50, bytes, [&] { be.attention_cached(q, kc, vc, pos, scale, out); });
}
BENCHMARK(BM_DecodeAttention)
    ->Args({1, 512, 512, 64})
    ->Args({1, 2048, 2048, 64})
    ->Args({8, 512, 512, 64})
    ->Args({8, 2048, 2048, 64})
    ->Args({32, 512, 512, 64})
    ->Args({32, 2048, 2048, 64})
    ->Args({8, 512, 4096, 64})
    ->Args({32, 2048, 2048, 128})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Args: rows, vocab (bf16 logits).
void BM_ArgmaxRows(benchmark::State& state) {
  if (!ready(state)) return;
  const int64_t n = state.range(0), v = state.range(1);
  const Tensor x = random_gpu({n, v}, DType::bf16, 4);
  Tensor out = Tensor::empty({n}, DType::i32, gpu());
  el::Backend& be = el::backend_for(gpu());
  time_batches(state, 50, double(x.nbytes()), [&] { be.argmax_rows(x, out); });
}
BENCHMARK(BM_ArgmaxRows)
    ->Args({1, 32000})
    ->Args({32, 32000})
    ->Args({1, 128256})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
