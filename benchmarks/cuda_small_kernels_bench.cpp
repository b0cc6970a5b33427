// cuda_small_kernels_bench.cpp — the memory-bound kernels of a training step
// that are not GEMMs or attention, at the llama-124m training shapes (B16 x
// T1024, bf16, d_model 768, 12 query / 4 KV heads of dim 64):
//  * RoPE on q [16,1024,12,64] and k [16,1024,4,64] (forward; the inverse is
//    the same kernel);
//  * embedding backward: 16384 ids into a [V,768] gradient table, V = 4096
//    (the tokenizer of the trained runs) and 32000 (the Llama vocabulary),
//    ids drawn from a Zipf(1) law as natural text repeats tokens, or uniform;
//  * sum_squares_many: the global gradient norm over the model's 111
//    gradient tensors (124.7M bf16 values, one host wait per call).
// Each iteration is a batch of calls timed on the GPU with CUDA events; the
// counters give microseconds per call and GB/s of compulsory traffic (each
// input byte read once, each output byte written once).
//   build/<dir>/benchmarks/cuda_small_kernels_bench --benchmark_filter=Rope
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <string>
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

// Args: B, T, H, D (bf16 x and y, f32 frequencies).
void BM_Rope(benchmark::State& state) {
  if (!ready(state)) return;
  const int64_t b = state.range(0), t = state.range(1), h = state.range(2), d = state.range(3);
  const Tensor x = random_gpu({b, t, h, d}, DType::bf16, 1);
  Tensor y = Tensor::empty({b, t, h, d}, DType::bf16, gpu());
  std::vector<float> f(static_cast<size_t>(d / 2));
  for (size_t i = 0; i < f.size(); ++i) f[i] = std::pow(10000.f, -2.f * float(i) / float(d));
  Tensor freq = Tensor::empty({d / 2}, DType::f32, gpu());
  freq.copy_from(Tensor::from_floats(f, {d / 2}));
  el::Backend& be = el::backend_for(gpu());
  const double bytes = 2.0 * double(x.nbytes());
  time_batches(state, 100, bytes, [&] { be.rope(x, freq, 0, false, y); });
}
BENCHMARK(BM_Rope)
    ->Args({16, 1024, 12, 64})
    ->Args({16, 1024, 4, 64})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Args: N ids, V rows, C columns, zipf (1) or uniform (0) ids; bf16 dout and dtable.
void BM_EmbeddingBackward(benchmark::State& state) {
  if (!ready(state)) return;
  const int64_t n = state.range(0), v = state.range(1), c = state.range(2);
  const bool zipf = state.range(3) != 0;
  el::Rng rng(7);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  if (zipf) {  // P(rank k) ~ 1/k over the vocabulary, ids shuffled across ranks
    std::vector<double> cdf(static_cast<size_t>(v));
    double acc = 0;
    for (int64_t k = 0; k < v; ++k) cdf[static_cast<size_t>(k)] = acc += 1.0 / double(k + 1);
    std::vector<int32_t> perm(static_cast<size_t>(v));
    for (int64_t k = 0; k < v; ++k) perm[static_cast<size_t>(k)] = static_cast<int32_t>(k);
    for (int64_t k = v - 1; k > 0; --k) {
      std::swap(perm[static_cast<size_t>(k)],
                perm[static_cast<size_t>(rng.below(static_cast<uint64_t>(k + 1)))]);
    }
    for (int32_t& id : ids) {
      const double u = double(rng.uniform()) * acc;
      const auto it = std::lower_bound(cdf.begin(), cdf.end(), u);
      id = perm[static_cast<size_t>(std::min<int64_t>(it - cdf.begin(), v - 1))];
    }
  } else {
    for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(v)));
  }
  Tensor gids = Tensor::empty({n}, DType::i32, gpu());
  gids.copy_from(Tensor::from_ints(ids, {n}));
  const Tensor dout = random_gpu({n, c}, DType::bf16, 2);
  Tensor dtable = Tensor::empty({v, c}, DType::bf16, gpu());
  el::Backend& be = el::backend_for(gpu());
  const double bytes = double(dout.nbytes()) + double(dtable.nbytes()) + 4.0 * double(n);
  time_batches(state, 20, bytes, [&] { be.embedding_backward(gids, dout, dtable); });
}
BENCHMARK(BM_EmbeddingBackward)
    ->Args({16384, 4096, 768, 1})
    ->Args({16384, 32000, 768, 1})
    ->Args({16384, 32000, 768, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The llama-124m gradient tensors (d 768, 12 layers, 12/4 heads of 64, d_ff
// 2048, vocabulary 32000, untied head): 111 tensors, 124.7M values.
std::vector<el::Shape> llama124m_param_shapes() {
  std::vector<el::Shape> s;
  s.push_back({32000, 768});  // embedding
  for (int l = 0; l < 12; ++l) {
    s.push_back({768});        // attention norm
    s.push_back({768, 768});   // wq
    s.push_back({256, 768});   // wk
    s.push_back({256, 768});   // wv
    s.push_back({768, 768});   // wo
    s.push_back({768});        // mlp norm
    s.push_back({2048, 768});  // w_gate
    s.push_back({2048, 768});  // w_up
    s.push_back({768, 2048});  // w_down
  }
  s.push_back({768});         // final norm
  s.push_back({32000, 768});  // lm_head
  return s;
}

// Arg: dtype (0 = bf16, 1 = f32).
void BM_SumSquaresMany(benchmark::State& state) {
  if (!ready(state)) return;
  const DType dt = state.range(0) == 0 ? DType::bf16 : DType::f32;
  std::vector<Tensor> grads;
  double bytes = 0;
  uint64_t seed = 11;
  for (const el::Shape& shape : llama124m_param_shapes()) {
    grads.push_back(random_gpu(shape, dt, seed++, 1e-3f));
    bytes += double(grads.back().nbytes());
  }
  el::Backend& be = el::backend_for(gpu());
  double sink = 0;
  time_batches(state, 10, bytes, [&] { sink += be.sum_squares_many(grads); });
  state.counters["tensors"] = double(grads.size());
  benchmark::DoNotOptimize(sink);
}
BENCHMARK(BM_SumSquaresMany)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
