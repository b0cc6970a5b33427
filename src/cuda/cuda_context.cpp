// cuda_context.cpp — the per-process GPU Context (cuda_context.h): its
// creation by register_backend (cuda_backend.cpp), ctx(), the deferred
// device errors and the argument checks every launcher runs. Kept apart
// from cuda_backend.cpp, which holds the Backend's virtuals and the
// registration around them.
#include "cuda/cuda_context.h"

#include <cuda_runtime.h>  // cudaMalloc(T**, ...)
#include <fmt/format.h>

#include <cstdlib>
#include <string_view>

#include "cuda/cuda_allocator.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"

namespace el::cuda {

namespace {

Context* g_ctx = nullptr;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper

}  // namespace

Status create_context(int device) {
  EL_CUDA_TRY(cudaSetDevice(device));
  auto* c = new Context();
  c->device = device;
  EL_CUDA_TRY(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, device));
  int cc_major = 0;
  EL_CUDA_TRY(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device));
  const char* pdl_env = std::getenv("EL_PDL");
  c->pdl = cc_major >= 9 && !(pdl_env != nullptr && std::string_view(pdl_env) == "0");
  EL_CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  if (const cublasStatus_t st = cublasLtCreate(&c->lt); st != CUBLAS_STATUS_SUCCESS) {
    return cublas_error(st, "cublasLtCreate", __FILE__, __LINE__);
  }
  EL_CUDA_TRY(cudaMalloc(&c->reduce_scratch, sizeof(double) * (kReduceSlots + 1)));
  EL_CUDA_TRY(cudaMalloc(&c->flag, sizeof(int)));
  // (+ 2 ints: the layer kernel's 64-bit barrier counter, 8-byte aligned)
  EL_CUDA_TRY(cudaMalloc(&c->counters, sizeof(int) * (kCounterSlots + 2)));
  EL_CUDA_TRY(cudaMemset(c->counters, 0, sizeof(int) * (kCounterSlots + 2)));
  c->layer_launches = reinterpret_cast<unsigned long long*>(c->counters + kCounterSlots);
  EL_CUDA_TRY(cudaMalloc(&c->handoff, sizeof(unsigned long long) * kHandoffWords));
  EL_CUDA_TRY(cudaMemset(c->handoff, 0, sizeof(unsigned long long) * kHandoffWords));
  EL_CUDA_TRY(cudaMalloc(&c->dev_error, sizeof(DeviceErrorRecord)));
  EL_CUDA_TRY(cudaMemset(c->dev_error, 0, sizeof(DeviceErrorRecord)));
  EL_CUDA_TRY(cudaMallocHost(&c->host_error, sizeof(DeviceErrorRecord)));
  EL_CUDA_TRY(cudaMallocHost(&c->host_scalar, sizeof(double)));
  EL_CUDA_TRY(cudaMallocHost(&c->host_flag, sizeof(int)));
  g_ctx = c;  // before the workspace: the allocator reads the context's device
  EL_TRY_ASSIGN(c->workspace, cuda_allocator().allocate(kWorkspaceBytes));
  c->workspace_bytes = kWorkspaceBytes;
  return Status::Ok();
}

// ---- context ----------------------------------------------------------------------

bool has_context() { return g_ctx != nullptr; }

Context& ctx() {
  EL_ENSURE(g_ctx != nullptr,
            "the CUDA backend is not registered (call el::cuda::register_backend())");
  // A thread's current device starts at 0: make the context's device current
  // on every thread that queues work (data loader, metrics, ...).
  thread_local int current = -1;
  if (current != g_ctx->device) {
    EL_CUDA_CHECK(cudaSetDevice(g_ctx->device));
    current = g_ctx->device;
  }
  return *g_ctx;
}

std::string device_error_message(const DeviceErrorRecord& rec) {
  switch (rec.code) {
    case kErrEmbeddingForwardId:
    case kErrEmbeddingBackwardId:
      return fmt::format(
          "cuda {}: id {} at position {} is outside [0, {})",
          rec.code == kErrEmbeddingForwardId ? "embedding_forward" : "embedding_backward", rec.b,
          rec.a, rec.c);
    case kErrCrossEntropyTarget:
    case kErrCrossEntropyFusedTarget:
      return fmt::format(
          "cuda {}: target {} at row {} is not below the vocab size {}",
          rec.code == kErrCrossEntropyTarget ? "cross_entropy" : "cross_entropy_fused", rec.b,
          rec.a, rec.c);
    case kErrKvCachePosition:
      return fmt::format(
          "cuda kv_cache_write: batch row {} writes cache position {}, outside [0, {}) (positions "
          "+ T must not exceed the cache length)",
          rec.a, rec.b, rec.c);
    case kErrMlaRowMap:
      return fmt::format(
          "cuda mla_decode_prologue: row_map[{}] = {} is outside the {} kv_a columns", rec.a,
          rec.b, rec.c);
    case kErrMoeExpertId:
      return fmt::format("cuda moe_group: token {} is routed to expert {}, outside [0, {})",
                         rec.a, rec.b, rec.c);
    default:
      return fmt::format("cuda: device error code {} ({}, {}, {})", rec.code, rec.a, rec.b, rec.c);
  }
}

Error take_device_error(const DeviceErrorRecord& rec) {
  Context& c = ctx();
  EL_CUDA_CHECK(cudaMemsetAsync(c.dev_error, 0, sizeof(DeviceErrorRecord), c.stream));
  EL_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  return make_error(device_error_message(rec), fmt::format("cuda:{}", c.device),
                    "the kernel skipped the bad row; the step's results are invalid");
}

void check_device_errors() {
  Context& c = ctx();
  EL_CUDA_CHECK(cudaMemcpyAsync(c.host_error, c.dev_error, sizeof(DeviceErrorRecord),
                                cudaMemcpyDeviceToHost, c.stream));
  EL_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  if (c.host_error->code == 0) return;
  throw Exception(take_device_error(*c.host_error));
}

void expect_cuda(const Tensor& t, const char* what) {
  EL_ENSURE(t.defined(), "cuda {}: tensor is undefined", what);
  EL_ENSURE(t.device().is_cuda() && g_ctx && t.device().index == g_ctx->device,
            "cuda {}: tensor is on {}, expected cuda:{}", what, t.device().str(),
            g_ctx ? g_ctx->device : 0);
  EL_ENSURE(t.is_contiguous(), "cuda {}: tensor {} is not contiguous", what, shape_str(t.shape()));
}

void expect_cuda_float(const Tensor& t, const char* what) {
  expect_cuda(t, what);
  EL_ENSURE(dtype_is_float(t.dtype()), "cuda {}: dtype {} {}, expected f32/bf16/f16", what,
            dtype_name(t.dtype()), shape_str(t.shape()));
}

void expect_cuda_dtype(const Tensor& t, DType want, const char* what) {
  expect_cuda(t, what);
  EL_ENSURE(t.dtype() == want, "cuda {}: dtype {} {}, expected {}", what, dtype_name(t.dtype()),
            shape_str(t.shape()), dtype_name(want));
}

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  const int v = std::atoi(e);
  return v < lo ? lo : (v > hi ? hi : v);
}

void expect_positions(const Tensor& positions, int64_t batch, const char* what) {
  expect_cuda_dtype(positions, DType::i32, what);
  EL_CUDA_ENSURE(positions.numel() == batch, "cuda {}: positions has {} entries for batch {}", what,
                 positions.numel(), batch);
}

bool is_registered() { return g_ctx != nullptr; }
int registered_device() { return g_ctx ? g_ctx->device : -1; }

}  // namespace el::cuda
