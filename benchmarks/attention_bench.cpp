// attention_bench.cpp — the backend's attention kernels, forward and
// forward+backward, causal, H = 8 query heads, D = 64, Hkv 8/2/1 (MHA/GQA/MQA).
//
// FLOP counts (multiply-add = 2): the forward does two T x S x D products
// (QK^T, PV), halved when causal: 4 B H T S D / 2. The backward recomputes
// QK^T and does four more (dP, dQ, dK, dV): 10 B H T S D / 2, so
// forward+backward counts 14 B H T S D / 2.
//   build/<dir>/benchmarks/attention_bench --benchmark_filter=Fwd/
#include <benchmark/benchmark.h>

#include <cmath>

#include "core/rng.h"
#include "core/tensor.h"
#include "ops/backend.h"

namespace {

el::Tensor random_tensor(const el::Shape& shape, uint64_t seed) {
  el::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(el::shape_numel(shape)));
  for (float& x : v) x = rng.normal();
  return el::Tensor::from_floats(v, shape);
}

constexpr int64_t kHeads = 8;
constexpr int64_t kHeadDim = 64;

struct Inputs {
  el::Tensor q, k, v, out, lse, dout, dq, dk, dv;
  float scale;
  Inputs(int64_t b, int64_t t, int64_t hkv)
      : q(random_tensor({b, t, kHeads, kHeadDim}, 1)),
        k(random_tensor({b, t, hkv, kHeadDim}, 2)),
        v(random_tensor({b, t, hkv, kHeadDim}, 3)),
        out(el::Tensor::empty({b, t, kHeads, kHeadDim})),
        lse(el::Tensor::empty({b, kHeads, t})),
        dout(random_tensor({b, t, kHeads, kHeadDim}, 4)),
        dq(el::Tensor::empty(q.shape())),
        dk(el::Tensor::empty(k.shape())),
        dv(el::Tensor::empty(v.shape())),
        scale(1.f / std::sqrt(static_cast<float>(kHeadDim))) {}
};

// Args: B, T (= S), Hkv.
void BM_AttentionFwd(benchmark::State& state) {
  const int64_t b = state.range(0), t = state.range(1), hkv = state.range(2);
  Inputs in(b, t, hkv);
  el::Backend& be = el::backend_for(el::Device::cpu());
  for (auto _ : state) {
    be.attention_forward(in.q, in.k, in.v, in.scale, true, in.out, in.lse);
    benchmark::DoNotOptimize(in.out.raw());
  }
  const double flops = 4.0 * b * kHeads * t * t * kHeadDim / 2;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_AttentionFwdBwd(benchmark::State& state) {
  const int64_t b = state.range(0), t = state.range(1), hkv = state.range(2);
  Inputs in(b, t, hkv);
  el::Backend& be = el::backend_for(el::Device::cpu());
  for (auto _ : state) {
    be.attention_forward(in.q, in.k, in.v, in.scale, true, in.out, in.lse);
    be.attention_backward(in.dout, in.q, in.k, in.v, in.out, in.lse, in.scale, true, in.dq, in.dk,
                          in.dv);
    benchmark::DoNotOptimize(in.dq.raw());
  }
  const double flops = 14.0 * b * kHeads * t * t * kHeadDim / 2;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* bm) {
  for (int64_t t : {128, 512, 1024}) bm->Args({1, t, 8});
  for (int64_t hkv : {8, 2, 1}) bm->Args({4, 256, hkv});
  bm->Args({2, 1024, 2});
  bm->ArgNames({"B", "T", "Hkv"});
  bm->Unit(benchmark::kMillisecond);
  bm->UseRealTime();  // multi-threaded: rates per wall second, not main-thread CPU
}

}  // namespace

BENCHMARK(BM_AttentionFwd)->Apply(shapes);
BENCHMARK(BM_AttentionFwdBwd)->Apply(shapes);

BENCHMARK_MAIN();
