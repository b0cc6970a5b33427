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
//    zeros (accumulating: nothing). Tiles go in groups of 16 row tiles with
//    the columns in turn inside a group (tile_of: for L2 reuse).
//  * 3 warpgroups (384 threads). Warpgroup 0 is the producer: one thread
//    streams 64-deep K slices of A (128 rows) and B (BN rows) with the
//    tensor-memory accelerator (cp.async.bulk.tensor, 128-byte swizzle,
//    zero fill outside the tensors) into a ring of kStages shared-memory
//    stages, each completing on a "full" mbarrier; setmaxnreg hands its
//    registers to the consumers. Warpgroups 1 and 2 own 64 output rows each:
//    per slice 4 x wgmma m64nBNk16 from shared-memory descriptors into f32
//    registers (64 or 128 per thread), keeping one slice's group in flight
//    before releasing the previous stage on its "empty" mbarrier. A 256-wide
//    tile with at most 128 columns inside n issues m64n128k16 instead.
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
//    (A warpgroup whose 64 rows all lie past the expert still issues its
//    wgmmas: a branch on the warpgroup index around them makes ptxas
//    serialise every wgmma of the kernel, C7520.)
//  * Epilogue per warpgroup, 64 columns at a time: accumulators -> bf16/f16
//    pairs in a padded shared tile (conflict-free), then 16-byte coalesced
//    global stores of the rows < the expert's end and columns < n. Meanwhile
//    the producer already fills the ring for the block's next tile.
//    Accumulating dw (gradient accumulation) first loads the old values into
//    that tile with the same coalesced pattern (prefetched into L2 four k
//    slices before); each thread adds its pairs to its f32 accumulators
//    before the one rounding, and the tiles of an expert without rows store
//    nothing. fwd / dx blocks then zero the output rows past the last expert
//    (capacity-limited groupings leave some unused), so no second launch.
// The kernels exist only in the sm_90a pass (__CUDA_ARCH_FEAT_SM90_ALL);
// moe_wgmma_supported() checks a probe kernel's attributes to learn whether
// the device's machine code has them.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "core/tensor.h"
#include "cuda/cuda_bulk.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_context.h"
#include "cuda/cuda_moe_gemm_wgmma.h"
#include "cuda/cuda_wgmma.cuh"

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
  // fwd / dx tail split (see Sched): at most max_split units a tail tile (1:
  // never); ws: f32 partials [grid][BN / 2][256]; cnt: 2 counters a tail tile
  // (ctx().counters: zero between kernels, set back to zero by the last unit).
  int max_split;
  float* ws;
  unsigned* cnt;
  // A 256-wide tile with <= 128 columns inside n (the last column tile when n
  // mod 256 is in (0, 128]: 896, the paper's 0.5B width, is 3.5 tiles) runs
  // the n128 instruction on its left half (EL_MOE_NARROW=0: never).
  bool narrow;
  int group_rows;  // row tiles a group of the tile order (see tile_of)
};

// One unit of work: output rows [m0, min(m0 + 128, m_end)), columns [n0, n0 +
// BN), k slices [kt0, kt1) of 64 (the whole reduction unless the tile is split);
// fwd / dx read A rows from m0, dw reads A and B rows from k0 (the expert's
// first row; k_len of them). tail >= 0: the tile is tail tile `tail`, split
// over `split` units of which this is unit `part`.
struct Job {
  int e, m0, m_end, n0, k0, k_len, kt0, kt1;
  int tail = -1, part = 0, split = 1;
};

// The persistent grid's schedule of fwd / dx. With T tiles over G blocks the
// last round holds R = T mod G tiles and leaves G - R blocks idle while each
// of the R runs a whole tile: at 2.06 rounds (the MoE down projection's
// forward and gate/up's dX at 4K tokens: 272 tiles of K 2816 or 5632 on 132
// SMs) a third of the time. So when R <= G / 4 the R tail tiles are split
// over S = G / R units each along K (4 <= S <= max_split, >= 2 slices a
// unit; H100, cuda_moe_bench --quick: gate/up's dX 0.194 -> 0.153 ms at S 16,
// while S 3, gate/up's forward, took 0.162 -> 0.171 ms: the partials' round
// trip and the wait for the slowest unit eat a small split's gain):
// each unit writes its f32 partial sums, and once all S have arrived, each
// sums all S partials (fixed order: deterministic) over its 1 / S of the tile
// and stores it. Units [0, full) are whole tiles, then tail tile i's unit p
// is full + i S + p (< full + G: one tail unit per block at most).
struct Sched {
  int64_t full = 0;  // whole tiles
  int rem = 0;       // tail tiles
  int split = 1;     // units a tail tile
  __device__ int64_t units() const { return full + static_cast<int64_t>(rem) * split; }
};
constexpr int kMinSlicesPerSplit = 2;
constexpr int kMinSplit = 4;

// Units each tail tile of `tiles` fwd / dx tiles over `grid` blocks is split
// into (K of `ktiles` 64-deep slices); 1: no split. The kernel schedules by
// it and the host's tile-width choice (grid_rounds) prices it.
__host__ __device__ inline int tail_split(int64_t tiles, int64_t grid, int ktiles, int max_split) {
  const int64_t rem = tiles % grid;
  if (rem == 0) return 1;
  int64_t split = grid / rem;
  if (split > max_split) split = max_split;
  if (split > ktiles / kMinSlicesPerSplit) split = ktiles / kMinSlicesPerSplit;
  return split >= kMinSplit ? static_cast<int>(split) : 1;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

using namespace wg;  // NOLINT: the kernel below is written in these helpers' terms

// ---- scheduling ------------------------------------------------------------------------
// Tile t of an order over row_tiles x col_tiles: groups of g.group_rows row
// tiles, inside a group the columns in turn, the group's rows fastest. A wave
// of the persistent grid (132 blocks) then covers ~16 row tiles x ~8 column
// tiles, and reads each of them once: with the rows of all experts fastest
// (the first order), a wave read one column of B for 132 row tiles and every
// wave read all of A again (lite-moe gate/up forward: 1.23 GB of HBM for
// 0.49 GB of operands, 71% of the HBM bandwidth busy; H100, ncu).
__device__ __forceinline__ void tile_of(int64_t t, int row_tiles, int col_tiles, int group_rows,
                                        int& rt, int& ct) {
  const int64_t per_group = static_cast<int64_t>(group_rows) * col_tiles;
  const int64_t grp = t / per_group;
  const int first = static_cast<int>(grp) * group_rows;
  const int rows = min(group_rows, row_tiles - first);
  const int in = static_cast<int>(t - grp * per_group);
  ct = in / rows;
  rt = first + in % rows;
}

// Tile t of the block's sequence: tile_of over the row and column tiles
// (dw: of one expert, the experts in turn).
template <int MODE, int BN>
__device__ __forceinline__ Job job_at(int64_t t, const int* off, const int* pre, int experts,
                                      int row_tiles, int col_tiles, const WgArgs& g,
                                      const Sched& sc) {
  Job j;
  if (t >= sc.full) {  // a unit of a split tail tile
    const int u = static_cast<int>(t - sc.full);
    j.tail = u / sc.split;
    j.part = u - j.tail * sc.split;
    j.split = sc.split;
    t = sc.full + j.tail;
  }
  int rt, ct;
  if constexpr (MODE == kModeDw) {
    const int64_t per_expert = static_cast<int64_t>(row_tiles) * col_tiles;
    j.e = static_cast<int>(t / per_expert);
    tile_of(t - j.e * per_expert, row_tiles, col_tiles, g.group_rows, rt, ct);
    j.n0 = ct * BN;
    j.m0 = rt * kBM;
    j.m_end = g.k;
    j.k0 = off[j.e];
    j.k_len = off[j.e + 1] - j.k0;
    j.kt0 = 0;
    j.kt1 = (j.k_len + kBK - 1) / kBK;
  } else {
    tile_of(t, row_tiles, col_tiles, g.group_rows, rt, ct);
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
    j.n0 = ct * BN;
    j.m0 = off[lo] + (rt - pre[lo]) * kBM;
    j.m_end = off[lo + 1];
    j.k0 = 0;
    j.k_len = g.k;
    const int ktiles = (g.k + kBK - 1) / kBK;
    j.kt0 = j.part * ktiles / j.split;
    j.kt1 = (j.part + 1) * ktiles / j.split;
  }
  return j;
}

// ---- producer: one thread -------------------------------------------------------------------
template <int MODE, int BN>
__device__ __forceinline__ void produce(const CUtensorMap* map_a, const CUtensorMap* map_b,
                                        uint8_t* ring, uint64_t* full, uint64_t* empty,
                                        const int* off, const int* pre, int row_tiles,
                                        int col_tiles, const Sched& sc, const WgArgs& g) {
  using Cfg = TileCfg<BN>;
  int stage = 0;
  uint32_t phase = 0;
  for (int64_t t = blockIdx.x; t < sc.units(); t += gridDim.x) {
    const Job j = job_at<MODE, BN>(t, off, pre, g.experts, row_tiles, col_tiles, g, sc);
    for (int kt = j.kt0; kt < j.kt1; ++kt) {
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
constexpr int kPrefetchSlices = 4;  // k slices before the epilogue (~0.8 us each at K slices of 64)

// The 128-byte lines of dW tile j (rows [m0, m_end) of expert e's [k, n]
// block, columns [n0, n0 + BN)) into L2, spread over the 256 consumer threads.
template <class T, int BN>
__device__ __forceinline__ void prefetch_dw_tile(const WgArgs& g, const Job& j, int ct) {
  constexpr int kLinesPerRow = BN * static_cast<int>(sizeof(T)) / 128;
  const T* C = static_cast<const T*>(g.c) + static_cast<int64_t>(j.e) * g.k * g.n;
  for (int i = ct; i < kBM * kLinesPerRow; i += 256) {
    const int r = i / kLinesPerRow, col = j.n0 + (i % kLinesPerRow) * (128 / sizeof(T));
    const int64_t row = static_cast<int64_t>(j.m0) + r;
    if (row < j.m_end && col < g.n) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(C + row * g.n + col));
    }
  }
}

// A unit of a split tail tile (Sched), after its slices: its f32 partial sums
// to the workspace, then (once the tile's `split` units have all arrived) its
// share of the tile's quads of accumulator columns summed over the partials in
// unit order and stored, rows < m_end, columns < n. The unit's block is
// resident with the others (one block per SM, grid <= SMs), so the wait ends.
template <class T, int BN>
__device__ __forceinline__ void store_split_unit(const float (&acc)[BN / 2], const WgArgs& g,
                                                 const Job& j, int64_t unit, int wg, int wt,
                                                 int lane) {
  constexpr int kAcc = BN / 2, kQuads = BN / 8;
  const int ct = wg * 128 + wt;
  float* mine = g.ws + unit * (256 * kAcc);
#pragma unroll
  for (int i = 0; i < kAcc; ++i) mine[i * 256 + ct] = acc[i];
  __threadfence();
  named_barrier(1, 256);
  unsigned* arrived = g.cnt + 2 * j.tail;
  unsigned* finished = arrived + 1;
  if (ct == 0) {
    atomicAdd(arrived, 1u);
    unsigned v;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(arrived) : "memory");
    } while (v < static_cast<unsigned>(j.split));
  }
  named_barrier(1, 256);
  const float* first = g.ws + static_cast<int64_t>(j.tail) * j.split * (256 * kAcc);
  const int r0 = (wt >> 5) * 16 + (lane >> 2), c0 = (lane & 3) * 2;
  const int64_t row = static_cast<int64_t>(j.m0) + wg * 64 + r0;
  T* C = static_cast<T*>(g.c);
  for (int qd = j.part * kQuads / j.split; qd < (j.part + 1) * kQuads / j.split; ++qd) {
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    for (int p = 0; p < j.split; ++p) {
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] += __ldcg(first + (p * kAcc + qd * 4 + e) * 256 + ct);
    }
    const int col = j.n0 + (qd >> 3) * 64 + (qd & 7) * 8 + c0;  // quad qd = 64-column block x 8 + jj
    if (col >= g.n) continue;
    if (row < j.m_end) *reinterpret_cast<uint32_t*>(C + row * g.n + col) = pack2<T>(v[0], v[1]);
    if (row + 8 < j.m_end) {
      *reinterpret_cast<uint32_t*>(C + (row + 8) * g.n + col) = pack2<T>(v[2], v[3]);
    }
  }
  named_barrier(1, 256);  // every unit has read the partials once all have counted here
  if (ct == 0 && atomicAdd(finished, 1u) == static_cast<unsigned>(j.split) - 1) {
    atomicExch(arrived, 0u);
    atomicExch(finished, 0u);
  }
}

// Rows [offsets[E], m) of the fwd / dx output (the rows a capacity-limited
// grouping leaves unused; none when dropless) set to zero by the consumer
// threads of all blocks after their tiles: no tile covers them, so nothing races.
template <class T>
__device__ __forceinline__ void zero_tail_rows(const WgArgs& g, const int* off, int ct) {
  const int64_t first = static_cast<int64_t>(off[g.experts]) * g.n;
  const int64_t end = static_cast<int64_t>(g.m) * g.n;  // n % 8 == 0: whole 16-byte chunks
  T* y = static_cast<T*>(g.c);
  for (int64_t i = first + (static_cast<int64_t>(blockIdx.x) * 256 + ct) * 8; i < end;
       i += static_cast<int64_t>(gridDim.x) * 256 * 8) {
    *reinterpret_cast<uint4*>(y + i) = make_uint4(0, 0, 0, 0);
  }
}

template <class T, int MODE, int BN>
__device__ __forceinline__ void consume(uint8_t* ring, T* epi, uint64_t* full, uint64_t* empty,
                                        const int* off, const int* pre, int row_tiles,
                                        int col_tiles, const Sched& sc, const WgArgs& g) {
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
  for (int64_t t = blockIdx.x; t < sc.units(); t += gridDim.x) {
    const Job j = job_at<MODE, BN>(t, off, pre, g.experts, row_tiles, col_tiles, g, sc);
    // Accumulating dW: the epilogue reads the tile's old values. Asked for in
    // L2 a few slices ahead, its loads wait for L2 instead of HBM (four
    // dependent HBM round trips a tile made accumulating micro-batches' dW
    // ~33% slower, H100); not earlier, where the operand stream would evict them.
    const int prefetch_at = MODE == kModeDw && g.accumulate ? max(0, j.kt1 - kPrefetchSlices) : -1;
    // (the right half's accumulators then hold stale values: never stored,
    // as their columns are >= n)
    const bool narrow = BN == 256 && g.narrow && g.n - j.n0 <= 128;
    int prev = 0;
    // The main loop, in two copies (the whole loop per instruction width: a
    // branch around the wgmmas inside one loop makes ptxas inject warpgroup
    // arrives, C7519).
    auto mainloop = [&](auto half_width) {
      for (int kt = j.kt0; kt < j.kt1; ++kt) {
        if (kt == prefetch_at) prefetch_dw_tile<T, BN>(g, j, ct);
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
        if constexpr (decltype(half_width)::value) {
#pragma unroll
          for (int kk = 0; kk < kBK / 16; ++kk) {
            wgmma_left128<T, kTA, kTB>(acc, da + kk * kAStep, db + kk * kBStep,
                                       kt != j.kt0 || kk != 0);
          }
        } else {
#pragma unroll
          for (int kk = 0; kk < kBK / 16; ++kk) {
            wgmma<T, BN, kTA, kTB>(acc, da + kk * kAStep, db + kk * kBStep, kt != j.kt0 || kk != 0);
          }
        }
        wgmma_commit();
        wgmma_wait<1>();  // the previous slice's products are done: release its stage
        fence_acc(acc);
        if (kt > j.kt0 && lane == 0) mbar_arrive(&empty[prev]);
        prev = stage;
        if (++stage == Cfg::kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    };
    if constexpr (BN == 256) {
      if (narrow) {
        mainloop(std::true_type{});
      } else {
        mainloop(std::false_type{});
      }
    } else {
      mainloop(std::false_type{});
    }
    wgmma_wait<0>();
    fence_acc(acc);
    if (j.kt1 > j.kt0 && lane == 0) mbar_arrive(&empty[prev]);
    if (MODE != kModeDw && j.tail >= 0) {
      store_split_unit<T, BN>(acc, g, j, t - sc.full, wg, wt, lane);
      continue;
    }
    const bool empty_sum = j.kt1 == j.kt0;  // dw of an expert without rows: zeros
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
      if (j.n0 + cb * 64 >= g.n) break;  // the tile's columns past n (uniform per block)
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
  Sched sc;
  sc.full = total;
  if constexpr (MODE != kModeDw) {
    const int split = tail_split(total, gridDim.x, (g.k + kBK - 1) / kBK, g.max_split);
    if (split > 1) {
      sc.rem = static_cast<int>(total % gridDim.x);
      sc.full = total - sc.rem;
      sc.split = split;
    }
  }
  uint8_t* ring = smem;
  T* epi = reinterpret_cast<T*>(smem + Cfg::kEpiOff);
  if (threadIdx.x < 128) {  // producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;" ::: "memory");
    if (threadIdx.x == 0) {
      produce<MODE, BN>(&map_a, &map_b, ring, full, empty, off, pre, row_tiles, col_tiles, sc, g);
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;" ::: "memory");
    consume<T, MODE, BN>(ring, epi, full, empty, off, pre, row_tiles, col_tiles, sc, g);
    if constexpr (MODE != kModeDw) zero_tail_rows<T>(g, off, static_cast<int>(threadIdx.x) - 128);
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

// The tuning switches (README), read once: EL_MOE_GROUP_ROWS, row tiles a
// group of the tile order (tile_of; default 16, a large value: all rows
// fastest, the first order); EL_MOE_NARROW=0, no half-width instruction for
// narrow last column tiles; EL_MOE_SPLIT, the most units a fwd / dx tail tile
// is split into (Sched; default 16, below 4: no split).
int group_rows() {
  static const int v = env_int("EL_MOE_GROUP_ROWS", 16, 1, 1 << 30);
  return v;
}
bool narrow_tiles() {
  static const bool v = env_int("EL_MOE_NARROW", 1, 0, 1) != 0;
  return v;
}
int max_tail_split() {
  static const int v = env_int("EL_MOE_SPLIT", 16, 1, 1 << 30);
  return v;
}

// Rounds of the persistent grid for `tiles` tiles on `sms` blocks: a last
// round of at most a quarter of the blocks is split along K (fwd / dx, Sched), costing about
// its share of a round (+ the partials' round trip) instead of a whole one.
double grid_rounds(int64_t tiles, int sms, const MoeGemmOperands& op) {
  const int64_t full = tiles / sms, rem = tiles % sms;
  if (rem == 0) return static_cast<double>(full);
  if (op.mode != MoeGemm::dw &&
      tail_split(tiles, sms, static_cast<int>(cdiv(op.k, kBK)), max_tail_split()) > 1) {
    return static_cast<double>(full) + static_cast<double>(rem) / sms + 0.1;
  }
  return static_cast<double>(full + 1);
}

// The persistent grid's rounds times the tile's work; a 128-wide tile does
// half a 256-wide one's products at lower efficiency (A is read from shared
// memory once per 128 columns instead of per 256). Measured on an H100
// (cuda_moe_bench --quick, dX: 5 rounds of 128 took 0.266 ms, 3 of 256 0.207
// ms), a 128-wide tile's round costs ~0.77 of a 256-wide one's, not 0.5:
// the factor 1.5 below.
int pick_tile_n(const MoeGemmOperands& op, int sms) {
  const double c256 = grid_rounds(tile_count(op, 256), sms, op) * 256;
  const double c128 = grid_rounds(tile_count(op, 128), sms, op) * 128 * 1.5;
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
  WgArgs g{op.offsets, op.c, op.experts, static_cast<int>(op.m), static_cast<int>(op.n),
           static_cast<int>(op.k), MODE == kModeDw && op.accumulate, 1, nullptr, nullptr,
           narrow_tiles(), group_rows()};
  // Upper bound of the tiles (fwd / dx: every expert may end in a partial tile).
  const int64_t cols = cdiv(op.n, BN);
  const int64_t bound = MODE == kModeDw ? op.experts * cdiv(op.k, kBM) * cols
                                        : (cdiv(op.m, kBM) + op.experts) * cols;
  const int64_t grid = std::min<int64_t>(ctx().sm_count, bound);
  // The tail split's partials (the kernel decides from the device offsets
  // whether to split; the workspace covers one unit a block) and counters.
  Tensor ws;
  if (MODE != kModeDw && max_tail_split() > 1 && 2 * grid <= kCounterSlots) {
    ws = Tensor::empty({grid * 128 * BN}, DType::f32, Device::cuda(ctx().device));
    g.max_split = max_tail_split();
    g.ws = ws.data<float>();
    g.cnt = reinterpret_cast<unsigned*>(ctx().counters);
  }
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
