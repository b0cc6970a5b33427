// attention.cuh — fused scaled-dot-product attention on CUDA (FlashAttention-2
// style): launchers on raw device pointers, called by the CUDA backend's
// attention_forward / attention_backward.
//
// Layouts (all contiguous, row-major, element type `dtype`):
//   q, out, dout, dq  [B, T, H, D]
//   k, v, dk, dv      [B, S, Hkv, D]     H % Hkv == 0; head h reads kv head h / (H / Hkv)
//   lse               [B, H, T] f32      logsumexp over keys of scale * q.k (natural log)
// causal: query t sees keys s <= t + (S - T) (queries are the last T positions,
// as in decode against a KV cache); a query that sees no key gets out = 0 and
// lse = -inf, and contributes nothing to the gradients.
// Window: with shape.window > 0 (and causal) keys older than the window are
// masked as well (NSA's sliding-window forward runs here, cuda_nsa.cu);
// forward only, attention_backward returns cudaErrorInvalidValue for it.
// ALiBi: with shape.alibi_slopes (f32 [H] on the device) the scaled score of
// query t and key s gets alibi_slopes[h] * (s - (t + S - T)) (ops/backend.h);
// nullptr (the default) reads nothing and leaves the kernels' math unchanged.
//
// Paths: bf16/f16 with D = 64, 128, 192 or 256 run the tensor-core kernels (mma.sync
// m16n8k16, f32 accumulation, K/V tiles streamed through shared memory, online
// softmax; no T x S matrix is ever stored). f32, and bf16/f16 with any other
// D <= 256, run a simpler SIMT kernel with the same contract. GQA/MQA never
// materialise repeated K/V: the backward gives each (batch, kv head, key tile)
// to one thread block that loops over the query heads of its group, so dk/dv
// are written once, without atomics.
//
// Every launcher checks its arguments (cudaErrorInvalidValue on a bad shape,
// null pointer or unsupported dtype/D) and returns the launch error, if any.
// They are asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "core/dtype.h"

namespace el::cuda {

struct AttentionShape {
  int B, T, S, H, Hkv, D;
  float scale;  // usually 1 / sqrt(D)
  bool causal;
  const float* alibi_slopes = nullptr;  // [H] f32 device pointer, or nullptr (no ALiBi bias)
  // Sliding window (causal only; 0 = none): query t, at position i = t + S -
  // T, sees keys s with i - window < s <= i. Tiles wholly outside the band
  // are skipped, so the cost is ~(window + tile) keys per query, not S. The
  // backward takes a window on its tensor-core path only (bf16 / f16, D 64 /
  // 128, 16-byte aligned: attention_window_backward_supported); elsewhere it
  // returns cudaErrorInvalidValue.
  int window = 0;
};

// out[B,T,H,D] = softmax(scale q k^T (+ causal mask)) v ; lse[B,H,T] f32.
cudaError_t attention_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                              const AttentionShape& shape, DType dtype, cudaStream_t stream);

// Bytes of device scratch attention_backward needs for this shape (an f32 dq
// accumulator [B,T,H,D] on the tensor-core path, plus rowsum(dout * out)
// [B,H,T] f32). Never 0 for a non-empty shape; 256-byte aligned is enough.
size_t attention_backward_workspace_bytes(const AttentionShape& shape, DType dtype);

// Overwrites dq [B,T,H,D] and dk/dv [B,S,Hkv,D] (sums over the query heads of
// each kv group). `out` and `lse` are the forward's outputs for the same
// inputs; `workspace` holds attention_backward_workspace_bytes(shape, dtype).
cudaError_t attention_backward(const void* dout, const void* q, const void* k, const void* v,
                               const void* out, const float* lse, void* dq, void* dk, void* dv,
                               void* workspace, const AttentionShape& shape, DType dtype,
                               cudaStream_t stream);

// Whether attention_backward runs `shape` with its window: the tensor-core
// path's dtypes and head dims, and every one of the n_ptrs pointers 16-byte aligned.
bool attention_window_backward_supported(const AttentionShape& shape, DType dtype,
                                         const void* const* ptrs, int n_ptrs);

namespace detail {
// Tile-configuration override for benchmarking only (0 = the default choice);
// see attention_fwd.cu / attention_bwd.cu for what each number selects. Not
// thread-safe; production code never calls it.
void set_attention_variants(int forward_variant, int backward_variant);
int attention_forward_variant();
int attention_backward_variant();
}  // namespace detail

}  // namespace el::cuda
