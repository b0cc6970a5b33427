// cuda_allocator.cpp — the caching GPU allocator (see cuda_allocator.h).
#include "cuda/cuda_allocator.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"

namespace el::cuda {
namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeStep = size_t{2} << 20;  // 2 MiB

// Private pools (Allocator::begin_private_pool, used by CUDA graph capture):
// while the thread that began a pool allocates, requests are served from the
// pool's own free list, else by a fresh cudaMalloc (with the thread's capture
// mode relaxed for the call: cudaMalloc is not a stream operation, so a
// capture in thread-local mode would refuse it), else — out of device memory
// — by adopting a block of the general cache (safe: it was freed after its
// last use was queued, and the graph only runs after that). Members go back
// to their pool's free list whatever thread frees them, so a block the graph
// writes on replay never reaches the general cache while the graph lives.
// The cache is never returned to the driver during a pool (cudaFree waits
// for the device, which a capture forbids).
class CudaCachingAllocator final : public Allocator {
 public:
  Result<void*> allocate(size_t bytes) override {
    const size_t size = cuda_round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    const int pool = routed_pool();
    if (pool != 0) return allocate_in_pool(pool, size);
    if (void* p = take_cached(free_, size, 0)) return p;
    const int device = has_context() ? ctx().device : 0;
    void* p = nullptr;
    cudaError_t rc = cudaMalloc(&p, size);
    if (rc == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it so the next launch check does not report it
      release_cache_locked();
      rc = cudaMalloc(&p, size);
    }
    if (rc != cudaSuccess) return malloc_error(rc, size, device);
    add_block(p, size, 0);
    return p;
  }

  int64_t available_bytes() const override {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      (void)cudaGetLastError();
      return -1;
    }
    std::lock_guard<std::mutex> lock(mu_);
    const MemoryStats& s = counters_.raw();
    // Free blocks of private pools are reserved for their graphs.
    return static_cast<int64_t>(free_b) + (s.reserved_bytes - s.live_bytes) - pool_free_bytes_;
  }

  void deallocate(void* ptr, size_t /*bytes*/) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;  // not ours: nothing to account
    const Block b = it->second;
    blocks_.erase(it);
    counters_.on_free(static_cast<int64_t>(b.size));
    if (b.pool == 0) {
      free_.emplace(b.size, ptr);
      return;
    }
    auto pit = pools_.find(b.pool);
    EL_ENSURE(pit != pools_.end(), "cuda allocator: block of unknown private pool {}", b.pool);
    Pool& pool = pit->second;
    --pool.live_blocks;
    if (!pool.released) {
      pool.free.emplace(b.size, ptr);
      pool_free_bytes_ += static_cast<int64_t>(b.size);
      return;
    }
    free_.emplace(b.size, ptr);  // the graph is gone: back to the general cache
    if (pool.live_blocks == 0) pools_.erase(pit);
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
    if (active_pool_ != 0) return;  // cudaFree during a capture would invalidate it
    release_cache_locked();
  }

  int begin_private_pool() override {
    std::lock_guard<std::mutex> lock(mu_);
    EL_ENSURE(active_pool_ == 0,
              "cuda allocator: begin_private_pool while pool {} is active (one capture at a time)",
              active_pool_);
    const int id = next_pool_id_++;
    pools_.emplace(id, Pool{});
    active_pool_ = id;
    active_thread_ = std::this_thread::get_id();
    return id;
  }

  void end_private_pool() override {
    std::lock_guard<std::mutex> lock(mu_);
    active_pool_ = 0;
  }

  void release_private_pool(int id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (active_pool_ == id) active_pool_ = 0;
    auto pit = pools_.find(id);
    if (pit == pools_.end() || pit->second.released) return;
    Pool& pool = pit->second;
    for (const auto& [size, p] : pool.free) {
      free_.emplace(size, p);
      pool_free_bytes_ -= static_cast<int64_t>(size);
    }
    pool.free.clear();
    pool.released = true;
    if (pool.live_blocks == 0) pools_.erase(pit);
  }

 private:
  struct Block {
    size_t size = 0;
    int pool = 0;  // 0: the general cache; else a private pool's id
  };
  struct Pool {
    std::multimap<size_t, void*> free;  // the pool's free members by size
    int64_t live_blocks = 0;            // members held by tensors
    bool released = false;              // its graph is gone; members rejoin the cache when freed
  };
  using FreeList = std::multimap<size_t, void*>;

  // The pool this thread's allocations go to now (0: none).
  int routed_pool() const {
    return active_pool_ != 0 && std::this_thread::get_id() == active_thread_ ? active_pool_ : 0;
  }

  void add_block(void* p, size_t size, int pool) {
    blocks_[p] = Block{size, pool};
    if (pool != 0) ++pools_.at(pool).live_blocks;
    counters_.on_reserve(static_cast<int64_t>(size));
    counters_.on_alloc(static_cast<int64_t>(size), /*cache_hit=*/false);
  }

  Result<void*> allocate_in_pool(int pool_id, size_t size) {
    Pool& pool = pools_.at(pool_id);
    if (void* p = take_cached(pool.free, size, pool_id)) return p;
    void* p = nullptr;
    // cudaMalloc is "potentially unsafe" during a capture (it is not recorded);
    // relaxed for this call, as PyTorch's allocator does: the block is not
    // part of the graph, only its address is.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    const bool swapped = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
    const cudaError_t rc = cudaMalloc(&p, size);
    if (swapped) (void)cudaThreadExchangeStreamCaptureMode(&mode);
    if (rc == cudaSuccess) {
      add_block(p, size, pool_id);
      return p;
    }
    (void)cudaGetLastError();
    if (rc == cudaErrorMemoryAllocation) {
      // Out of memory: adopt a free block of the general cache for good.
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + slack_for(size)) {
        void* q = it->second;
        const size_t block = it->first;
        free_.erase(it);
        blocks_[q] = Block{block, pool_id};
        ++pool.live_blocks;
        counters_.on_alloc(static_cast<int64_t>(block), /*cache_hit=*/true);
        return q;
      }
    }
    return malloc_error(rc, size, has_context() ? ctx().device : 0);
  }

  static size_t slack_for(size_t size) {
    return size <= kSmallLimit ? 0 : std::max(size / 8, kLargeStep);
  }

  // A block of `list` of at least `size` and not much larger (now live, in
  // pool `pool_id`, 0 = general), or nullptr.
  void* take_cached(FreeList& list, size_t size, int pool_id) {
    auto it = list.lower_bound(size);
    if (it == list.end()) return nullptr;
    if (it->first > size + slack_for(size)) return nullptr;
    void* p = it->second;
    const size_t block = it->first;
    list.erase(it);
    blocks_[p] = Block{block, pool_id};
    if (pool_id != 0) {
      ++pools_.at(pool_id).live_blocks;
      pool_free_bytes_ -= static_cast<int64_t>(block);
    }
    counters_.on_alloc(static_cast<int64_t>(block), /*cache_hit=*/true);
    return p;
  }

  Error malloc_error(cudaError_t rc, size_t size, int device) {
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

  void release_cache_locked() {
    if (active_pool_ != 0) return;  // no cudaFree while a capture may be under way
    for (auto& [size, p] : free_) {
      // cudaFree waits for the device, so queued work still reading the block
      // (freed after its last use was queued) finishes first.
      if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
      counters_.on_release(static_cast<int64_t>(size));
    }
    free_.clear();
  }

  mutable std::mutex mu_;
  FreeList free_;                           // the general cache, by size
  std::unordered_map<void*, Block> blocks_;  // live blocks -> their size and pool
  std::map<int, Pool> pools_;               // private pools not yet gone
  int next_pool_id_ = 1;
  int active_pool_ = 0;                     // 0: none
  std::thread::id active_thread_;           // the thread whose allocations go to it
  int64_t pool_free_bytes_ = 0;             // free members of live pools
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
