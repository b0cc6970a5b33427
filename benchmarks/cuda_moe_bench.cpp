// cuda_moe_bench.cpp — the mixture of experts (nn/moe.h) on the CUDA
// backend, bf16, timed with CUDA events on the backend's stream:
//  1. the grouped GEMM (cuda_moe_gemm.cu) of one MoE projection — every
//     expert's gate/up over its tokens in one launch, dropless top-2 routing
//     of random tokens over 8 experts — forward, dX and dW, against one dense
//     cuBLASLt GEMM of the same FLOPs (the dense MLP of a model with the
//     same active parameters: width k x the expert width), TFLOP/s each;
//  2. a training step (loss with the router losses, backward, AdamW;
//     parameters bf16 with f32 masters) of an 8-expert top-2 MoE model
//     against the dense model with the same active parameters: the same
//     card with moe_experts 0 and d_ff = k x the expert width (so a token's
//     MLP FLOPs are equal; the router's E x C is the only difference),
//     tokens/s each and the ratio (issue 8 point 6: MoE >= 0.8x dense).
//
//   cuda_moe_bench            the 0.5B shape (lite-moe: 24 layers, hidden 896,
//                             experts of 4864, vocab 8192) at B 8, T 1024
//   cuda_moe_bench --quick    a 4-layer hidden-1024 model at B 8, T 512
//   --gemm-only               part 1 only (the grouped GEMM against dense)
//   --grad-accum N            N micro-batches (forward + backward) per AdamW
//                             update, both models (default 1). The update's
//                             bytes scale with all parameters, the MoE
//                             model's 3x the dense one's at 8 experts; the
//                             paper trains on many GPUs with micro-batch x
//                             GPUs tokens per update, so the ratio at N > 1
//                             is the one its setting sees per GPU only when
//                             the optimizer state is sharded (ZeRO) —
//                             report N with the figure.
// configs/models must be findable (run from the source tree or set
// EFFICIENTLLM_HOME).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/cuda_backend.h"
#include "cuda_bench_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace {

using el::DType;
using el::Tensor;
using el::bench_util::gpu;
using el::bench_util::median_ms;
using el::bench_util::random_gpu;

double tflops(double flops, double ms) { return flops / (ms * 1e-3) / 1e12; }

// One MoE projection (gate and up of every expert: [E, 2F, C]) on N tokens
// routed top-k, against the dense GEMM of the same FLOPs.
void grouped_gemm(int64_t n, int64_t c, int64_t f, int64_t e, int64_t k) {
  el::Backend& be = el::backend_for(gpu());
  const DType dt = DType::bf16;
  const int64_t m = n * k;
  // Random top-k routes (the router on random logits), grouped dropless.
  const Tensor logits = random_gpu({n, e}, DType::f32, 11);
  const el::ops::MoeRouting r = el::ops::moe_router(logits, k, el::MoeScore::softmax, true);
  const el::ops::MoeGrouping g = el::ops::moe_group(r.ids, e);
  const Tensor x = random_gpu({m, c}, dt, 1), w = random_gpu({e, 2 * f, c}, dt, 2, 0.02f);
  const Tensor dy = random_gpu({m, 2 * f}, dt, 3);
  Tensor y = Tensor::empty({m, 2 * f}, dt, gpu()), dx = Tensor::empty({m, c}, dt, gpu()),
         dw = Tensor::empty({e, 2 * f, c}, dt, gpu());
  const double fwd = median_ms([&] { be.grouped_gemm(x, w, true, g.offsets, y); });
  const double bdx = median_ms([&] { be.grouped_gemm(dy, w, false, g.offsets, dx); });
  const double bdw = median_ms([&] { be.grouped_gemm_dw(dy, x, g.offsets, dw); });
  // Dense: n tokens through one [k 2F, C] weight: the same 2 m 2F C FLOPs.
  const Tensor xd = random_gpu({n, c}, dt, 4), wd = random_gpu({k * 2 * f, c}, dt, 5, 0.02f);
  const Tensor dyd = random_gpu({n, k * 2 * f}, dt, 6);
  Tensor yd = Tensor::empty({n, k * 2 * f}, dt, gpu()), dxd = Tensor::empty({n, c}, dt, gpu()),
         dwd = Tensor::empty({k * 2 * f, c}, dt, gpu());
  const double dfwd = median_ms([&] { be.gemm(xd, false, wd, true, yd, 1.f, 0.f); });
  const double ddx = median_ms([&] { be.gemm(dyd, false, wd, false, dxd, 1.f, 0.f); });
  const double ddw = median_ms([&] { be.gemm(dyd, true, xd, false, dwd, 1.f, 0.f); });
  const double flops = 2.0 * static_cast<double>(m) * 2 * f * c;
  std::printf("grouped GEMM N %lld C %lld F %lld E %lld k %lld bf16 | fwd %7.3f ms %6.1f TF  "
              "dX %7.3f ms %6.1f TF  dW %7.3f ms %6.1f TF | dense same FLOPs: fwd %7.3f ms "
              "%6.1f TF  dX %7.3f ms %6.1f TF  dW %7.3f ms %6.1f TF | grouped / dense time "
              "%.2fx\n",
              static_cast<long long>(n), static_cast<long long>(c), static_cast<long long>(f),
              static_cast<long long>(e), static_cast<long long>(k), fwd, tflops(flops, fwd), bdx,
              tflops(flops, bdx), bdw, tflops(flops, bdw), dfwd, tflops(flops, dfwd), ddx,
              tflops(flops, ddx), ddw, tflops(flops, ddw), (fwd + bdx + bdw) / (dfwd + ddx + ddw));
  std::fflush(stdout);
}

// Tokens/s of a training step (loss + backward + AdamW) of `card`; *fwd_bwd_ms
// gets the step without the AdamW update.
double train_tokens_per_s(const el::ModelCard& card, int64_t B, int64_t T, int accum,
                          double* fwd_bwd_ms) {
  auto t = el::bench_util::time_train_step(card, B, T, accum);
  if (!t.ok()) {
    std::fprintf(stderr, "cuda_moe_bench: %s\n", t.error().message().c_str());
    return 0;
  }
  *fwd_bwd_ms = t->fwd_bwd_ms;
  const el::ParameterCounts counts = el::count_parameters(card);
  std::printf("train %-22s %6.3fB params (%6.3fB active) B %lld T %lld x %d bf16 | step %8.2f ms  "
              "%9.0f tokens/s  %6.1f TFLOP/s (counted, active) | without AdamW %8.2f ms\n",
              card.name.c_str(), static_cast<double>(counts.total) / 1e9,
              static_cast<double>(counts.active) / 1e9, static_cast<long long>(B),
              static_cast<long long>(T), accum, t->ms, t->tokens_per_s,
              t->flops.train() * t->tokens_per_s / 1e12, t->fwd_bwd_ms);
  std::fflush(stdout);
  return t->tokens_per_s;
}

// The dense card with the MoE card's active MLP: d_ff = k x the expert width.
el::ModelCard dense_of(const el::ModelCard& moe) {
  el::ModelCard d = moe;
  d.name = moe.name + "-dense-active";
  d.d_ff = moe.moe_top_k * moe.moe_expert_d_ff() + moe.moe_shared_width();
  d.moe_experts = 0;
  const el::ModelCard defaults;
  d.moe_top_k = defaults.moe_top_k;
  d.moe_d_ff = defaults.moe_d_ff;
  d.moe_router = defaults.moe_router;
  d.moe_norm_topk_prob = defaults.moe_norm_topk_prob;
  d.moe_shared_experts = defaults.moe_shared_experts;
  d.moe_shared_d_ff = defaults.moe_shared_d_ff;
  d.moe_aux_loss_coef = defaults.moe_aux_loss_coef;
  d.moe_z_loss_coef = defaults.moe_z_loss_coef;
  d.moe_capacity_factor = defaults.moe_capacity_factor;
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, gemm_only = false;
  int accum = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--gemm-only") == 0) {
      gemm_only = true;
    } else if (std::strcmp(argv[i], "--grad-accum") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      accum = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--gemm-only] [--grad-accum N > 0]\n", argv[0]);
      return 2;
    }
  }
  const el::Status s = el::cuda::register_backend(0);
  if (!s.ok()) {
    std::fprintf(stderr, "cuda_moe_bench: %s\n", s.error().message().c_str());
    return 1;
  }
  auto info = el::cuda::device_info(0);
  if (info.ok()) std::printf("device: %s\n", el::cuda::describe(info.value()).c_str());
  el::ModelCard moe;
  int64_t B = 8, T = 1024;
  if (quick) {
    auto r = el::parse_model_card(
        "name: moe-quick\nn_layer: 4\nd_model: 1024\nn_head: 16\nn_kv_head: 4\nd_ff: 2816\n"
        "vocab_size: 8192\nmax_seq_len: 512\nmoe_experts: 8\nmoe_top_k: 2\n",
        "cuda_moe_bench");
    if (!r.ok()) {
      std::fprintf(stderr, "cuda_moe_bench: %s\n", r.error().message().c_str());
      return 1;
    }
    moe = r.value();
    T = 512;
  } else {
    auto r = el::find_model_card("lite-moe");
    if (!r.ok()) {
      std::fprintf(stderr, "cuda_moe_bench: %s\n", r.error().message().c_str());
      return 1;
    }
    moe = r.value();
  }
  grouped_gemm(B * T, moe.d_model, moe.moe_expert_d_ff(), moe.moe_experts, moe.moe_top_k);
  if (gemm_only) return 0;
  double fbm = 0, fbd = 0;
  const double tm = train_tokens_per_s(moe, B, T, accum, &fbm);
  const double td = train_tokens_per_s(dense_of(moe), B, T, accum, &fbd);
  if (tm > 0 && td > 0) {
    // The second ratio leaves out AdamW, whose bytes scale with all (not active)
    // parameters and which a larger batch per update amortises.
    std::printf("moe / dense (same active parameters) training tokens/s, %d micro-batch(es) per "
                "update: %.2fx (target >= 0.80x); forward + backward only: %.2fx\n",
                accum, tm / td, fbd / fbm);
  }
  return 0;
}
