// allocator.h — device allocators with live/peak byte counters.
//
// Every tensor's storage comes from the allocator of its device, so the
// memory metrics (AMU) read the counters here instead of guessing. The CPU
// allocator caches freed blocks by rounded size class (like PyTorch's caching
// allocator) so a training step re-uses the previous step's buffers instead of
// going back to malloc; "live" counts bytes handed out to tensors, "reserved"
// counts what the cache holds from the system (live + cached free blocks).
// The CUDA backend registers its own allocator for DeviceKind::cuda.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/device.h"
#include "core/error.h"

namespace el {

struct MemoryStats {
  int64_t live_bytes = 0;       // bytes currently held by tensors
  int64_t peak_live_bytes = 0;  // max of live_bytes since the last reset_peak()
  int64_t reserved_bytes = 0;   // live + cached free blocks
  int64_t peak_reserved_bytes = 0;
  int64_t num_allocs = 0;       // allocate() calls served
  int64_t num_cache_hits = 0;   // of which came from the cache
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns a block of at least `bytes` bytes aligned to 64 (CPU) or 256 (GPU),
  // or an Error naming the request and what is free.
  virtual Result<void*> allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached free blocks to the system.
  virtual void release_cache() = 0;
};

// The allocator for a device. CPU is always present; CUDA when the CUDA
// backend has registered one (otherwise an Error).
Result<Allocator*> allocator_for(Device device);
void register_allocator(DeviceKind kind, Allocator* allocator);

// The process-wide CPU allocator.
Allocator& cpu_allocator();

}  // namespace el
