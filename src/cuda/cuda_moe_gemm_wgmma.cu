// cuda_moe_gemm_wgmma.cu — the MoE grouped GEMMs (cuda_moe_gemm.cu) on Hopper's
// warpgroup tensor-core instructions (wgmma.mma_async, sm_90a), bf16 / f16
// with f32 accumulation. Interface: cuda_moe_gemm_wgmma.h.
//
// One persistent kernel per problem and tile width BN (128 or 256):
//  * grid = min(SMs, tiles); block b takes tiles b, b + grid, ... The tiles
//    are 128 x BN outputs of one expert. Row-grouped problems (fwd, dx)
//    number their row tiles expert by expert from the device offsets (each
//    block builds the prefix of the experts' tile counts in shared memory,
//    then finds a tile's expert by binary search), so a tile never crosses
//    an expert and no block is spare; the host never sees the counts (no
//    sync, CUDA-graph capturable). dw tiles are (o tile, n tile, expert),
//    each reducing over its expert's rows; an expert without rows writes
//    zeros (accumulating: nothing).
//  * 3 warpgroups (384 threads). Warpgroup 0 is the producer: one thread
//    streams 64-deep K slices of A (128 rows) and B (BN rows) with the
//    tensor-memory accelerator (cp.async.bulk.tensor, 128-byte swizzle,
//    zero fill outside the tensors) into a ring of kStages shared-memory
//    stages, each completing on a "full" mbarrier; setmaxnreg hands its
//    registers to the consumers. Warpgroups 1 and 2 own 64 output rows each:
//    per slice 4 x wgmma m64nBNk16 from shared-memory descriptors into f32
//    registers (64 or 128 per thread), keeping one slice's group in flight
//    before releasing the previous stage on its "empty" mbarrier.
//  * Operand layouts need no transposes: wgmma reads A and B K-major or
//    MN-major (the transpose immediates). fwd: A = x rows, B = w_e [n, k],
//    both K-major (box 64 k x rows). dx: B = w_e [k, n] MN-major, dw: A =
//    dy_e [rows, o] and B = x_e [rows, n] MN-major (boxes of 64 k rows x 64
//    contiguous elements, one 128-byte swizzle atom wide, LBO = 8 KB apart).
//  * Rows past an expert's end: fwd / dx load them (they belong to the next
//    expert, or lie past m and read as zeros) and never store their outputs.
//    dw reduces over rows, so the consumers zero the rows of the last,
//    partial slice in both operands in shared memory (then a proxy fence and
//    a barrier of the 256 consumer threads) before the tensor cores read it.
//    A warpgroup whose 64 rows are all outside the expert issues no wgmma
//    (it still waits and releases stages, which keeps the ring in step).
//  * Epilogue per warpgroup, 64 columns at a time: accumulators -> bf16/f16
//    pairs in a padded shared tile (conflict-free), then 16-byte coalesced
//    global stores of the rows < the expert's end and columns < n. Meanwhile
//    the producer already fills the ring for the block's next tile.
//    Accumulating dw (gradient accumulation) first loads the old values into
//    that tile with the same coalesced pattern; each thread adds its pairs to
//    its f32 accumulators before the one rounding, and the tiles of an
//    expert without rows store nothing.
// The kernels exist only in the sm_90a pass (__CUDA_ARCH_FEAT_SM90_ALL);
// moe_wgmma_supported() checks a probe kernel's attributes to learn whether
// the device's machine code has them.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "cuda/cuda_bulk.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_moe_gemm_wgmma.h"

namespace el::cuda {
namespace {

constexpr int kBM = 128, kBK = 64, kThreads = 384;
constexpr int kMaxExperts = 1024;
[[maybe_unused]] constexpr int kSubTileBytes = 64 * 128;  // 64 rows of a 128-byte swizzle atom
constexpr int kEpiPitch = 72;            // elements per row of the epilogue tile (64 + 8)
constexpr int kModeFwd = 0, kModeDx = 1, kModeDw = 2;

template <int BN>
struct TileCfg {
  static_assert(BN == 128 || BN == 256, "tile width");
  static constexpr int kStages = BN == 256 ? 4 : 6;
  static constexpr int kABytes = kBM * kBK * 2;
  static constexpr int kBBytes = BN * kBK * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  // Shared layout from a 1024-byte aligned base (the swizzle atoms' alignment).
  static constexpr int kEpiOff = kStages * kStageBytes;
  static constexpr int kBarOff = kEpiOff + 2 * 64 * kEpiPitch * 2;  // full[S], empty[S]
  static constexpr int kOffOff = kBarOff + 2 * kStages * 8;        // int offsets[E + 1]
  static constexpr int kPreOff = kOffOff + (kMaxExperts + 1) * 4;  // int tile prefix[E + 1]
  static constexpr int kBytes = kPreOff + (kMaxExperts + 1) * 4 + 1024;  // + alignment slack
};

struct WgArgs {
  const int32_t* offsets;
  void* c;
  int experts;
  int m, n, k;  // as MoeGemmOperands (checked < 2^31)
  bool accumulate;  // dw: c += the product
};

// One tile: output rows [m0, min(m0 + 128, m_end)), columns [n0, n0 + BN),
// reducing over k_len; fwd / dx read A rows from m0, dw reads A and B rows
// from k0 (the expert's first row).
struct Job {
  int e, m0, m_end, n0, k0, k_len;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// ---- PTX wrappers ----------------------------------------------------------------------
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_addr(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads across the asynchronous
// wgmma (the asm statements above do not name the registers).
template <int N>
__device__ __forceinline__ void fence_acc(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading
// byte offset (MN-major: the distance between 64-element atoms along M/N;
// K-major: unused, 16), stride byte offset (8-row groups: 1024), all >> 4.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo) {
  return uint64_t((addr >> 4) & 0x3FFF) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

#define EL_D8(i)                                                                             \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define EL_D64(i)                                                                     \
  EL_D8(i), EL_D8(i + 8), EL_D8(i + 16), EL_D8(i + 24), EL_D8(i + 32), EL_D8(i + 40), \
      EL_D8(i + 48), EL_D8(i + 56)
#define EL_REGS_0_63                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "          \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define EL_REGS_64_127                                                                    \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "      \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "      \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, " \
  "%111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, "   \
  "%125, %126, %127"
// d (+)= A B for one k16 step; scale_d 0 overwrites d.
#define EL_WGMMA_N256(TY)                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY                     \
               " {" EL_REGS_0_63 ", " EL_REGS_64_127 "}, %128, %129, p, 1, 1, %131, %132;\n}" \
               : EL_D64(0), EL_D64(64)                                                      \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB))
#define EL_WGMMA_N128(TY)                                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"               \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY   \
               " {" EL_REGS_0_63 "}, %64, %65, p, 1, 1, %67, %68;\n}"     \
               : EL_D64(0)                                                \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB))

template <class T, int BN, int TA, int TB>
__device__ __forceinline__ void wgmma(float (&d)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (BN == 256) {
    if constexpr (kBf16) {
      EL_WGMMA_N256("bf16");
    } else {
      EL_WGMMA_N256("f16");
    }
  } else {
    if constexpr (kBf16) {
      EL_WGMMA_N128("bf16");
    } else {
      EL_WGMMA_N128("f16");
    }
  }
}

template <class T>
__device__ __forceinline__ float2 unpack2(uint32_t v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 h;
    memcpy(&h, &v, 4);
    return __bfloat1622float2(h);
  } else {
    __half2 h;
    memcpy(&h, &v, 4);
    return __half22float2(h);
  }
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

// ---- scheduling ------------------------------------------------------------------------
// Tile t of the block's sequence: row tiles fastest (concurrent blocks share
// B's columns), then column tiles (then experts, dw).
template <int MODE, int BN>
__device__ __forceinline__ Job job_at(int64_t t, const int* off, const int* pre, int experts,
                                      int row_tiles, int col_tiles, const WgArgs& g) {
  Job j;
  const int rt = static_cast<int>(t % row_tiles);
  const int64_t q = t / row_tiles;
  if constexpr (MODE == kModeDw) {
    j.e = static_cast<int>(q / col_tiles);
    j.n0 = static_cast<int>(q % col_tiles) * BN;
    j.m0 = rt * kBM;
    j.m_end = g.k;
    j.k0 = off[j.e];
    j.k_len = off[j.e + 1] - j.k0;
  } else {
    // The expert e with pre[e] <= rt < pre[e + 1] (rt < pre[experts]).
    int lo = 0, hi = experts - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (pre[mid] <= rt) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    j.e = lo;
    j.n0 = static_cast<int>(q) * BN;
    j.m0 = off[lo] + (rt - pre[lo]) * kBM;
    j.m_end = off[lo + 1];
    j.k0 = 0;
    j.k_len = g.k;
  }
  return j;
}

// ---- producer: one thread -------------------------------------------------------------------
template <int MODE, int BN>
__device__ __forceinline__ void produce(const CUtensorMap* map_a, const CUtensorMap* map_b,
                                        uint8_t* ring, uint64_t* full, uint64_t* empty,
                                        const int* off, const int* pre, int row_tiles,
                                        int col_tiles, int64_t total, const WgArgs& g) {
  using Cfg = TileCfg<BN>;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const Job j = job_at<MODE, BN>(t, off, pre, g.experts, row_tiles, col_tiles, g);
    const int ktiles = (j.k_len + kBK - 1) / kBK;
    for (int kt = 0; kt < ktiles; ++kt) {
      mbar_wait(&empty[stage], phase ^ 1);
      mbar_expect_tx(&full[stage], Cfg::kStageBytes);
      uint8_t* a = ring + stage * Cfg::kStageBytes;
      uint8_t* b = a + Cfg::kABytes;
      const int k = kt * kBK;
      if constexpr (MODE == kModeDw) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
          tma_load_2d(a + i * kSubTileBytes, map_a, j.m0 + 64 * i, j.k0 + k, &full[stage]);
#pragma unroll
        for (int i = 0; i < BN / 64; ++i)
          tma_load_2d(b + i * kSubTileBytes, map_b, j.n0 + 64 * i, j.k0 + k, &full[stage]);
      } else {
        tma_load_2d(a, map_a, k, j.m0, &full[stage]);
        if constexpr (MODE == kModeFwd) {
          tma_load_3d(b, map_b, k, j.n0, j.e, &full[stage]);
        } else {
#pragma unroll
          for (int i = 0; i < BN / 64; ++i)
            tma_load_3d(b + i * kSubTileBytes, map_b, j.n0 + 64 * i, k, j.e, &full[stage]);
        }
      }
      if (++stage == Cfg::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
}

// ---- consumers: warpgroups 1 and 2 ----------------------------------------------------------
template <class T, int MODE, int BN>
__device__ __forceinline__ void consume(uint8_t* ring, T* epi, uint64_t* full, uint64_t* empty,
                                        const int* off, const int* pre, int row_tiles,
                                        int col_tiles, int64_t total, const WgArgs& g) {
  using Cfg = TileCfg<BN>;
  constexpr int kTA = MODE == kModeDw ? 1 : 0;  // A MN-major
  constexpr int kTB = MODE == kModeFwd ? 0 : 1;  // B MN-major
  constexpr uint32_t kAStep = kTA ? 2048 >> 4 : 32 >> 4;  // one k16 step, descriptor units
  constexpr uint32_t kBStep = kTB ? 2048 >> 4 : 32 >> 4;
  const int ct = threadIdx.x - 128;  // 0..255
  const int wg = ct >> 7;            // this warpgroup's 64 rows of the tile
  const int wt = ct & 127;
  const int lane = threadIdx.x & 31;
  const uint32_t ring_addr = smem_addr(ring);
  T* stile = epi + wg * 64 * kEpiPitch;
  int stage = 0;
  uint32_t phase = 0;
  float acc[BN / 2];
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const Job j = job_at<MODE, BN>(t, off, pre, g.experts, row_tiles, col_tiles, g);
    const int ktiles = (j.k_len + kBK - 1) / kBK;
    int prev = 0;
    for (int kt = 0; kt < ktiles; ++kt) {
      mbar_wait(&full[stage], phase);
      uint8_t* st = ring + stage * Cfg::kStageBytes;
      if constexpr (MODE == kModeDw) {
        const int valid = j.k_len - kt * kBK;
        if (valid < kBK) {  // the expert's rows end inside this slice: zero the rest
          const int per_tile = (kBK - valid) * 8;  // 16-byte chunks per 64 x 128 B sub-tile
          const int chunks = per_tile * (2 + BN / 64);
          for (int i = ct; i < chunks; i += 256) {
            const int s = i / per_tile, r = i - s * per_tile;
            uint4* row0 = reinterpret_cast<uint4*>(st + s * kSubTileBytes + valid * 128);
            row0[r] = make_uint4(0, 0, 0, 0);
          }
          asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
          named_barrier(1, 256);
        }
      }
      const uint32_t a_addr = ring_addr + stage * Cfg::kStageBytes + wg * kSubTileBytes;
      const uint32_t b_addr = ring_addr + stage * Cfg::kStageBytes + Cfg::kABytes;
      const uint64_t da = smem_desc(a_addr, kTA ? kSubTileBytes : 16);
      const uint64_t db = smem_desc(b_addr, kTB ? kSubTileBytes : 16);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        wgmma<T, BN, kTA, kTB>(acc, da + kk * kAStep, db + kk * kBStep, (kt | kk) != 0);
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous slice's products are done: release its stage
      fence_acc(acc);
      if (kt > 0 && lane == 0) mbar_arrive(&empty[prev]);
      prev = stage;
      if (++stage == Cfg::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
    wgmma_wait<0>();
    fence_acc(acc);
    if (ktiles > 0 && lane == 0) mbar_arrive(&empty[prev]);
    const bool empty_sum = ktiles == 0;  // dw of an expert without rows: zeros
    const bool add = MODE == kModeDw && g.accumulate;
    // Accumulating, an expert without rows adds nothing (uniform per block,
    // so both warpgroups skip the epilogue and its barriers alike).
    if (add && empty_sum) continue;
    // Epilogue: 64 columns at a time through the padded shared tile.
    T* C = static_cast<T*>(g.c) +
           (MODE == kModeDw ? static_cast<int64_t>(j.e) * g.k * g.n : int64_t{0});
    const int r0 = (wt >> 5) * 16 + (lane >> 2), c0 = (lane & 3) * 2;
    // f(tile chunk, C chunk) for this thread's 16-byte chunks of 64-column
    // block cb that lie inside C (the others are never stored).
    auto inside_chunks = [&](int cb, auto&& f) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int idx = wt + i * 128, r = idx >> 3, ch = idx & 7;
        const int64_t row = static_cast<int64_t>(j.m0) + wg * 64 + r;
        const int col = j.n0 + cb * 64 + ch * 8;
        if (row < j.m_end && col < g.n) {
          f(reinterpret_cast<uint4*>(stile + r * kEpiPitch + ch * 8),
            reinterpret_cast<uint4*>(C + row * g.n + col));
        }
      }
    };
#pragma unroll
    for (int cb = 0; cb < BN / 64; ++cb) {
      if (add) {  // the old values of the chunks this thread stores below
        inside_chunks(cb, [](uint4* tile, const uint4* c) { *tile = *c; });
        named_barrier(2 + wg, 128);
      }
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        const int q = (cb * 8 + jj) * 4;  // accumulator columns 8 (cb * 8 + jj) + c0, + 1
        uint32_t* lo = reinterpret_cast<uint32_t*>(stile + r0 * kEpiPitch + jj * 8 + c0);
        uint32_t* hi = reinterpret_cast<uint32_t*>(stile + (r0 + 8) * kEpiPitch + jj * 8 + c0);
        if (add) {
          const float2 a = unpack2<T>(*lo), b = unpack2<T>(*hi);
          *lo = pack2<T>(acc[q] + a.x, acc[q + 1] + a.y);
          *hi = pack2<T>(acc[q + 2] + b.x, acc[q + 3] + b.y);
        } else {
          *lo = empty_sum ? 0u : pack2<T>(acc[q], acc[q + 1]);
          *hi = empty_sum ? 0u : pack2<T>(acc[q + 2], acc[q + 3]);
        }
      }
      named_barrier(2 + wg, 128);
      inside_chunks(cb, [](const uint4* tile, uint4* c) { *c = *tile; });
      named_barrier(2 + wg, 128);
    }
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <class T, int MODE, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    moe_wgmma_kernel(const __grid_constant__ CUtensorMap map_a,
                     const __grid_constant__ CUtensorMap map_b, const WgArgs g) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = TileCfg<BN>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // (an offset from the array itself, so the compiler keeps shared-memory accesses)
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + Cfg::kBarOff);
  uint64_t* empty = full + Cfg::kStages;
  int* off = reinterpret_cast<int*>(smem + Cfg::kOffOff);
  int* pre = reinterpret_cast<int*>(smem + Cfg::kPreOff);
  const int experts = g.experts;
  for (int i = threadIdx.x; i <= experts; i += kThreads) off[i] = g.offsets[i];
  if (threadIdx.x == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 8);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if constexpr (MODE != kModeDw) {
    // pre[e] = row tiles of experts < e: each lane sums a run of experts, then a warp scan.
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x, per = (experts + 31) / 32;
      const int lo = min(experts, lane * per), hi = min(experts, lo + per);
      int sum = 0;
      for (int e = lo; e < hi; ++e) sum += (off[e + 1] - off[e] + kBM - 1) / kBM;
      int incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      int run = incl - sum;
      for (int e = lo; e < hi; ++e) {
        pre[e] = run;
        run += (off[e + 1] - off[e] + kBM - 1) / kBM;
      }
      if (lane == 31) pre[experts] = incl;
    }
    __syncthreads();
  }
  const int col_tiles = (g.n + BN - 1) / BN;
  const int row_tiles = MODE == kModeDw ? (g.k + kBM - 1) / kBM : pre[experts];
  const int64_t total =
      static_cast<int64_t>(row_tiles) * col_tiles * (MODE == kModeDw ? experts : 1);
  uint8_t* ring = smem;
  T* epi = reinterpret_cast<T*>(smem + Cfg::kEpiOff);
  if (threadIdx.x < 128) {  // producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;" ::: "memory");
    if (threadIdx.x == 0) {
      produce<MODE, BN>(&map_a, &map_b, ring, full, empty, off, pre, row_tiles, col_tiles, total,
                        g);
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;" ::: "memory");
    consume<T, MODE, BN>(ring, epi, full, empty, off, pre, row_tiles, col_tiles, total, g);
  }
#else
  __trap();  // never launched: moe_wgmma_supported() is false without sm_90a code
#endif
}

// Its static shared memory is the probe: kProbeBytes only in the sm_90a pass.
constexpr int kProbeBytes = 4096;
__global__ void moe_wgmma_probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __shared__ int s[kProbeBytes / 4];
  s[threadIdx.x % (kProbeBytes / 4)] = static_cast<int>(threadIdx.x);
  __syncthreads();
  if (out != nullptr) *out = s[0];
#endif
}

// ---- host ---------------------------------------------------------------------------------
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A tiled tensor map, 128-byte swizzle, zero fill outside: dims[0] contiguous
// (elements), strides (bytes) of dims 1.., box in elements.
CUtensorMap make_map(DType dt, const void* base, int rank, const uint64_t* dims,
                     const uint64_t* strides, const uint32_t* box, const char* what) {
  CUtensorMap map;
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUresult rc = encode_fn()(
      &map, dt == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      static_cast<cuuint32_t>(rank), const_cast<void*>(base), dims, strides, box, elem_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  EL_CUDA_ENSURE(rc == CUDA_SUCCESS,
                 "cuda moe_gemm_wgmma: cuTensorMapEncodeTiled failed ({}) for {} (dims {} x {})",
                 static_cast<int>(rc), what, dims[0], dims[1]);
  return map;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiles of the problem at tile width bn (fwd / dx: the row tiles estimated
// with half a partial tile per expert).
int64_t tile_count(const MoeGemmOperands& op, int bn) {
  const int64_t cols = cdiv(op.n, bn);
  if (op.mode == MoeGemm::dw) return op.experts * cdiv(op.k, kBM) * cols;
  return (cdiv(op.m, kBM) + op.experts / 2) * cols;
}

// The persistent grid's rounds times the tile's work; a 128-wide tile does
// half a 256-wide one's products at lower efficiency (A is read from shared
// memory once per 128 columns instead of per 256). Measured on an H100
// (cuda_moe_bench --quick, dX: 5 rounds of 128 took 0.266 ms, 3 of 256 0.207
// ms), a 128-wide tile's round costs ~0.77 of a 256-wide one's, not 0.5:
// the factor 1.5 below.
int pick_tile_n(const MoeGemmOperands& op, int sms) {
  const double c256 = static_cast<double>(cdiv(tile_count(op, 256), sms)) * 256;
  const double c128 = static_cast<double>(cdiv(tile_count(op, 128), sms)) * 128 * 1.5;
  return c128 < c256 ? 128 : 256;
}

template <class T, int MODE, int BN>
void launch(const MoeGemmOperands& op) {
  using Cfg = TileCfg<BN>;
  auto* kernel = moe_wgmma_kernel<T, MODE, BN>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kBytes);
  EL_CUDA_CHECK(attr);
  const DType dt = op.dtype;
  const uint64_t m = op.m, n = op.n, k = op.k, e = op.experts, es = 2;
  CUtensorMap ma, mb;
  if (MODE == kModeDw) {
    // a = dy [m, k = O], b = x [m, n]: boxes of 64 contiguous x 64 rows.
    const uint64_t da[2] = {k, m}, sa[1] = {k * es}, db[2] = {n, m}, sb[1] = {n * es};
    const uint32_t box[2] = {64, 64};
    ma = make_map(dt, op.a, 2, da, sa, box, "dy");
    mb = make_map(dt, op.b, 2, db, sb, box, "x");
  } else {
    const uint64_t da[2] = {k, m}, sa[1] = {k * es};
    const uint32_t box_a[2] = {kBK, kBM};
    ma = make_map(dt, op.a, 2, da, sa, box_a, "rows");
    if (MODE == kModeFwd) {  // w [E, n, k]
      const uint64_t db[3] = {k, n, e}, sb[2] = {k * es, n * k * es};
      const uint32_t box_b[3] = {kBK, BN, 1};
      mb = make_map(dt, op.b, 3, db, sb, box_b, "w");
    } else {  // w [E, k, n]
      const uint64_t db[3] = {n, k, e}, sb[2] = {n * es, k * n * es};
      const uint32_t box_b[3] = {64, kBK, 1};
      mb = make_map(dt, op.b, 3, db, sb, box_b, "w");
    }
  }
  const WgArgs g{op.offsets, op.c, op.experts, static_cast<int>(op.m), static_cast<int>(op.n),
                 static_cast<int>(op.k), MODE == kModeDw && op.accumulate};
  // Upper bound of the tiles (fwd / dx: every expert may end in a partial tile).
  const int64_t cols = cdiv(op.n, BN);
  const int64_t bound = MODE == kModeDw ? op.experts * cdiv(op.k, kBM) * cols
                                        : (cdiv(op.m, kBM) + op.experts) * cols;
  const int64_t grid = std::min<int64_t>(ctx().sm_count, bound);
  kernel<<<static_cast<unsigned>(grid), kThreads, Cfg::kBytes, ctx().stream>>>(ma, mb, g);
  EL_CUDA_CHECK_LAUNCH("moe_wgmma_kernel");
}

template <class T, int MODE>
void launch_width(const MoeGemmOperands& op, int tile_n) {
  if (tile_n == 128) {
    launch<T, MODE, 128>(op);
  } else {
    launch<T, MODE, 256>(op);
  }
}

template <class T>
void launch_mode(const MoeGemmOperands& op, int tile_n) {
  switch (op.mode) {
    case MoeGemm::fwd:
      return launch_width<T, kModeFwd>(op, tile_n);
    case MoeGemm::dx:
      return launch_width<T, kModeDx>(op, tile_n);
    case MoeGemm::dw:
      return launch_width<T, kModeDw>(op, tile_n);
  }
}

}  // namespace

bool moe_wgmma_supported() {
  static std::atomic<int> cached{-1};
  int v = cached.load(std::memory_order_relaxed);
  if (v >= 0) return v == 1;
  int dev = 0, major = 0, minor = 0, optin = 0;
  bool ok = cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) ==
                cudaSuccess;
  ok = ok && major == 9 && minor == 0 && optin >= TileCfg<256>::kBytes;
  if (ok) {
    // Fails (no kernel image) where the binary has no code for this device.
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, moe_wgmma_probe_kernel) != cudaSuccess) {
      (void)cudaGetLastError();  // not to surface at the next launch check
      ok = false;
    }
    ok = ok && fa.sharedSizeBytes >= kProbeBytes && encode_fn() != nullptr;
  }
  cached.store(ok ? 1 : 0, std::memory_order_relaxed);
  return ok;
}

bool moe_gemm_wgmma(const MoeGemmOperands& op, int tile_n) {
  if (op.dtype != DType::bf16 && op.dtype != DType::f16) return false;
  constexpr int64_t kLimit = int64_t{1} << 31;
  if (op.m <= 0 || op.n <= 0 || op.k <= 0 || op.m >= kLimit || op.n >= kLimit || op.k >= kLimit)
    return false;
  if (op.experts <= 0 || op.experts > kMaxExperts || op.n % 8 != 0 || op.k % 8 != 0) return false;
  if (!aligned16(op.a) || !aligned16(op.b) || !aligned16(op.c)) return false;
  if (!moe_wgmma_supported()) return false;
  if (tile_n != 128 && tile_n != 256) tile_n = pick_tile_n(op, ctx().sm_count);
  if (op.dtype == DType::bf16) {
    launch_mode<__nv_bfloat16>(op, tile_n);
  } else {
    launch_mode<__half>(op, tile_n);
  }
  return true;
}

}  // namespace el::cuda
