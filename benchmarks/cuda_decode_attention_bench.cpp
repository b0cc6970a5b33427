// cuda_decode_attention_bench.cpp — one decode step's attention over a KV
// cache (Backend::attention_cached, cuda_infer.cu) at the 1.1B shape of the
// inference axis: 32 query heads, 4 KV heads of dim 64 (GQA group 8), bf16
// q and caches, one new token per row, every row at position ctx - 1 (it
// sees ctx keys). Args: B, ctx, Smax (the cache's allocated length; rows
// past ctx are never read, so Smax > ctx measures the blocks that exit at
// once), D, H and Hkv (32 and 4 at the 1.1B shape; the 0.5B cards at
// 8K: 14 heads over 2 KV heads (GQA), 1 (MQA), and MLA's latent rows:
// 14 heads over one 176-dim row). Also greedy argmax over [B, vocab] logits.
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
#include "cuda_bench_util.h"

namespace {

using el::bench_util::gpu;
using el::bench_util::random_gpu;
using el::bench_util::ready;
using el::bench_util::time_batches;

using el::DType;
using el::Tensor;

// Args: B, ctx, Smax, D, H, Hkv, shared (bf16, T 1). shared 1: one tensor as
// K and V, as MLA's latent rows (read once: the bytes count it once), the
// whole row as values; 2: the same with the values the latent columns after
// the 64 RoPE columns, as MlaAttention runs it ([rope | latent] rows).
void BM_DecodeAttention(benchmark::State& state) {
  if (!ready(state)) return;
  const int64_t b = state.range(0), ctx = state.range(1), smax = state.range(2);
  const int64_t d = state.range(3);
  const int64_t h = state.range(4), hkv = state.range(5);
  const bool shared = state.range(6) != 0;
  const int64_t v0 = state.range(6) == 2 ? 64 : 0;
  const Tensor q = random_gpu({b, 1, h, d}, DType::bf16, 1);
  const Tensor kc = random_gpu({b, smax, hkv, d}, DType::bf16, 2);
  const Tensor vc = shared ? kc : random_gpu({b, smax, hkv, d}, DType::bf16, 3);
  Tensor out = Tensor::empty({b, 1, h, d - v0}, DType::bf16, gpu());
  Tensor pos = Tensor::empty({b}, DType::i32, gpu());
  pos.copy_from(Tensor::from_ints(
      std::vector<int32_t>(static_cast<size_t>(b), static_cast<int32_t>(ctx - 1)), {b}));
  el::Backend& be = el::backend_for(gpu());
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const double bytes = (shared ? 1.0 : 2.0) * double(b) * double(ctx) * double(hkv) * double(d) * 2.0;
  time_batches(state, 50, bytes,
               [&] { be.attention_cached(q, kc, vc, pos, scale, out, Tensor(), v0); });
}
BENCHMARK(BM_DecodeAttention)
    ->Args({1, 512, 512, 64, 32, 4, 0})
    ->Args({1, 2048, 2048, 64, 32, 4, 0})
    ->Args({8, 512, 512, 64, 32, 4, 0})
    ->Args({8, 2048, 2048, 64, 32, 4, 0})
    ->Args({32, 512, 512, 64, 32, 4, 0})
    ->Args({32, 2048, 2048, 64, 32, 4, 0})
    ->Args({8, 512, 4096, 64, 32, 4, 0})
    ->Args({32, 2048, 2048, 128, 32, 4, 0})
    ->Args({1, 8192, 8192, 64, 14, 2, 0})    // qwen2.5-0.5b GQA at 8K
    ->Args({1, 8192, 8192, 64, 14, 1, 0})    // its MQA
    ->Args({1, 8192, 8192, 176, 14, 1, 1})   // its MLA: latent rows as K and V, all as values
    ->Args({1, 8192, 8192, 176, 14, 1, 2})   // the same, the latent columns as values
    ->Args({8, 8192, 8192, 64, 14, 2, 0})
    ->Args({8, 8192, 8192, 176, 14, 1, 1})
    ->Args({8, 8192, 8192, 176, 14, 1, 2})
    ->Args({32, 8192, 8192, 64, 14, 2, 0})
    ->Args({32, 8192, 8192, 176, 14, 1, 2})
    ->Args({1, 2048, 2048, 64, 14, 2, 0})
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
