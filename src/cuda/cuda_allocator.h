// cuda_allocator.h — internal to src/cuda: the caching GPU allocator.
//
// Blocks come from cudaMalloc only (never managed memory: oversubscribing
// managed memory can hang the GPU instead of failing). Freed blocks stay in a
// cache keyed by size and are handed to the next request of a close size, so a
// training step re-uses the previous step's buffers without cudaMalloc/cudaFree
// (both synchronise the device). Size classes: 512 B steps up to 1 MiB, then
// 2 MiB steps (cudaMalloc's own granularity for large blocks); a cached block
// is re-used for a request of at most 1/8 (or 2 MiB) less. Counters
// (core/allocator.h MemoryStats) count whole blocks: live = held by tensors,
// reserved = live + cached.
//
// Out of memory: the cache is returned to the driver and the cudaMalloc tried
// once more; if it still fails, the Error names the request and what
// cudaMemGetInfo reports free of the total, plus what this process holds.
// Safe without events because every kernel runs on the one stream of the
// context (cuda_context.h): a block freed after its last use was queued is
// only reused by work queued after that use.
#pragma once

#include <cstddef>
#include <string>

#include "core/allocator.h"

namespace el::cuda {

// The process-wide CUDA allocator (created by register_backend()).
Allocator& cuda_allocator();

// The rounded block size for a request (exposed for tests).
size_t cuda_round_size(size_t bytes);

// "10.0 TiB", "512 B": bytes for messages.
std::string human_bytes(double bytes);

// The out-of-memory Error text (exposed for tests).
Error cuda_oom_error(size_t requested, size_t free_bytes, size_t total_bytes, int device,
                     const MemoryStats& held);

}  // namespace el::cuda
