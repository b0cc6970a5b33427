// cuda_mamba_bench.cpp — Mamba-1 on the CUDA backend, bf16, timed with CUDA
// events on the backend's stream:
//  1. the fused selective scan (cuda_mamba.cu) at mamba-1.5b's layer shape
//     (I = 4096, N = 16) and 8K tokens: forward (with the backward's
//     checkpoints) and backward, each as ms and achieved GB/s against the
//     datasheet HBM bandwidth (cuda/gpu_peaks.h). Bytes counted once each:
//     forward reads u, delta, z, B, C and writes y and the checkpoints;
//     backward reads dy, u, delta, z, B, C, the checkpoints, writes du,
//     ddelta, dz and adds dB, dC (f32). The kernel is also bound by its
//     exp per state and step (B T I N of them per pass, three passes in the
//     backward), so its GB/s is a lower bound of what memory could give;
//     the line prints the exp rate beside it, and the segments over time
//     the forward / backward ran (cuda_mamba_scan_v2.cuh; EL_MAMBA_SCAN_SEGMENTS).
//  2. the causal conv with SiLU, forward and backward, at the same shape.
//  3. a training step (loss, backward, AdamW; parameters bf16 with f32
//     masters) of a whole model at 8K tokens per step (B 1, T 8192):
//     mamba-1.5b against qwen2.5-1.5b (its paired Transformer, parameter
//     counts within 1%), tokens/s each and the ratio (issue 8 point 6:
//     Mamba above the Transformer at equal parameter count).
//
//   cuda_mamba_bench            all three (configs/models must be findable:
//                               run from the source tree or set EFFICIENTLLM_HOME)
//   cuda_mamba_bench --quick    1 and 2, and the step at lite-mamba / lite-gqa, T 1024, B 8
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <tuple>

#include "cuda/cuda_backend.h"
#include "cuda/gpu_peaks.h"
#include "cuda_bench_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/backend.h"

// The scan's segments over time of the last forward / backward
// (src/cuda/cuda_mamba.cuh, a CUDA-only header): printed beside the times.
namespace el::cuda::mamba {
int scan_last_segments(bool backward);
}

namespace {

using el::DType;
using el::Tensor;
using el::bench_util::gpu;
using el::bench_util::random_gpu;

using el::bench_util::median_ms;

double g_hbm_gbps = 0;  // the datasheet bandwidth, 0 when the GPU is not in the table

std::string bandwidth(double bytes, double ms) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  char buf[96];
  if (g_hbm_gbps > 0) {
    std::snprintf(buf, sizeof(buf), "%7.1f GB/s (%4.1f%% of %.0f)", gbps, 100.0 * gbps / g_hbm_gbps,
                  g_hbm_gbps);
  } else {
    std::snprintf(buf, sizeof(buf), "%7.1f GB/s", gbps);
  }
  return buf;
}

void scan_and_conv(int64_t B, int64_t T, int64_t I, int64_t N, int64_t K) {
  el::Backend& be = el::backend_for(gpu());
  const DType dt = DType::bf16;
  const el::Shape act{B, T, I}, bc{B, T, N};
  const Tensor u = random_gpu(act, dt, 1), delta = random_gpu(act, dt, 2, 0.5f),
               z = random_gpu(act, dt, 3), Bm = random_gpu(bc, dt, 4), Cm = random_gpu(bc, dt, 5);
  const Tensor A_log = random_gpu({I, N}, dt, 6, 0.3f), D = random_gpu({I}, dt, 7),
               bias = random_gpu({I}, dt, 8, 0.5f), dy = random_gpu(act, dt, 9);
  auto empty = [&](const el::Shape& s, DType t) { return Tensor::empty(s, t, gpu()); };
  const int64_t L = be.mamba_scan_chunk();
  Tensor y = empty(act, dt), ckpt = empty({B, I, (T + L - 1) / L, N}, DType::f32), none;
  Tensor du = empty(act, dt), ddelta = empty(act, dt), dz = empty(act, dt);
  Tensor dA = empty({I, N}, DType::f32), dB = empty(bc, DType::f32), dC = empty(bc, DType::f32),
         dD = empty({I}, DType::f32), dbias = empty({I}, DType::f32);
  auto fwd = [&] {
    be.mamba_scan_forward(u, delta, A_log, Bm, Cm, D, z, bias, Tensor(), none, y, ckpt);
  };
  auto bwd = [&] {
    be.mamba_scan_backward(dy, u, delta, A_log, Bm, Cm, D, z, bias, ckpt, du, ddelta, dA, dB, dC,
                           dD, dz, dbias);
  };
  fwd();
  be.synchronize();
  const double f = median_ms(fwd), b = median_ms(bwd);
  const double act_bytes = static_cast<double>(B * T * I) * 2, bc_bytes = double(B * T * N) * 2;
  const double ckpt_bytes = static_cast<double>(ckpt.nbytes());
  const double fwd_bytes = 4 * act_bytes + 2 * bc_bytes + ckpt_bytes;
  const double bwd_bytes = 7 * act_bytes + 2 * bc_bytes + ckpt_bytes + 2 * double(B * T * N) * 4;
  const double exps = static_cast<double>(B * T * I * N);
  std::printf("scan B %lld T %lld I %lld N %lld bf16 | fwd %7.3f ms %s %6.2f Texp/s | bwd %7.3f "
              "ms %s %6.2f Texp/s (x3) | segments %d / %d\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(I),
              static_cast<long long>(N), f, bandwidth(fwd_bytes, f).c_str(),
              exps / (f * 1e-3) / 1e12, b, bandwidth(bwd_bytes, b).c_str(),
              3 * exps / (b * 1e-3) / 1e12, el::cuda::mamba::scan_last_segments(false),
              el::cuda::mamba::scan_last_segments(true));

  const Tensor x = random_gpu(act, dt, 10), w = random_gpu({I, K}, dt, 11, 0.5f),
               cb = random_gpu({I}, dt, 12);
  Tensor out = empty(act, dt), dx = empty(act, dt), dw = empty({I, K}, DType::f32),
         dcb = empty({I}, DType::f32);
  auto cfwd = [&] { be.mamba_conv1d_forward(x, w, cb, Tensor(), none, out); };
  auto cbwd = [&] { be.mamba_conv1d_backward(dy, x, w, cb, dx, dw, dcb); };
  const double cf = median_ms(cfwd), cbk = median_ms(cbwd);
  std::printf("conv B %lld T %lld I %lld K %lld bf16 | fwd %7.3f ms %s | bwd %7.3f ms %s\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(I),
              static_cast<long long>(K), cf, bandwidth(2 * act_bytes, cf).c_str(), cbk,
              bandwidth(3 * act_bytes, cbk).c_str());
  std::fflush(stdout);
}

// Tokens/s of a training step (loss + backward + AdamW) of `card_name`.
double train_tokens_per_s(const std::string& card_name, int64_t B, int64_t T) {
  auto card = el::find_model_card(card_name);
  if (!card.ok()) {
    std::fprintf(stderr, "cuda_mamba_bench: %s\n", card.error().message().c_str());
    return 0;
  }
  auto t = el::bench_util::time_train_step(*card, B, T);
  if (!t.ok()) {
    std::fprintf(stderr, "cuda_mamba_bench: %s\n", t.error().message().c_str());
    return 0;
  }
  std::printf("train %-14s %6.3fB params B %lld T %lld bf16 | step %8.2f ms  %9.0f tokens/s  "
              "%6.1f TFLOP/s (counted)\n",
              card_name.c_str(), static_cast<double>(t->num_parameters) / 1e9,
              static_cast<long long>(B), static_cast<long long>(T), t->ms, t->tokens_per_s,
              t->flops.train() * t->tokens_per_s / 1e12);
  std::fflush(stdout);
  return t->tokens_per_s;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  const el::Status s = el::cuda::register_backend(0);
  if (!s.ok()) {
    std::fprintf(stderr, "cuda_mamba_bench: %s\n", s.error().message().c_str());
    return 1;
  }
  auto info = el::cuda::device_info(0);
  if (info.ok()) {
    std::printf("device: %s\n", el::cuda::describe(info.value()).c_str());
    g_hbm_gbps = el::cuda::datasheet_memory_gbps(info->name).value_or(0.0);
  }
  scan_and_conv(1, 8192, 4096, 16, 4);  // mamba-1.5b's mixer at 8K tokens
  if (!quick) scan_and_conv(4, 2048, 4096, 16, 4);
  const auto [mamba, transformer, B, T] =
      quick ? std::make_tuple("lite-mamba", "lite-gqa", int64_t{8}, int64_t{1024})
            : std::make_tuple("mamba-1.5b", "qwen2.5-1.5b", int64_t{1}, int64_t{8192});
  const double tm = train_tokens_per_s(mamba, B, T);
  const double tt = train_tokens_per_s(transformer, B, T);
  if (tm > 0 && tt > 0) {
    std::printf("mamba / transformer training tokens/s at %lld tokens per step: %.2fx\n",
                static_cast<long long>(B * T), tm / tt);
  }
  return 0;
}
