// cuda_backend.h — the public entry points of the CUDA backend (src/cuda).
//
// Programs that link el_cuda (compile definition EL_HAVE_CUDA) call
// register_backend() before they touch a cuda tensor. It detects the GPU,
// checks that the driver supports this build's CUDA runtime and that the
// build has machine code for the GPU, creates the stream and cuBLASLt state,
// and registers for DeviceKind::cuda: the caching allocator (core/allocator.h),
// the Backend (ops/backend.h) and the NVML monitor the metrics sampler reads
// (metrics/sampler.h). Every failure is an Error that says why, e.g.
//   "no CUDA device found"
//   "driver too old: supports CUDA 12.4, this build needs 13.0"
// so callers can fall back to the CPU where the user did not insist on CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/backend.h"  // AdamWStep

namespace el::cuda {

// Registers device `device_index` (one GPU per process). Idempotent: later
// calls return the first call's outcome; asking for another index after a
// success is an Error.
Status register_backend(int device_index = 0);
bool is_registered();
int registered_device();  // -1 when none

struct DeviceInfo {
  int index = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t total_memory_bytes = 0;
  int64_t l2_bytes = 0;
  int driver_version = 0;   // CUDA version the driver supports, e.g. 13000
  int runtime_version = 0;  // this build's runtime, e.g. 13000
  std::string pci_bus_id;   // "0000:01:00.0", the key NVML matches on
};
Result<DeviceInfo> device_info(int index);
// "NVIDIA H100 80GB HBM3 (cuda:0, sm_90, 132 SMs, 79.1 GiB, driver CUDA 13.0, runtime 13.0)"
std::string describe(const DeviceInfo& info);

// ---- message builders (public so tests check the wording without a failure)
std::string cuda_version_string(int version);  // 12040 -> "12.4"
Error no_device_error(const std::string& detail);
Error driver_too_old_error(int driver_version, int runtime_version);
Error device_index_error(int requested, int count);
Error no_kernel_image_error(const std::string& name, int cc_major, int cc_minor);

// ---- extras beyond the Backend interface (the trainer may use them on cuda)
// Global squared L2 norm of several tensors (gradients) with one wait.
double sum_squares_many(const std::vector<Tensor>& xs);
// Fused classifier: losses[N], lse[N] and dlogits[N,V] = (softmax - onehot) *
// dloss in one pass per row; dlogits may alias logits.
void cross_entropy_fused(const Tensor& logits, const Tensor& targets, float dloss, Tensor& losses,
                         Tensor& lse, Tensor& dlogits);

// Multi-tensor AdamW: the update of adamw_update (master == nullptr) or
// adamw_update_master (master = the param's f32 copy) for every slot, in one
// launch per 24 tensors instead of one per tensor. Same math, same results.
void adamw_update_many(const std::vector<AdamWTensors>& slots, const AdamWStep& step);

// Timing with CUDA events on the backend's stream (milliseconds of GPU time
// between start() and stop(); elapsed_ms() waits for stop()).
class EventTimer {
 public:
  EventTimer();
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  void stop();
  float elapsed_ms();

 private:
  void* start_ = nullptr;  // cudaEvent_t, kept opaque so this header needs no CUDA headers
  void* stop_ = nullptr;
};

}  // namespace el::cuda
