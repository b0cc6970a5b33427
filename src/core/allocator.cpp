#include "core/allocator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

namespace el {
namespace {

// Size classes: multiples of 64 B up to 4 KiB, then powers of two split into
// 4 steps (at most 25% slack), so a cached block of the same class always fits.
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n <= 4096) return (n + 63) & ~size_t{63};
  size_t p = 4096;
  while (p < n) p <<= 1;
  const size_t step = p / 8;  // classes p/2 + k*p/8, k = 1..4
  size_t r = p / 2;
  while (r < n) r += step;
  return r;
}

class CpuCachingAllocator final : public Allocator {
 public:
  ~CpuCachingAllocator() override { release_cache(); }

  Result<void*> allocate(size_t bytes) override {
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      counters_.on_alloc(static_cast<int64_t>(size), /*cache_hit=*/true);
      return p;
    } else {
      p = std::aligned_alloc(64, size);
      if (!p) {
        return make_error(fmt::format("CPU allocation of {} bytes failed", size), "cpu allocator",
                          fmt::format("{} bytes live, {} reserved", counters_.raw().live_bytes,
                                      counters_.raw().reserved_bytes));
      }
      counters_.on_reserve(static_cast<int64_t>(size));
    }
    counters_.on_alloc(static_cast<int64_t>(size), /*cache_hit=*/false);
    return p;
  }

  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    counters_.on_free(static_cast<int64_t>(size));
    free_[size].push_back(ptr);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_.snapshot();
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    counters_.reset_peak();
  }

  int64_t available_bytes() const override {
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages < 0 || page < 0) return -1;
    const MemoryStats s = stats();
    return static_cast<int64_t>(pages) * page + (s.reserved_bytes - s.live_bytes);
  }
  void release_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) std::free(p);
      counters_.on_release(static_cast<int64_t>(size * blocks.size()));
      blocks.clear();
    }
  }

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  MemoryCounters counters_;
};

Allocator* g_registered[2] = {nullptr, nullptr};

}  // namespace

Allocator& cpu_allocator() {
  // Leaked on purpose: tensors in static storage may outlive a function-local static.
  static Allocator* a = new CpuCachingAllocator();
  return *a;
}

void register_allocator(DeviceKind kind, Allocator* allocator) {
  g_registered[static_cast<int>(kind)] = allocator;
}

Result<Allocator*> allocator_for(Device device) {
  if (device.is_cpu()) return &cpu_allocator();
  Allocator* a = g_registered[static_cast<int>(device.kind)];
  if (!a) {
    return make_error("no allocator for device " + device.str(), "allocator_for",
                      "this build has no CUDA backend, or no GPU was found; use --device cpu");
  }
  return a;
}

}  // namespace el
