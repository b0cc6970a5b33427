// cuda_decode_layer_bench.cpp — the batch-1 decode step's decoder layers as
// the one-kernel path runs them (cuda/cuda_decode_layer.cu), at the 1.1B
// shape of the inference axis (TinyLlama: d 2048, 32 heads, 4 KV heads of
// 64, d_ff 5632), bf16. 22 layers with distinct weights (1.94 GB, far beyond
// L2) run back to back, as a decode step does, either in one launch
// (cuda::decode_layers, what generate runs) or a launch per layer
// (cuda::decode_layer); the timed unit is the step, us/layer its share.
// Counters: us/layer and GB/s of weight + KV bytes against the HBM roofline.
// Args: position of the new token (it attends position + 1 keys), weight
// bits (16: bf16; 8 / 4: the weight-only int8 / int4 layouts with symmetric
// g128 scales, random codes), launch (1: one for the step, 0: one per layer).
//
// --trace (before the Google Benchmark flags) prints where a layer's time
// goes instead: per-block phase timestamps (cuda::decode_layer_trace) of two
// mid-step layers, as mean / max over blocks relative to the earliest start.
//   build/<dir>/benchmarks/cuda_decode_layer_bench [--trace [bits [per-layer]]]
// A build of cuda_decode_layer.cu with -DEL_DECODE_WINDOW_TRACE=1 (made by
// tools/cuda_variant_build.sh) adds, per ring window of the layer, when the
// producer issued it and when consumer warp 0 could take it; one with
// -DEL_DECODE_SKIP_TILES=1 times the stream and the chain without the tiles'
// loads and arithmetic (wrong outputs: timing only), and one with both that
// and -DEL_DECODE_SKIP_STREAM=1 the chain alone, with no weight traffic.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.h"
#include "cuda_bench_util.h"

namespace {

using el::DType;
using el::Tensor;
using el::bench_util::gpu;
using el::bench_util::random_gpu;

constexpr int64_t kC = 2048, kH = 32, kHkv = 4, kD = 64, kF = 5632, kLayers = 22, kSmax = 2048;

struct Step {
  std::vector<el::DecodeLayerWeights> layers;
  std::vector<Tensor> kc, vc;
  Tensor inv_freq, pos, x0, x1;
  double weight_bytes_per_layer = 0;
};

// A weight-only quantized [n, k] weight: random codes, g128 symmetric scales.
el::QuantizedWeight random_quantized(int64_t n, int64_t k, int bits, uint64_t seed) {
  el::QuantizedWeight q;
  q.bits = bits;
  q.group_size = 128;
  q.out_features = n;
  q.in_features = k;
  q.qweight = random_gpu({n, k * bits / 8}, DType::u8, seed, 60.f);
  q.scales = random_gpu({n, k / 128}, DType::f16, seed + 1, 0.002f);
  return q;
}

Step make_step(int64_t position, int bits) {
  Step s;
  const float ws = 1.f / std::sqrt(float(kC));
  for (int64_t l = 0; l < kLayers; ++l) {
    el::DecodeLayerWeights w;
    const uint64_t seed = 100 + 10 * static_cast<uint64_t>(l);
    w.input_norm = random_gpu({kC}, DType::bf16, seed, 0.1f);
    w.post_norm = random_gpu({kC}, DType::bf16, seed + 1, 0.1f);
    w.n_head = kH;
    w.n_kv_head = kHkv;
    w.head_dim = kD;
    if (bits == 16) {
      w.qkv = random_gpu({(kH + 2 * kHkv) * kD, kC}, DType::bf16, seed + 2, ws);
      w.o = random_gpu({kC, kH * kD}, DType::bf16, seed + 3, ws);
      w.gate_up = random_gpu({2 * kF, kC}, DType::bf16, seed + 4, ws);
      w.down = random_gpu({kC, kF}, DType::bf16, seed + 5, ws);
      s.weight_bytes_per_layer = double(w.qkv.nbytes() + w.o.nbytes() + w.gate_up.nbytes() +
                                        w.down.nbytes() + 2 * w.input_norm.nbytes());
    } else {
      w.q_qkv = random_quantized((kH + 2 * kHkv) * kD, kC, bits, seed + 2);
      w.q_o = random_quantized(kC, kH * kD, bits, seed + 3);
      w.q_gate_up = random_quantized(2 * kF, kC, bits, seed + 4);
      w.q_down = random_quantized(kC, kF, bits, seed + 5);
      s.weight_bytes_per_layer =
          double(w.q_qkv.storage_bytes() + w.q_o.storage_bytes() + w.q_gate_up.storage_bytes() +
                 w.q_down.storage_bytes() + 2 * w.input_norm.nbytes());
    }
    s.layers.push_back(w);
    s.kc.push_back(random_gpu({1, kSmax, kHkv, kD}, DType::bf16, seed + 6));
    s.vc.push_back(random_gpu({1, kSmax, kHkv, kD}, DType::bf16, seed + 7));
  }
  std::vector<float> f(kD / 2);
  for (int64_t i = 0; i < kD / 2; ++i) f[i] = std::pow(10000.f, -2.f * float(i) / float(kD));
  s.inv_freq = Tensor::empty({kD / 2}, DType::f32, gpu());
  s.inv_freq.copy_from(Tensor::from_floats(f, {kD / 2}));
  s.pos = Tensor::empty({1}, DType::i32, gpu());
  s.pos.copy_from(Tensor::from_ints({static_cast<int32_t>(position)}, {1}));
  s.x0 = random_gpu({1, 1, kC}, DType::bf16, 7);
  s.x1 = Tensor::empty({1, 1, kC}, DType::bf16, gpu());
  return s;
}

// The step's 22 layers: one launch (x0 -> x1), or a launch per layer.
void run_step(Step& s, bool one_launch) {
  if (one_launch) {
    el::cuda::decode_layers(s.x0, s.layers, s.inv_freq, s.pos, s.kc, s.vc, s.x1);
    return;
  }
  for (int64_t l = 0; l < kLayers; ++l) {
    Tensor& in = (l % 2 == 0) ? s.x0 : s.x1;
    Tensor& out = (l % 2 == 0) ? s.x1 : s.x0;
    el::cuda::decode_layer(in, s.layers[l], s.inv_freq, s.pos, s.kc[l], s.vc[l], out);
  }
}

void BM_DecodeLayers(benchmark::State& state) {
  if (!el::bench_util::ready(state)) return;
  Step s = make_step(state.range(0), static_cast<int>(state.range(1)));
  if (!el::cuda::decode_layer_takes(s.x0, s.layers[0], s.inv_freq, s.kc[0], s.vc[0])) {
    state.SkipWithError("decode_layer_takes refused the 1.1B layer");
    return;
  }
  const bool one_launch = state.range(2) != 0;
  const double kv = 2.0 * double(state.range(0) + 1) * kHkv * kD * 2.0;
  el::bench_util::time_batches(state, 1, kLayers * (s.weight_bytes_per_layer + kv),
                               [&] { run_step(s, one_launch); });
  state.counters["us/layer"] = state.counters["us/call"] / double(kLayers);
}
BENCHMARK(BM_DecodeLayers)
    ->ArgNames({"pos", "bits", "launch"})
    ->Args({255, 16, 1})
    ->Args({255, 16, 0})
    ->Args({1023, 16, 1})
    ->Args({1023, 16, 0})
    ->Args({255, 8, 1})
    ->Args({255, 8, 0})
    ->Args({255, 4, 1})
    ->Args({255, 4, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Phase names of the trace slots written by cuda_decode_layer.cu.
const char* const kSlotNames[] = {
    "kernel start",       "after PDL wait",      "A: norm done",       "A: qkv words stored",
    "",                   "B: attention done",   "C: attention arrived", "C: o rows + add done",
    "D: x arrived",       "D: norm done",        "D: gate/up + SwiGLU done", "E: h arrived",
    "E: down rows + add done", "", "", "", "", "", "", "", "",
    "A: norm inputs loaded", ""};

int trace_main(int bits, bool one_launch) {
  if (!el::cuda::register_backend(0).ok()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  Step s = make_step(255, bits);
  el::Backend& be = el::backend_for(gpu());
  const int grid = el::cuda::ctx().sm_count;
  const int slots = el::cuda::decode_layer_trace(nullptr);
  std::vector<Tensor> bufs;
  for (int r = 0; r < 3; ++r) run_step(s, one_launch);  // warm-up
  be.synchronize();
  // The whole step's stamps, [layer, block, slot]; then read two middle layers.
  std::vector<unsigned long long> host(static_cast<size_t>(grid * slots) * kLayers, 0);
  Tensor buf = Tensor::zeros({int64_t(host.size()) * 8}, DType::u8, gpu());
  auto* base = static_cast<unsigned long long*>(buf.raw());
  if (one_launch) {
    el::cuda::decode_layer_trace(base);
    run_step(s, true);
  } else {
    for (int64_t l = 0; l < kLayers; ++l) {
      el::cuda::decode_layer_trace(base + l * grid * slots);
      Tensor& in = (l % 2 == 0) ? s.x0 : s.x1;
      Tensor& out = (l % 2 == 0) ? s.x1 : s.x0;
      el::cuda::decode_layer(in, s.layers[l], s.inv_freq, s.pos, s.kc[l], s.vc[l], out);
    }
  }
  el::cuda::decode_layer_trace(nullptr);
  be.synchronize();
  Tensor h = Tensor::empty({int64_t(host.size()) * 8}, DType::u8, el::Device::cpu());
  h.copy_from(buf);
  std::memcpy(host.data(), h.raw(), host.size() * 8);
  for (int64_t l : {int64_t{10}, int64_t{11}}) {
    const unsigned long long* t = host.data() + l * grid * slots;
    unsigned long long t0 = ~0ull, prev_end = 0;
    for (int b = 0; b < grid; ++b) t0 = std::min(t0, t[b * slots]);
    if (l > 0) {
      const unsigned long long* p = host.data() + (l - 1) * grid * slots;
      for (int b = 0; b < grid; ++b) prev_end = std::max(prev_end, p[b * slots + 12]);
    }
    std::printf("layer %lld, %s (us from the earliest block start; previous layer's last block "
                "ended at %+.2f)\n",
                static_cast<long long>(l), one_launch ? "one launch a step" : "a launch a layer",
                (double(prev_end) - double(t0)) * 1e-3);
    for (int k : {0, 1, 21, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12}) {
      double sum = 0, mx = 0, mn = 1e30;
      for (int b = 0; b < grid; ++b) {
        const double v = (double(t[b * slots + k]) - double(t0)) * 1e-3;
        sum += v;
        mx = std::max(mx, v);
        mn = std::min(mn, v);
      }
      std::printf("  %-26s mean %7.2f  min %7.2f  max %7.2f\n", kSlotNames[k], sum / grid, mn, mx);
    }
    for (int k : {16, 13, 19, 20, 14, 17}) {  // attention units (17: mergers) only, 0 elsewhere
      double sum = 0, mx = 0;
      int n = 0;
      for (int b = 0; b < grid; ++b) {
        if (t[b * slots + k] == 0) continue;
        const double v = (double(t[b * slots + k]) - double(t0)) * 1e-3;
        sum += v;
        mx = std::max(mx, v);
        ++n;
      }
      const char* name = k == 16   ? "B: unit's queries rotated"
                         : k == 13 ? "B: unit's scores done"
                         : k == 19 ? "B: unit's softmax done"
                         : k == 20 ? "B: thread 0's P V stored"
                         : k == 14 ? "B: unit's output written"
                                   : "B: merge done";
      std::printf("  %-26s mean %7.2f  max %7.2f  (%d units)\n", name, n ? sum / n : 0.0, mx, n);
    }
    double sum = 0, mx = 0;
    for (int b = 0; b < grid; ++b) {
      const double v = (double(t[b * slots + 15]) - double(t0)) * 1e-3;
      sum += v;
      mx = std::max(mx, v);
    }
    std::printf("  %-26s mean %7.2f  max %7.2f\n", "producer: last copy issued", sum / grid, mx);
    // -DEL_DECODE_WINDOW_TRACE builds: window w's issue (slot 23 + w), arrival (39 + w)
    if (slots >= 55) {
      for (int w = 0; w < 16; ++w) {
        double si = 0, sr = 0, mr = 0;
        int n = 0;
        for (int b = 0; b < grid; ++b) {
          const unsigned long long ti = t[b * slots + 23 + w], tr = t[b * slots + 39 + w];
          if (ti == 0 || tr == 0) continue;
          si += (double(ti) - double(t0)) * 1e-3;
          const double r = (double(tr) - double(t0)) * 1e-3;
          sr += r;
          mr = std::max(mr, r);
          ++n;
        }
        if (n)
          std::printf("  window %2d: issued mean %7.2f  ready mean %7.2f max %7.2f (%d blocks)\n", w,
                      si / n, sr / n, mr, n);
      }
    }
  }
  std::printf("weights per layer %.1f MB: %.1f us at 3.35 TB/s\n", s.weight_bytes_per_layer * 1e-6,
              s.weight_bytes_per_layer / 3.35e12 * 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--trace") == 0) {
    const bool per_layer = argc > 3 && std::strcmp(argv[3], "per-layer") == 0;
    return trace_main(argc > 2 ? std::atoi(argv[2]) : 16, !per_layer);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
