// cuda_stream_bench.cpp — the decode layer kernel's weight stream alone
// (cuda::stream_probe): 1 GiB of 4 KiB rows (the 1.1B model's C = 2048 bf16
// rows, ~half its weights, far beyond L2) streamed by one block per SM
// through a ring of shared-memory slots, per copy pattern, against plain
// 16-byte loads. GB/s and the fraction of the HBM peak (memory clock x bus
// width) beside the time: the rate the layer kernel's phases cannot beat.
// Args: mode (0 a bulk copy per row of a window, 1 one copy per window, 2
// plain loads), rows per window, span (bytes of a row per window), stages.
#include "cuda/cuda_kernels.h"
#include "cuda_bench_util.h"

namespace {

using el::bench_util::gpu;

constexpr int64_t kBytes = int64_t{1} << 30, kRowBytes = 4096;

void BM_WeightStream(benchmark::State& state) {
  if (!el::bench_util::ready(state)) return;
  static el::Tensor w = el::Tensor::zeros({kBytes}, el::DType::u8, gpu());
  el::cuda::StreamProbe p;
  p.mode = static_cast<int>(state.range(0));
  p.rows = static_cast<int>(state.range(1));
  p.span = static_cast<int>(state.range(2));
  p.stages = static_cast<int>(state.range(3));
  el::bench_util::time_batches(state, 4, double(kBytes),
                               [&] { el::cuda::stream_probe(w, kRowBytes, p); });
  const double peak = el::bench_util::hbm_peak_gbps(0);
  if (peak > 0) state.counters["of_peak"] = state.counters["GB/s"] / peak;
}

}  // namespace

BENCHMARK(BM_WeightStream)
    ->ArgNames({"mode", "rows", "span", "stages"})
    ->Args({2, 1, 16, 1})
    ->Args({0, 16, 1024, 8})
    ->Args({0, 16, 1024, 6})
    ->Args({0, 16, 1024, 12})
    ->Args({0, 16, 512, 8})
    ->Args({0, 8, 2048, 8})
    ->Args({0, 4, 4096, 8})
    ->Args({1, 16, 1024, 8})
    ->Args({1, 16, 1024, 4})
    ->Args({1, 8, 1024, 8})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
