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

#include <chrono>
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
  // Integral of live_bytes over time (byte-seconds, steady clock) since the
  // allocator was created, up to the stats() call: the mean live memory over
  // [t0, t1] is exact as the difference of two readings over t1 - t0, where
  // snapshots every 100 ms can alias with a training step of about that period.
  double live_byte_seconds = 0;
};

// The counters every allocator keeps (callers hold the allocator's lock).
class MemoryCounters {
 public:
  MemoryCounters() : last_change_(std::chrono::steady_clock::now()) {}
  void on_reserve(int64_t bytes) {
    stats_.reserved_bytes += bytes;
    if (stats_.reserved_bytes > stats_.peak_reserved_bytes) {
      stats_.peak_reserved_bytes = stats_.reserved_bytes;
    }
  }
  void on_release(int64_t bytes) { stats_.reserved_bytes -= bytes; }
  void on_alloc(int64_t bytes, bool cache_hit) {
    advance();
    ++stats_.num_allocs;
    if (cache_hit) ++stats_.num_cache_hits;
    stats_.live_bytes += bytes;
    if (stats_.live_bytes > stats_.peak_live_bytes) stats_.peak_live_bytes = stats_.live_bytes;
  }
  void on_free(int64_t bytes) {
    advance();
    stats_.live_bytes -= bytes;
  }
  void reset_peak() {
    stats_.peak_live_bytes = stats_.live_bytes;
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }
  // The counters, with the integral brought up to now.
  MemoryStats snapshot() const {
    MemoryStats s = stats_;
    s.live_byte_seconds += static_cast<double>(s.live_bytes) * seconds_since_change();
    return s;
  }
  const MemoryStats& raw() const { return stats_; }

 private:
  double seconds_since_change() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - last_change_).count();
  }
  void advance() {
    const auto now = std::chrono::steady_clock::now();
    stats_.live_byte_seconds +=
        static_cast<double>(stats_.live_bytes) * std::chrono::duration<double>(now - last_change_).count();
    last_change_ = now;
  }
  MemoryStats stats_;
  std::chrono::steady_clock::time_point last_change_;
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
  // Bytes a new allocation could get now: free device memory plus this
  // allocator's cached free blocks (CPU: the kernel's MemAvailable estimate).
  // -1 when the platform cannot tell. For messages that say what would fit.
  virtual int64_t available_bytes() const { return -1; }

  // ---- private pools (CUDA graphs, like PyTorch's graph pools) --------------
  // A captured graph writes on replay to the blocks it was given at capture,
  // so no one else may ever get them while the graph lives. begin_private_pool()
  // returns a pool id and routes the calling thread's later allocate() calls to
  // that pool (its free blocks, else fresh blocks that become its members)
  // until end_private_pool(). deallocate() of a member always returns it to
  // its own pool's free list (also after end_private_pool), never to the
  // general cache. release_private_pool(id) (the graph is gone) moves the
  // pool's free blocks to the general cache; members still held by tensors
  // follow when freed. Live/reserved counters count members like any block.
  // Defaults (CPU): no pools; begin returns -1 and the others do nothing.
  virtual int begin_private_pool() { return -1; }
  virtual void end_private_pool() {}
  virtual void release_private_pool(int id) { (void)id; }
};

// The allocator for a device. CPU is always present; CUDA when the CUDA
// backend has registered one (otherwise an Error).
Result<Allocator*> allocator_for(Device device);
void register_allocator(DeviceKind kind, Allocator* allocator);

// The process-wide CPU allocator.
Allocator& cpu_allocator();

}  // namespace el
