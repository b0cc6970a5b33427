// cuda_context.h — internal to src/cuda: the per-process GPU state.
//
// One GPU per process (the Allocator and Backend registries are keyed by
// DeviceKind, not by index): register_backend(i) creates the Context of
// device i once — one non-blocking stream that every kernel, copy and GEMM
// is queued on (so the caching allocator can hand a freed block to the next
// op without events: the stream orders them), the cuBLASLt handle, its
// workspace, small reduction scratch buffers and the device error record.
//
// Deferred device errors: kernels that index with data (embedding ids,
// cross-entropy targets) check the index on the GPU, skip the bad row and
// write the first failure into DeviceErrorRecord. check_device_errors()
// (called by synchronize() and by every op that waits for the GPU anyway)
// turns it into an el::Exception naming the kernel, position and value, so a
// bad token id fails the step it occurs in without a host round trip per op.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace el::cuda {

// Codes of DeviceErrorRecord::code (0 = no error; -1 = being written).
enum DeviceErrorCode : int {
  kErrEmbeddingForwardId = 1,   // a = position, b = id, c = vocab rows
  kErrEmbeddingBackwardId = 2,  // same
  kErrCrossEntropyTarget = 3,   // a = row, b = target, c = vocab
  kErrCrossEntropyFusedTarget = 4,
  kErrKvCachePosition = 5,      // a = batch row, b = cache position written, c = cache rows
  kErrMoeExpertId = 6,          // a = token, b = expert id, c = experts (moe_group)
  kErrMlaRowMap = 7,            // a = cache column, b = source, c = sources (mla_decode_prologue)
};

struct DeviceErrorRecord {
  int code;
  int pad;
  long long a, b, c;
};

struct Context {
  int device = -1;
  int sm_count = 1;
  // Programmatic dependent launch (sm_90+, on unless EL_PDL=0): kernels
  // launched through launch_kernel() may start while the one before them
  // finishes (cuda_common.cuh, "programmatic dependent launch").
  bool pdl = false;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // cuBLASLt workspace (from the caching allocator)
  size_t workspace_bytes = 0;
  double* reduce_scratch = nullptr;         // [kReduceSlots + 1] doubles: block partials + result
  int* flag = nullptr;                      // one int for all_finite
  // kCounterSlots ints, zero between kernels: a kernel whose last block
  // finishes the work of the others (attention_cached's chunk merge) counts
  // arrivals here and sets its counters back to zero before it exits.
  int* counters = nullptr;
  // One 64-bit counter after them, never reset: the decode layer kernel's
  // launches (cuda_decode_layer.cuh, launch_flag).
  unsigned long long* layer_launches = nullptr;
  // kHandoffWords 8-byte words, zeroed once: the decode layer kernel's
  // hand-offs between its phases ({data, flag}, cuda_decode_layer.cuh).
  unsigned long long* handoff = nullptr;
  DeviceErrorRecord* dev_error = nullptr;   // device memory
  DeviceErrorRecord* host_error = nullptr;  // pinned host mirror
  double* host_scalar = nullptr;            // pinned, for reduction results
  int* host_flag = nullptr;                 // pinned
};

inline constexpr int kReduceSlots = 2048;  // max blocks of a reduction kernel
inline constexpr int kCounterSlots = 1 << 16;
inline constexpr int64_t kHandoffWords = int64_t{1} << 19;  // 4 MiB

// The registered context; throws el::Exception when register_backend() has
// not succeeded. Also makes the context's device current on the calling thread.
Context& ctx();
bool has_context();
// Creates the context of `device` (called once, by register_backend, for a
// device it has validated); the first failing CUDA call is the Error.
Status create_context(int device);

// Throws el::Exception for a recorded device error (and clears it). Waits for
// the stream first.
void check_device_errors();
// The Error for a recorded device error `rec` (read from the device record),
// after clearing the record (waits for the stream).
Error take_device_error(const DeviceErrorRecord& rec);
// Backend::read_later / read_wait (cuda_readback.cpp): a ring of pinned host
// slots, each filled by two queued copies (the bytes, then the device error
// record) and marked by an event, so reading one waits for nothing after it.
Result<int64_t> read_later(const Tensor& src);
Result<std::vector<uint8_t>> read_wait(int64_t ticket);
// The text for a DeviceErrorRecord (exposed for tests).
std::string device_error_message(const DeviceErrorRecord& rec);

// Argument checks (bugs in the op layer, so EL_ENSURE): defined, on the
// registered CUDA device, contiguous; *_float also needs f32/bf16/f16.
void expect_cuda(const Tensor& t, const char* what);
void expect_cuda_float(const Tensor& t, const char* what);
void expect_cuda_dtype(const Tensor& t, DType want, const char* what);
// i32 positions [batch] on the device (the KV-cache ops, ops/backend.h).
void expect_positions(const Tensor& positions, int64_t batch, const char* what);
// for (const Tensor* t : TensorPtrs{&a, &b}) expect_cuda_float(*t, "op");
using TensorPtrs = std::initializer_list<const Tensor*>;

// A kernel-tuning switch (EL_*, README's table) from the environment:
// `fallback` when unset or empty, else its integer value clamped to [lo, hi].
int env_int(const char* name, int fallback, int lo, int hi);

}  // namespace el::cuda
