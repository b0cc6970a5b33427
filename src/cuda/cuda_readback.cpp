// cuda_readback.cpp — small device-to-host reads that wait only for the work
// queued before them (Backend::read_later / read_wait, ops/backend.h).
//
// Why: a greedy decode step ends in a few token ids the host must see (stop
// checks, the request's output). Reading them with a plain copy waits for the
// whole stream, so the GPU idles while the host wakes up, copies and queues
// the next step (~10-20 us a token). With these reads the host queues step
// s + 1 first and then waits for step s's copy alone.
//
// A slot of the ring: a pinned buffer the copy lands in (pinned, so the copy
// is truly asynchronous), a pinned copy of the device error record queued
// after it (the deferred errors of cuda_context.h, reported by the read that
// follows them without a stream-wide wait), and an event recorded behind both.
#include <array>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "ops/backend.h"

namespace el::cuda {
namespace {

constexpr int kSlots = Backend::kReadLaterSlots;
constexpr size_t kSlotBytes = Backend::kReadLaterBytes;

struct ReadSlot {
  unsigned char* host = nullptr;    // pinned, kSlotBytes
  DeviceErrorRecord* err = nullptr;  // pinned
  cudaEvent_t done = nullptr;
  int64_t ticket = -1;  // the read it holds, -1 when free
  size_t bytes = 0;
};

struct ReadRing {
  std::mutex mu;
  bool ready = false;
  std::array<ReadSlot, kSlots> slot;
  int64_t next = 0;  // the next ticket
};

ReadRing& ring() {
  static ReadRing r;  // never destroyed: its pinned buffers live as long as the context
  return r;
}

Status make_ready(ReadRing& r) {
  if (r.ready) return Status::Ok();
  for (ReadSlot& s : r.slot) {
    void* host = nullptr;
    void* err = nullptr;
    EL_CUDA_TRY(cudaMallocHost(&host, kSlotBytes));
    EL_CUDA_TRY(cudaMallocHost(&err, sizeof(DeviceErrorRecord)));
    s.host = static_cast<unsigned char*>(host);
    s.err = static_cast<DeviceErrorRecord*>(err);
    EL_CUDA_TRY(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  }
  r.ready = true;
  return Status::Ok();
}

}  // namespace

Result<int64_t> read_later(const Tensor& src) {
  const char* where = "cuda read_later";
  if (!src.defined() || !src.device().is_cuda() || !src.is_contiguous()) {
    return make_error("the source is not a contiguous tensor on the GPU", where,
                      "read device tensors only");
  }
  if (src.nbytes() > kSlotBytes) {
    return make_error(fmt::format("{} bytes ({}) is more than a read of at most {}", src.nbytes(),
                                  shape_str(src.shape()), kSlotBytes),
                      where, "read it with Tensor::to(cpu)");
  }
  Context& c = ctx();
  ReadRing& r = ring();
  std::lock_guard<std::mutex> lock(r.mu);
  EL_TRY(make_ready(r));
  ReadSlot& s = r.slot[static_cast<size_t>(r.next % kSlots)];
  if (s.ticket >= 0) {
    return make_error(fmt::format("{} reads are outstanding already (ticket {} is unread)", kSlots,
                                  s.ticket),
                      where, "read_wait the oldest ticket first");
  }
  EL_CUDA_TRY(cudaMemcpyAsync(s.host, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, c.stream));
  EL_CUDA_TRY(cudaMemcpyAsync(s.err, c.dev_error, sizeof(DeviceErrorRecord),
                              cudaMemcpyDeviceToHost, c.stream));
  EL_CUDA_TRY(cudaEventRecord(s.done, c.stream));
  s.ticket = r.next++;
  s.bytes = src.nbytes();
  return s.ticket;
}

Result<std::vector<uint8_t>> read_wait(int64_t ticket) {
  const char* where = "cuda read_wait";
  ReadRing& r = ring();
  std::unique_lock<std::mutex> lock(r.mu);
  ReadSlot* s = ticket >= 0 ? &r.slot[static_cast<size_t>(ticket % kSlots)] : nullptr;
  if (!s || s->ticket != ticket) {
    return make_error(fmt::format("ticket {} is not an unread read_later ticket", ticket), where,
                      "read each ticket read_later returned once");
  }
  const cudaEvent_t done = s->done;
  lock.unlock();  // (other threads may queue reads while this one waits)
  EL_CUDA_TRY(cudaEventSynchronize(done));
  lock.lock();
  std::vector<uint8_t> out(s->host, s->host + s->bytes);
  const DeviceErrorRecord rec = *s->err;
  s->ticket = -1;
  lock.unlock();
  if (rec.code != 0) return take_device_error(rec);
  return out;
}

}  // namespace el::cuda
