// cuda_allocator.cpp — the caching GPU allocator (see cuda_allocator.h).
#include "cuda/cuda_allocator.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"

namespace el::cuda {
namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeStep = size_t{2} << 20;  // 2 MiB

class CudaCachingAllocator final : public Allocator {
 public:
  Result<void*> allocate(size_t bytes) override {
    const size_t size = cuda_round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (void* p = take_cached(size)) return p;
    const int device = has_context() ? ctx().device : 0;
    void* p = nullptr;
    cudaError_t rc = cudaMalloc(&p, size);
    if (rc == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it so the next launch check does not report it
      release_cache_locked();
      rc = cudaMalloc(&p, size);
    }
    if (rc != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
      if (rc == cudaErrorMemoryAllocation) {
        return cuda_oom_error(size, free_b, total_b, device, counters_.raw());
      }
      Error e = cuda_error(rc, "cudaMalloc", __FILE__, __LINE__);
      e.what = fmt::format("cudaMalloc of {} ({} bytes) on cuda:{} failed: {}", human_bytes(size),
                           size, device, e.what);
      return e;
    }
    blocks_[p] = size;
    counters_.on_reserve(static_cast<int64_t>(size));
    counters_.on_alloc(static_cast<int64_t>(size), /*cache_hit=*/false);
    return p;
  }

  void deallocate(void* ptr, size_t /*bytes*/) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;  // not ours: nothing to account
    const size_t size = it->second;
    blocks_.erase(it);
    counters_.on_free(static_cast<int64_t>(size));
    free_.emplace(size, ptr);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_.snapshot();
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    counters_.reset_peak();
  }

  void release_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    release_cache_locked();
  }

 private:
  // A cached block of at least `size` and not much larger, or nullptr.
  void* take_cached(size_t size) {
    auto it = free_.lower_bound(size);
    if (it == free_.end()) return nullptr;
    const size_t slack = size <= kSmallLimit ? 0 : std::max(size / 8, kLargeStep);
    if (it->first > size + slack) return nullptr;
    void* p = it->second;
    const size_t block = it->first;
    free_.erase(it);
    blocks_[p] = block;
    counters_.on_alloc(static_cast<int64_t>(block), /*cache_hit=*/true);
    return p;
  }

  void release_cache_locked() {
    for (auto& [size, p] : free_) {
      // cudaFree waits for the device, so queued work still reading the block
      // (freed after its last use was queued) finishes first.
      if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
      counters_.on_release(static_cast<int64_t>(size));
    }
    free_.clear();
  }

  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;         // cached blocks by size
  std::unordered_map<void*, size_t> blocks_;  // live blocks -> their size
  MemoryCounters counters_;
};

}  // namespace

size_t cuda_round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

std::string human_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 5) {
    bytes /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

Error cuda_oom_error(size_t requested, size_t free_bytes, size_t total_bytes, int device,
                     const MemoryStats& held) {
  return make_error(
      fmt::format("CUDA out of memory: requested {} ({} bytes) on cuda:{}; the device has {} free "
                  "of {} total",
                  human_bytes(double(requested)), requested, device,
                  human_bytes(double(free_bytes)), human_bytes(double(total_bytes))),
      "cuda allocator",
      fmt::format("this process holds {} in tensors and {} cached; use a smaller batch, sequence "
                  "or model, or free other GPU processes",
                  human_bytes(double(held.live_bytes)),
                  human_bytes(double(held.reserved_bytes - held.live_bytes))));
}

Allocator& cuda_allocator() {
  // Leaked on purpose: tensors in static storage may outlive a function-local static.
  static Allocator* a = new CudaCachingAllocator();
  return *a;
}

}  // namespace el::cuda
