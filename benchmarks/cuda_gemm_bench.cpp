// cuda_gemm_bench.cpp — the CUDA backend's cuBLASLt GEMM, timed with CUDA events.
//
// c[M,N] = a[M,K] @ b[N,K]^T (ops::linear's layout: weights stored [out, in])
// on random data (zeros run faster on a GPU and would flatter the number).
// Each iteration is a batch of GEMMs (a few ms of GPU work) timed on the GPU
// with events, so launch overhead is amortised. Reports TFLOP/s from 2 M N K
// per GEMM.
//   build/<dir>/benchmarks/cuda_gemm_bench --benchmark_filter=4096
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/cuda_backend.h"
#include "ops/backend.h"

namespace {

// Random values: one block of 2^20 normals drawn on the host, uploaded once
// and tiled over the matrix on the device (drawing 800M values on the host
// would take longer than the benchmark).
el::Tensor random_gpu(int64_t rows, int64_t cols, el::DType dtype, uint64_t seed) {
  constexpr int64_t kBlock = int64_t{1} << 20;
  const int64_t total = rows * cols;
  const int64_t nb = std::min(total, kBlock);
  el::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(nb));
  for (float& x : v) x = rng.normal();
  el::Tensor block = el::Tensor::empty({nb}, dtype, el::Device::cuda(0));
  block.copy_from(el::Tensor::from_floats(v, {nb}));
  el::Tensor t = el::Tensor::empty({total}, dtype, el::Device::cuda(0));
  for (int64_t off = 0; off < total; off += nb) {
    const int64_t len = std::min(nb, total - off);
    el::Tensor dst = t.slice0(off, off + len);
    dst.copy_from(block.slice0(0, len));
  }
  return t.view({rows, cols});
}

// Args: M, N, K; in / out dtypes bound per registration.
void BM_CudaGemm(benchmark::State& state, el::DType in, el::DType out) {
  const el::Status s = el::cuda::register_backend(0);
  if (!s.ok()) {
    state.SkipWithError(s.error().message().c_str());
    return;
  }
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const el::Tensor a = random_gpu(m, k, in, 1);
  const el::Tensor b = random_gpu(n, k, in, 2);
  el::Tensor c = el::Tensor::empty({m, n}, out, el::Device::cuda(0));
  el::Backend& be = el::backend_for(el::Device::cuda(0));
  for (int i = 0; i < 3; ++i) be.gemm(a, false, b, true, c, 1.f, 0.f);  // warm-up, plan cache
  be.synchronize();
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const int batch = std::max<int>(1, static_cast<int>(2e12 / flops));  // ~ a few ms per batch
  el::cuda::EventTimer timer;
  for (auto _ : state) {  // one iteration = one batch
    timer.start();
    for (int i = 0; i < batch; ++i) be.gemm(a, false, b, true, c, 1.f, 0.f);
    timer.stop();
    state.SetIterationTime(timer.elapsed_ms() * 1e-3);
  }
  state.counters["gemms/iter"] = batch;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * batch * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

void square(benchmark::internal::Benchmark* b) {
  for (int64_t s : {1024, 2048, 4096, 8192}) b->Args({s, s, s});
}

void llm_shapes(benchmark::internal::Benchmark* b) {
  // tokens x out x in of a 768-wide model's projections, batch 16 x 1024 tokens
  b->Args({16384, 2304, 768})
      ->Args({16384, 768, 768})
      ->Args({16384, 3072, 768})
      ->Args({16384, 768, 3072})
      ->Args({16384, 50304, 768});
}

BENCHMARK_CAPTURE(BM_CudaGemm, bf16, el::DType::bf16, el::DType::bf16)
    ->Apply(square)
    ->Apply(llm_shapes)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CudaGemm, bf16_to_f32, el::DType::bf16, el::DType::f32)
    ->Args({4096, 4096, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CudaGemm, f16, el::DType::f16, el::DType::f16)
    ->Args({4096, 4096, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CudaGemm, f32, el::DType::f32, el::DType::f32)
    ->Args({4096, 4096, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
