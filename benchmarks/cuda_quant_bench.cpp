// cuda_quant_bench.cpp — the weight-only int4/int8 matmul (cuda::quant_matmul,
// group 128, symmetric) against the dense bf16 GEMM of the backend
// on the TinyLlama 1.1B projection shapes, JSON Lines on stdout. Dense rows:
// "bf16_dense" is the backend's gemm as a model calls it (the dense GEMV of
// cuda_gemv.cu for M <= 8, cuBLASLt above; "path" says which), the baseline
// of speedup_vs_bf16; "bf16_cublaslt" forces cuBLASLt for comparison.
// "int4_g128_gemv" / "int8_g128_gemv" force the block-per-16-rows GEMV where
// the automatic path is the one-token stream (cuda_stream_gemv.cu).
//
// Shapes (K x N): 2048 x 2560 (qkv), 2048 x 2048 (o), 2048 x 11264 (gate_up),
// 5632 x 2048 (down), 2048 x 32000 (lm head); M (tokens) 1, 8, 32, 512, 4096.
// One line per (kind, shape, M):
//   {"kind":"int4_g128","k":2048,"n":2560,"m":1,"path":"gemv","us":..,
//    "gbps":..,"tflops":..,"hbm_frac":..,"speedup_vs_bf16":..}
// bytes = weight storage (packed + scales; bf16: 2 N K) + x + y (bf16);
// hbm_frac = gbps / the HBM peak (memory clock x bus width of the device
// attributes; gpu_peaks.h has no bandwidth column yet). After each M, a
// "model_linear" line adds up one decode step's projections (22 layers of
// qkv, o, gate_up, down, plus the lm head).
// Cold weights: every timed call uses the next of C copies of the weight,
// the copies spanning >= 3x the L2, so weights stream from HBM as they do in
// a real step (each layer has its own). x stays hot (it is, in a model).
// Timing: 3 warm-ups, then 7 batches of >= 2 ms (or C calls) timed with CUDA
// events on the backend stream; the median batch / calls. Back-to-back
// launches, no CUDA graph: launch gaps count, as in an eager decode step.
//   cuda_quant_bench [--quick] [--m 1,8,32]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_gemv.h"
#include "cuda/cuda_kernels.h"
#include "ops/backend.h"
#include "cuda_bench_util.h"

namespace {

using el::bench_util::gpu;
using el::bench_util::random_gpu;

using el::DType;
using el::Tensor;

struct Shape2 {
  const char* name;
  int64_t k, n;
  int per_token;  // times per decode step of the 22-layer model
};

const Shape2 kShapes[] = {{"qkv", 2048, 2560, 22},
                          {"o", 2048, 2048, 22},
                          {"gate_up", 2048, 11264, 22},
                          {"down", 5632, 2048, 22},
                          {"lm_head", 2048, 32000, 1}};

// Random packed weight (every byte value occurs), f16 scales around 0.01.
el::QuantizedWeight random_quant(int64_t n, int64_t k, int bits, uint64_t seed) {
  el::Rng rng(seed);
  el::QuantizedWeight w;
  w.bits = bits;
  w.group_size = 128;
  w.symmetric = true;
  w.out_features = n;
  w.in_features = k;
  Tensor q = Tensor::empty({n, k * bits / 8}, DType::u8);
  uint8_t* qp = q.data<uint8_t>();
  for (int64_t i = 0; i < q.numel(); i += 8) {
    const uint64_t r = rng.next_u64();
    for (int64_t j = 0; j < 8 && i + j < q.numel(); ++j) {
      qp[i + j] = static_cast<uint8_t>(r >> (8 * j));
    }
  }
  Tensor s = Tensor::empty({n, k / 128}, DType::f16);
  uint16_t* sp = s.data<uint16_t>();
  for (int64_t i = 0; i < s.numel(); ++i) sp[i] = el::f32_to_f16(0.01f * (0.5f + rng.uniform()));
  w.qweight = q.to(gpu());
  w.scales = s.to(gpu());
  return w;
}

el::QuantizedWeight clone_quant(const el::QuantizedWeight& w) {
  el::QuantizedWeight c = w;
  c.qweight = w.qweight.clone();
  c.scales = w.scales.clone();
  return c;
}

// Copies of a weight of `bytes` so that all of them span >= 3x the L2.
int copies_for(int64_t bytes, int64_t l2_bytes) {
  const int64_t c = (3 * l2_bytes + bytes - 1) / std::max<int64_t>(bytes, 1);
  return static_cast<int>(std::clamp<int64_t>(c, 1, 64));
}

// Median microseconds per call of call(i), i cycling over `copies`.
template <class F>
double time_us(int copies, F call) {
  el::Backend& be = el::backend_for(gpu());
  for (int i = 0; i < 3; ++i) call(i % copies);
  be.synchronize();
  el::cuda::EventTimer timer;
  timer.start();
  for (int i = 0; i < copies; ++i) call(i);
  timer.stop();
  const double est_ms = std::max(1e-4, static_cast<double>(timer.elapsed_ms()) / copies);
  const int calls = std::max(copies, static_cast<int>(std::ceil(2.0 / est_ms)));
  std::vector<double> per_call;
  for (int b = 0; b < 7; ++b) {
    timer.start();
    for (int i = 0; i < calls; ++i) call(i % copies);
    timer.stop();
    per_call.push_back(static_cast<double>(timer.elapsed_ms()) * 1e3 / calls);
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end == p) break;
    out.push_back(v);
    p = *end == ',' ? end + 1 : end;
  }
  return out;
}

struct Totals {
  double us = 0, bytes = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> ms = {1, 8, 32, 512, 4096};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      ms = {1, 8};
    } else if (std::strcmp(argv[i], "--m") == 0 && i + 1 < argc) {
      ms = parse_list(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--m 1,8,32]\n", argv[0]);
      return 2;
    }
  }
  const el::Status st = el::cuda::register_backend(0);
  if (!st.ok()) {
    std::fprintf(stderr, "cuda_quant_bench: %s\n", st.error().message().c_str());
    return 1;
  }
  const el::Result<el::cuda::DeviceInfo> info = el::cuda::device_info(0);
  const int64_t l2 = info.ok() ? info.value().l2_bytes : (int64_t{50} << 20);
  const double peak = el::bench_util::hbm_peak_gbps(0);
  std::printf("{\"device\":\"%s\",\"sms\":%d,\"l2_bytes\":%lld,\"hbm_peak_gbps\":%.1f}\n",
              info.ok() ? info.value().name.c_str() : "?", info.ok() ? info.value().sm_count : 0,
              static_cast<long long>(l2), peak);
  std::fflush(stdout);

  el::Backend& be = el::backend_for(gpu());
  // "_gemv": the same weights through the block-per-16-rows GEMV where
  // automatic takes the stream path (one token, large weights), else the
  // automatic path (so its model_linear line is the step without the stream)
  const char* kinds[] = {"bf16_dense", "bf16_cublaslt", "int8_g128", "int4_g128",
                         "int8_g128_gemv", "int4_g128_gemv"};
  std::map<std::pair<std::string, int64_t>, Totals> totals;
  for (const Shape2& sh : kShapes) {
    // Weights: dense copies, then int8 and int4 copies.
    const int64_t dense_bytes = 2 * sh.n * sh.k;
    std::vector<Tensor> dense;
    dense.push_back(random_gpu({sh.n, sh.k}, DType::bf16, 11));
    for (int i = 1; i < copies_for(dense_bytes, l2); ++i) dense.push_back(dense[0].clone());
    std::vector<el::QuantizedWeight> q8, q4;
    q8.push_back(random_quant(sh.n, sh.k, 8, 21));
    for (int i = 1; i < copies_for(q8[0].storage_bytes(), l2); ++i) {
      q8.push_back(clone_quant(q8[0]));
    }
    q4.push_back(random_quant(sh.n, sh.k, 4, 31));
    for (int i = 1; i < copies_for(q4[0].storage_bytes(), l2); ++i) {
      q4.push_back(clone_quant(q4[0]));
    }

    for (int64_t m : ms) {
      const Tensor x = random_gpu({m, sh.k}, DType::bf16, 41);
      Tensor y = Tensor::empty({m, sh.n}, DType::bf16, gpu());
      const double flops = 2.0 * m * sh.n * sh.k;
      const double io_bytes = 2.0 * m * sh.k + 2.0 * m * sh.n;
      double dense_us = 0;
      for (const char* kind : kinds) {
        double us = 0, wbytes = 0;
        std::string path;
        if (std::strcmp(kind, "bf16_dense") == 0) {
          us = time_us(static_cast<int>(dense.size()), [&](int i) {
            be.gemm(x, false, dense[static_cast<size_t>(i)], true, y, 1.f, 0.f);
          });
          wbytes = static_cast<double>(dense_bytes);
          path = el::cuda::dense_gemv_takes(x, false, dense[0], true, y) ? "gemv" : "cublaslt";
          dense_us = us;
        } else if (std::strcmp(kind, "bf16_cublaslt") == 0) {
          us = time_us(static_cast<int>(dense.size()), [&](int i) {
            el::cuda::gemm_cublaslt(x, false, dense[static_cast<size_t>(i)], true, y, 1.f, 0.f);
          });
          wbytes = static_cast<double>(dense_bytes);
          path = "cublaslt";
        } else {
          std::vector<el::QuantizedWeight>& ws = kind[3] == '8' ? q8 : q4;
          const bool forced = std::strstr(kind, "_gemv") != nullptr;
          const el::cuda::QuantPath auto_path = el::cuda::quant_matmul_path(x, ws[0]);
          const el::cuda::QuantPath p =
              forced && auto_path == el::cuda::QuantPath::stream ? el::cuda::QuantPath::gemv
                                                                 : auto_path;
          us = time_us(static_cast<int>(ws.size()), [&](int i) {
            el::cuda::quant_matmul_with(x, ws[static_cast<size_t>(i)], Tensor(), y, p);
          });
          wbytes = static_cast<double>(ws[0].storage_bytes());
          path = el::cuda::quant_path_name(p);
        }
        const double bytes = wbytes + io_bytes;
        const double gbps = bytes / (us * 1e-6) * 1e-9;
        std::printf(
            "{\"kind\":\"%s\",\"shape\":\"%s\",\"k\":%lld,\"n\":%lld,\"m\":%lld,\"path\":\"%s\","
            "\"copies\":%zu,\"us\":%.3f,\"gbps\":%.1f,\"tflops\":%.2f,\"hbm_frac\":%.3f,"
            "\"speedup_vs_bf16\":%.3f}\n",
            kind, sh.name, static_cast<long long>(sh.k), static_cast<long long>(sh.n),
            static_cast<long long>(m), path.c_str(),
            std::strncmp(kind, "bf16", 4) == 0 ? dense.size()
                                                  : (kind[3] == '8' ? q8.size() : q4.size()),
            us, gbps, flops / (us * 1e-6) * 1e-12, peak > 0 ? gbps / peak : 0.0, dense_us / us);
        std::fflush(stdout);
        Totals& t = totals[{kind, m}];
        t.us += us * sh.per_token;
        t.bytes += bytes * sh.per_token;
      }
    }
  }
  for (int64_t m : ms) {
    const double dense_us = totals[{"bf16_dense", m}].us;
    for (const char* kind : kinds) {
      const Totals& t = totals[{kind, m}];
      const double gbps = t.bytes / (t.us * 1e-6) * 1e-9;
      std::printf(
          "{\"kind\":\"%s\",\"shape\":\"model_linear\",\"m\":%lld,\"us\":%.1f,\"gbps\":%.1f,"
          "\"hbm_frac\":%.3f,\"speedup_vs_bf16\":%.3f}\n",
          kind, static_cast<long long>(m), t.us, gbps, peak > 0 ? gbps / peak : 0.0,
          dense_us / t.us);
    }
  }
  return 0;
}
