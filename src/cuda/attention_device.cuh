// attention_device.cuh — device helpers shared by the attention kernels:
// tensor-core mma.sync / ldmatrix wrappers, cp.async and the XOR swizzle of
// shared-memory tiles (element conversions and warp reductions are the
// backend's, cuda_common.cuh). Internal to src/cuda/attention*.cu.
//
// Fragment layouts of mma.m16n8k16 (lane = 4 * g + t4):
//   A 16x16 (row-major): reg0 = (row g, cols 2t4..+1), reg1 = (g + 8, 2t4),
//                        reg2 = (g, 2t4 + 8),          reg3 = (g + 8, 2t4 + 8)
//   B 16x8  (k x n):     reg0 = (k 2t4..+1, n g),      reg1 = (k 2t4 + 8..+9, n g)
//   C 16x8  (f32):       c0,c1 = (row g, cols 2t4..+1), c2,c3 = (row g + 8, same cols)
// so the accumulators of two adjacent n-tiles, packed to 16 bits, are exactly
// an A fragment: the FlashAttention trick that feeds P from registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace el::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- element conversions (the backend's, with the argument type deduced) ----------
template <typename T>
__device__ __forceinline__ float to_f32(T x) {
  return to_f<T>(x);
}
template <typename T>
__device__ __forceinline__ T from_f32(float x) {
  return from_f<T>(x);
}

// Two f32 -> one 32-bit register of two 16-bit values (lo in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- tensor cores ------------------------------------------------------------------
// c += a * b for one 16x8x16 tile, f32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                 uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 16-bit matrices from shared memory; lanes 8i..8i+7 give the row
// addresses of matrix i, which lands in r[i].
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Same, each matrix transposed (for operands stored k-major, e.g. V as B of P V).
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- swizzled tiles ------------------------------------------------------------------
// A tile of 16-bit elements with kCols columns per row (a multiple of 8)
// stores the 16-byte chunk c of row r at chunk c ^ (r & mask): the 8 rows that
// one ldmatrix matrix reads then hit 8 different bank groups.
template <int kCols>
__device__ __forceinline__ int swz(int row, int col) {
  constexpr int kChunks = kCols / 8;
  constexpr int kMask = kChunks >= 8 ? 7 : kChunks - 1;
  return row * kCols + ((((col >> 3) ^ (row & kMask))) << 3) + (col & 7);
}

// ldmatrix addressing into a swizzled tile without per-load index math: the
// lane reads row R + lrow and chunk 2 * cc + lchunk (lchunk 0 or 1), where R is
// a compile-time multiple of 8 and cc a compile-time constant. The XOR of the
// swizzle does not distribute over +, but (2 cc + lchunk) ^ s only depends on
// cc's low bits, so the address is one lane-constant base, an immediate and
// one of at most four lane-constant chunk offsets. (Left to itself the
// compiler keeps one register per distinct address, hoisted out of the loops,
// which pushed the backward kernel past 250 registers.)
template <int kCols>
struct LaneAddr {
  static constexpr int kChunks = kCols / 8;
  static constexpr int kMask = kChunks >= 8 ? 7 : kChunks - 1;
  static constexpr int kVariants = (kMask + 1) / 2;
  uint32_t base;
  uint32_t xo[kVariants];
  // `lrow` may include a runtime offset that is a multiple of 8 (a warp's rows).
  __device__ __forceinline__ LaneAddr(const void* tile, int lrow, int lchunk) {
    const int x = lchunk ^ (lrow & kMask);
    base = smem_addr(tile) + static_cast<uint32_t>(lrow * kCols * 2);
#pragma unroll
    for (int i = 0; i < kVariants; ++i) xo[i] = static_cast<uint32_t>(((2 * i) ^ x) * 16);
  }
  __device__ __forceinline__ uint32_t at(int R, int cc) const {
    return base + static_cast<uint32_t>(R * kCols * 2 + ((2 * cc) & ~kMask) * 16) +
           xo[cc % kVariants];
  }
};

// Copies rows [0, kRows) of a tile into swizzled shared memory with cp.async;
// global row r is at src + r * stride (elements) and exists when r < valid
// (others are zero-filled). Only the first valid_chunks 8-element chunks of a
// row are read, the rest zero-filled (rows narrower than the tile: MLA's
// 176-dim latent rows in a 192-wide tile). kThreads threads take part.
template <int kRows, int kCols, int kThreads, typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, long long stride, int valid,
                                          int tid, int valid_chunks = kCols / 8) {
  constexpr int kChunks = kCols / 8;
  constexpr int kTotal = kRows * kChunks;
#pragma unroll
  for (int i = 0; i < (kTotal + kThreads - 1) / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    if (kTotal % kThreads == 0 || idx < kTotal) {
      const int r = idx / kChunks, c = idx % kChunks;
      const bool ok = r < valid && c < valid_chunks;
      const T* g = ok ? src + r * stride + c * 8 : src;
      cp_async16(smem_addr(dst + swz<kCols>(r, c * 8)), g, ok);
    }
  }
}

}  // namespace el::cuda::attn

// ---- internal launchers (attention.cu validates and dispatches to these) ------------------
namespace el::cuda::attn {

enum class Elem { f32, bf16, f16 };

struct FwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  int B, T, S, H, Hkv, D;
  float scale;
  bool causal;
  const float* alibi;  // [H] ALiBi slopes or nullptr (attention.cuh)
  int window;          // causal sliding window, 0 = none (attention.cuh)
};

struct BwdArgs {
  const void* dout;
  const void* q;
  const void* k;
  const void* v;
  const void* out;
  const float* lse;
  void* dq;
  void* dk;
  void* dv;
  float* dq_acc;  // [B,T,H,D] f32 (tensor-core path only)
  float* dsum;    // [B,H,T] f32 = rowsum(dout * out)
  int B, T, S, H, Hkv, D;
  float scale;
  bool causal;
  const float* alibi;  // [H] ALiBi slopes or nullptr
};

// Tensor-core kernels: bf16/f16, D in {64, 128, 192, 256}, 16-byte aligned pointers.
cudaError_t forward_tc(const FwdArgs& a, Elem e, int variant, cudaStream_t stream);
// window > 0: a causal sliding window (attention.cuh; D 64 / 128 only).
cudaError_t backward_tc(const BwdArgs& a, Elem e, int variant, int window, cudaStream_t stream);
// SIMT kernels: any dtype, D <= kSimtMaxD.
constexpr int kSimtMaxD = 256;
cudaError_t forward_simt(const FwdArgs& a, Elem e, cudaStream_t stream);
cudaError_t backward_simt(const BwdArgs& a, Elem e, cudaStream_t stream);
// dsum[b,h,t] = sum_d dout[b,t,h,d] * out[b,t,h,d] for the SIMT path (the
// tensor-core path runs its own vectorised version inside backward_tc).
cudaError_t backward_dsum(const BwdArgs& a, Elem e, cudaStream_t stream);

}  // namespace el::cuda::attn
