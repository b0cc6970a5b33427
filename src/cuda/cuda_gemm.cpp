// cuda_gemm.cpp — GEMM through cuBLASLt.
//
// Row-major c[M,N] = op(a) @ op(b) is, read column-major, c^T[N,M] =
// op(b)^T @ op(a)^T, so cuBLASLt gets b as its A operand and a as its B
// operand with the same transpose flags, and no data moves.
// Types (compute CUBLAS_COMPUTE_32F: f32 accumulation, f32 alpha/beta):
//   a, b f32          -> c f32 (true f32, not TF32: the CPU reference is f32)
//   a, b bf16 or f16  -> c f32 or the input type
//   a, b of different types (an f32 activation times a bf16 weight) -> both
//     widened to f32 first: exact, as the CPU computes it, but at the f32 rate;
//     run activations in the weights' dtype for tensor-core speed
//   any other c dtype -> computed into an f32 scratch, then rounded into c
// A plan (descriptors + an algorithm) is cached per shape, transposes, types,
// leading dimensions and pointer alignments: the heuristic query costs more
// than a small GEMM. The algorithm is the fastest of the heuristic's first
// kAutotuneCandidates, timed once on the plan's first call (the operands of
// that call, the result written to a scratch buffer so the call's own output
// and a beta = 1 accumulation are untouched); EL_GEMM_AUTOTUNE=0 keeps the
// heuristic's first choice (the same algorithm in every process, for
// bit-identical runs). The workspace is the context's 32 MiB.
// Small-M linears (decode: x[M <= 8, K] @ W[N, K]^T in bf16/f16) go to the
// dense GEMV of cuda_gemv.cu instead (cuda_gemv.h: dense_gemv_takes), which
// streams the weight at a larger fraction of the HBM bandwidth.
#include <cublasLt.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/cuda_gemv.h"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// Largest power of two (<= 256) dividing the address: what the kernels may assume.
uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}

struct PlanKey {
  int64_t m, n, k, lda, ldb;
  bool ta, tb;
  DType in, out;
  uint32_t align_a, align_b, align_c;
  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ta, tb, in, out, align_a, align_b, align_c);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;  // cuBLASLt's A, B, C/D
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // heuristic order; cleared once timed
};

constexpr int kAutotuneCandidates = 8;
// Outputs larger than this keep the heuristic's choice: timing them needs a
// scratch copy of the output (the LM head's logits would add a GiB to the
// peak memory the run reports).
constexpr int64_t kAutotuneMaxOutputBytes = int64_t{256} << 20;

bool autotune_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("EL_GEMM_AUTOTUNE");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

std::mutex g_plan_mu;
std::map<PlanKey, Plan> g_plans;  // never freed: a process has few distinct GEMM shapes

// Builds the plan of key (cuBLASLt A = our b, cuBLASLt B = our a).
Plan make_plan(const PlanKey& key) {
  Context& c = ctx();
  Plan p;
  EL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  EL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  EL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  // Stored (pre-op) shapes, column-major: a row-major [r, c] buffer is c x r, ld = c.
  const uint64_t a_rows = static_cast<uint64_t>(key.ldb);  // our b: [K,N] or [N,K]
  const uint64_t a_cols = static_cast<uint64_t>(key.tb ? key.n : key.k);
  const uint64_t b_rows = static_cast<uint64_t>(key.lda);  // our a: [M,K] or [K,M]
  const uint64_t b_cols = static_cast<uint64_t>(key.ta ? key.k : key.m);
  EL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.la, cuda_type(key.in), a_rows, a_cols, key.ldb));
  EL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lb, cuda_type(key.in), b_rows, b_cols, key.lda));
  EL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lc, cuda_type(key.out),
                                             static_cast<uint64_t>(key.n),
                                             static_cast<uint64_t>(key.m), key.n));
  cublasLtMatmulPreference_t pref = nullptr;
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = c.workspace_bytes;
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_b, sizeof(uint32_t)));
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_a, sizeof(uint32_t)));
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c, sizeof(uint32_t)));
  EL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c, sizeof(uint32_t)));
  cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates]{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      c.lt, p.op, p.la, p.lb, p.lc, p.lc, pref, kAutotuneCandidates, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    throw Exception(make_error(
        fmt::format("cuBLASLt has no algorithm for [{}, {}]{} @ [{}, {}]{} in {} -> {} ({})",
                    key.ta ? key.k : key.m, key.ta ? key.m : key.k, key.ta ? "^T" : "",
                    key.tb ? key.n : key.k, key.tb ? key.k : key.n, key.tb ? "^T" : "",
                    dtype_name(key.in), dtype_name(key.out),
                    st != CUBLAS_STATUS_SUCCESS ? cublas_status_name(st) : "none found"),
        "cuda gemm"));
  }
  p.algo = results[0].algo;
  const int64_t out_bytes = key.m * key.n * static_cast<int64_t>(dtype_size(key.out));
  if (autotune_enabled() && found > 1 && out_bytes <= kAutotuneMaxOutputBytes) {
    for (int i = 0; i < found; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS) p.candidates.push_back(results[i].algo);
    }
  }
  return p;
}

// Times each candidate of p on these operands (3 runs after a warm-up, the
// best run counts) and keeps the fastest; the output goes to a scratch buffer.
void autotune(Plan& p, const void* cublas_a, const void* cublas_b, const Tensor& c, float alpha,
              float beta) {
  Context& cx = ctx();
  Tensor scratch = Tensor::empty(c.shape(), c.dtype(), c.device());
  cudaEvent_t start = nullptr, stop = nullptr;
  EL_CUDA_CHECK(cudaEventCreate(&start));
  EL_CUDA_CHECK(cudaEventCreate(&stop));
  float best = INFINITY;
  for (const cublasLtMatmulAlgo_t& algo : p.candidates) {
    const auto run = [&] {
      return cublasLtMatmul(cx.lt, p.op, &alpha, cublas_a, p.la, cublas_b, p.lb, &beta, c.raw(),
                            p.lc, scratch.raw(), p.lc, &algo, cx.workspace, cx.workspace_bytes,
                            cx.stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that refuses is skipped
    float fastest = INFINITY;
    for (int rep = 0; rep < 3; ++rep) {
      EL_CUDA_CHECK(cudaEventRecord(start, cx.stream));
      (void)run();
      EL_CUDA_CHECK(cudaEventRecord(stop, cx.stream));
      EL_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.f;
      EL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      fastest = std::min(fastest, ms);
    }
    if (fastest < best) {
      best = fastest;
      p.algo = algo;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  (void)cudaGetLastError();  // a refused candidate must not leave a sticky launch error
  p.candidates.clear();
}

Plan& plan_for(const PlanKey& key) {
  std::lock_guard<std::mutex> lock(g_plan_mu);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(key)).first;
  return it->second;
}

Tensor widened(const Tensor& t) {
  if (t.dtype() == DType::f32) return t;
  Tensor f = Tensor::empty(t.shape(), DType::f32, t.device());
  copy(t, f);
  return f;
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  if (dense_gemv_takes(a, trans_a, b, trans_b, c)) {
    dense_gemv(a, b, c, alpha, beta);
    return;
  }
  gemm_cublaslt(a, trans_a, b, trans_b, c, alpha, beta);
}

void gemm_cublaslt(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                   float alpha, float beta) {
  expect_cuda_float(a, "gemm (a)");
  expect_cuda_float(b, "gemm (b)");
  expect_cuda_float(c, "gemm (c)");
  EL_ENSURE(a.ndim() == 2 && b.ndim() == 2 && c.ndim() == 2,
            "cuda gemm: expected 2-D a, b, c, got {}, {}, {}", shape_str(a.shape()),
            shape_str(b.shape()), shape_str(c.shape()));
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  EL_ENSURE(k == kb && c.dim(0) == m && c.dim(1) == n,
            "cuda gemm: op(a) {}{} @ op(b) {}{} does not give c {}", shape_str(a.shape()),
            trans_a ? "^T" : "", shape_str(b.shape()), trans_b ? "^T" : "", shape_str(c.shape()));
  if (m == 0 || n == 0) return;
  if (k == 0) {  // c = beta * c
    if (beta == 0.f) {
      fill(c, 0.f);
    } else {
      scale(c, beta);
    }
    return;
  }
  const bool mixed = a.dtype() != b.dtype();
  const Tensor a2 = mixed ? widened(a) : a;
  const Tensor b2 = mixed ? widened(b) : b;
  const DType in = a2.dtype();
  if (c.dtype() != DType::f32 && c.dtype() != in) {  // e.g. f32 inputs into a bf16 c
    Tensor c32 = Tensor::empty(c.shape(), DType::f32, c.device());
    if (beta != 0.f) copy(c, c32);
    gemm(a2, trans_a, b2, trans_b, c32, alpha, beta);
    copy(c32, c);
    return;
  }
  PlanKey key{m,
              n,
              k,
              a2.dim(1),
              b2.dim(1),
              trans_a,
              trans_b,
              in,
              c.dtype(),
              alignment_of(a2.raw()),
              alignment_of(b2.raw()),
              alignment_of(c.raw())};
  Plan& p = plan_for(key);
  Context& cx = ctx();
  if (!p.candidates.empty()) autotune(p, b2.raw(), a2.raw(), c, alpha, beta);
  EL_CUBLAS_CHECK(cublasLtMatmul(cx.lt, p.op, &alpha, b2.raw(), p.la, a2.raw(), p.lb, &beta,
                                 c.raw(), p.lc, c.raw(), p.lc, &p.algo, cx.workspace,
                                 cx.workspace_bytes, cx.stream));
}

}  // namespace el::cuda
