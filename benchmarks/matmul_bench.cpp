// matmul_bench.cpp — the backend's GEMM next to a raw cblas_sgemm call.
//
// Both compute c[M,N] = a[M,K] @ b[N,K]^T (the layout of ops::linear: weights
// stored [out, in]). The backend runs single-threaded OpenBLAS in each OpenMP
// thread (cpu_gemm.cpp says why); the raw call uses OpenBLAS's own pthreads.
// The gap between the two rows of a size is the cost of our wrapper and
// threading. Reports GFLOP/s = 2 M N K per iteration (wall time).
//   build/<dir>/benchmarks/matmul_bench --benchmark_filter=1024
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "ops/backend.h"

namespace {

el::Tensor random_matrix(int64_t rows, int64_t cols, el::DType dtype, uint64_t seed) {
  el::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = rng.normal();
  el::Tensor f = el::Tensor::from_floats(v, {rows, cols});
  if (dtype == el::DType::f32) return f;
  el::Tensor t = el::Tensor::empty({rows, cols}, dtype);
  t.copy_from(f);
  return t;
}

void set_flops(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(m) * n * k * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M (rows of a), K, N.
void BM_BackendGemm(benchmark::State& state, el::DType wdtype) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const el::Tensor a = random_matrix(m, k, el::DType::f32, 1);
  const el::Tensor b = random_matrix(n, k, wdtype, 2);
  el::Tensor c = el::Tensor::zeros({m, n});
  el::Backend& be = el::backend_for(el::Device::cpu());
  for (auto _ : state) {
    be.gemm(a, false, b, true, c, 1.f, 0.f);
    benchmark::DoNotOptimize(c.raw());
  }
  set_flops(state, m, n, k);
}

void BM_RawCblas(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const el::Tensor a = random_matrix(m, k, el::DType::f32, 1);
  const el::Tensor b = random_matrix(n, k, el::DType::f32, 2);
  el::Tensor c = el::Tensor::zeros({m, n});
  // OpenBLAS's own threading, as an application calling it directly would get
  // (the backend pins OpenBLAS to one thread and threads with OpenMP instead).
  openblas_set_num_threads(omp_get_max_threads());
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.f, a.data<float>(), static_cast<int>(k), b.data<float>(),
                static_cast<int>(k), 0.f, c.data<float>(), static_cast<int>(n));
    benchmark::DoNotOptimize(c.raw());
  }
  openblas_set_num_threads(1);
  set_flops(state, m, n, k);
}

void square_and_lm_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t s : {256, 512, 1024, 2048}) b->Args({s, s, s});
  b->Args({4096, 512, 1536});  // LM-shaped: N=4096 tokens, K=512 in, M=1536 out
  b->ArgNames({"M", "K", "N"});
  b->Unit(benchmark::kMillisecond);
  b->UseRealTime();  // multi-threaded: rates per wall second, not main-thread CPU
}

void half_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t s : {512, 1024}) b->Args({s, s, s});
  b->ArgNames({"M", "K", "N"});
  b->Unit(benchmark::kMillisecond);
  b->UseRealTime();  // multi-threaded: rates per wall second, not main-thread CPU
}

}  // namespace

BENCHMARK_CAPTURE(BM_BackendGemm, f32, el::DType::f32)->Apply(square_and_lm_sizes);
BENCHMARK(BM_RawCblas)->Apply(square_and_lm_sizes);
BENCHMARK_CAPTURE(BM_BackendGemm, bf16_weights, el::DType::bf16)->Apply(half_sizes);

BENCHMARK_MAIN();
