// cuda_bench_util.h — helpers shared by the cuda_*_bench.cpp programs: the
// device, backend registration as a benchmark skip, random device tensors
// drawn cheaply, event-timed batches of calls with us/call and GB/s, median
// times of a call, and a whole model's training step timed on random tokens.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "autograd/tape.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/cuda_backend.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/backend.h"
#include "train/optimizer.h"

namespace el::bench_util {

inline Device gpu() { return Device::cuda(0); }

// Registers the CUDA backend; a failure skips the benchmark with its message.
inline bool ready(benchmark::State& state) {
  const Status s = cuda::register_backend(0);
  if (!s.ok()) state.SkipWithError(s.error().message().c_str());
  return s.ok();
}

// Random values: one block of 2^20 normals (times `scale`) drawn on the host,
// uploaded once and tiled over the tensor on the device.
inline Tensor random_gpu(const Shape& shape, DType dtype, uint64_t seed, float scale = 1.f) {
  constexpr int64_t kBlock = int64_t{1} << 20;
  const int64_t total = shape_numel(shape);
  const int64_t nb = std::min(total, kBlock);
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(nb));
  for (float& x : v) x = rng.normal() * scale;
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

// The HBM peak in GB/s from the device attributes (memory clock x bus width,
// double data rate); 0 when they cannot be read.
inline double hbm_peak_gbps(int dev) {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) != cudaSuccess) {
    return 0.0;
  }
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) * 1e-9;
}

// Runs `call` batch times per iteration; sets us/call and GB/s from `bytes` per call.
template <class F>
void time_batches(benchmark::State& state, int batch, double bytes, F&& call) {
  Backend& be = backend_for(gpu());
  for (int i = 0; i < 3; ++i) call();  // warm-up: allocator cache, lazy module loading
  be.synchronize();
  cuda::EventTimer timer;
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

// Median ms of fn on the GPU stream (3 warm-up calls, then >= min_calls
// timed calls and >= 200 ms in all, at most 200 calls).
inline double median_ms(const std::function<void()>& fn, int min_calls = 10) {
  Backend& be = backend_for(gpu());
  for (int i = 0; i < 3; ++i) fn();
  be.synchronize();
  cuda::EventTimer timer;
  std::vector<double> ms;
  double total = 0;
  for (int i = 0; i < 200 && (i < min_calls || total < 200.0); ++i) {
    timer.start();
    fn();
    timer.stop();
    ms.push_back(timer.elapsed_ms());
    total += ms.back();
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Median ms of one training step of `model` on ids[B, T] (also the targets):
// `micro_batches` times loss and backward (the gradients add up, as the
// trainer's grad_accum), then AdamW (lr 1e-4, weight decay 0.1; bf16/f16
// parameters get f32 masters), gradients cleared. With `profile`, one more
// step after a warm-up one runs inside Backend::profiler_range first, for
// `ncu --profile-from-start off` (time_train_step's EL_PROFILE_TRAIN_STEP).
inline double train_step_ms(DecoderLM& model, const Tensor& ids, int min_calls = 5,
                            bool profile = false, bool optimizer = true, int micro_batches = 1) {
  AdamW opt(model.parameters(), AdamWConfig{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f});
  const std::function<void()> step = [&] {
    for (int i = 0; i < micro_batches; ++i) {
      Tensor loss = model.loss(ids, ids);
      tape().backward(loss);
    }
    if (optimizer) opt.step(1e-4f);
    opt.zero_grad();
  };
  if (profile) {
    Backend& be = backend_for(gpu());
    step();
    be.synchronize();
    be.profiler_range(true);
    step();
    be.synchronize();
    be.profiler_range(false);
  }
  return median_ms(step, min_calls);
}

// A training step of a whole model, as the model-comparison rows print it.
struct TrainStepTiming {
  double ms = 0;            // median step (train_step_ms)
  double fwd_bwd_ms = 0;    // the same without the AdamW update (its cost scales with all parameters)
  double tokens_per_s = 0;  // micro_batches B T / step
  int64_t num_parameters = 0;
  FlopsPerToken flops;      // the model's, at T
};

// Builds `card` on the GPU in bf16 (seed 1) and times train_step_ms on B x T
// token ids drawn uniformly from its vocabulary (Rng seed 3), with
// `micro_batches` forward + backward passes per update; with
// EL_PROFILE_TRAIN_STEP set to the card's name, one step is profiled first. The error of a
// card that does not build (e.g. out of memory) is returned for the caller to
// print.
inline Result<TrainStepTiming> time_train_step(const ModelCard& card, int64_t B, int64_t T,
                                               int micro_batches = 1) {
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model, DecoderLM::create(card, gpu(), 1, DType::bf16));
  Rng rng(3);
  std::vector<int32_t> v(static_cast<size_t>(B * T));
  for (auto& id : v) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(card.vocab_size)));
  TrainStepTiming t;
  // EL_PROFILE_TRAIN_STEP=<card name>: that card's step is bracketed for a profiler.
  const char* profile = std::getenv("EL_PROFILE_TRAIN_STEP");
  t.ms = train_step_ms(*model, Tensor::from_ints(v, {B, T}).to(gpu()), 5,
                       profile != nullptr && card.name == profile, true, micro_batches);
  t.fwd_bwd_ms = train_step_ms(*model, Tensor::from_ints(v, {B, T}).to(gpu()), 5, false, false,
                               micro_batches);
  t.tokens_per_s = static_cast<double>(micro_batches * B * T) / (t.ms * 1e-3);
  t.num_parameters = model->num_parameters();
  t.flops = model->flops_per_token(T);
  return t;
}

}  // namespace el::bench_util
