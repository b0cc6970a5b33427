// cuda_moe_gemm.cu — the grouped GEMMs of ops::grouped_linear
// (Backend::grouped_gemm / grouped_gemm_dw, ops/backend.h): every expert's
// projection in ONE launch, the per-expert row ranges read from the device
// offsets.
//
// Why our own kernel and not cublasGemmGroupedBatchedEx: cuBLAS takes each
// group's m / n / k in host arrays (and device arrays of pointers), so the
// token counts per expert would have to come back to the host — a device
// synchronisation in every MoE layer's forward and backward, which stalls
// the launch queue and cannot be captured in a CUDA graph. cuBLAS's grouped
// kernels are warp-level MMA (mma.sync) kernels too (NVIDIA's "Introducing
// Grouped GEMM APIs in cuBLAS" notes they do not use wgmma); on Hopper our
// own scheduling lets us use wgmma (below). cuBLAS's dtype support (f32, f16,
// bf16 with f32 compute) is what we need either way.
//
// Three problems, one tensor-core kernel template (bf16/f16, 128 x 128 x 32
// tiles, 8 warps of 64 x 32, 3-stage cp.async pipeline, XOR-swizzled shared
// tiles read by ldmatrix, mma.sync m16n8k16 with f32 accumulators):
//   kFwd  y[r] = x[r] w_e^T    A = x rows (k contiguous), B = w_e [N, K] (k contiguous)
//   kDx   dx[r] = dy[r] w_e    A = dy rows,               B = w_e [K, N] (n contiguous)
//   kDw   dw_e = dy_e^T x_e    A = dy_e^T (m contiguous), B = x_e (n contiguous),
//                              reduction over the expert's rows
// Row-grouped problems (kFwd, kDx) launch ceil(M / 128) + E row tiles per
// column tile; block t walks the offsets to find the expert and the 128 rows
// of it that it owns (a tile never crosses an expert), the last few blocks
// find nothing and exit. kDw launches E x (O / 128) x (K / 128) tiles, each
// reducing over its expert's rows (an expert without rows writes zeros).
// kDw with `accumulate` adds the f32 product to C's old values before the
// store's rounding, and the tiles of an expert without rows return at once
// (adding nothing), so gradient accumulation needs no separate add over dW.
// The operands' contiguous dimension must be a multiple of 8 and 16-byte
// aligned; f32, and shapes that are not, run a SIMT kernel with the same
// scheduling (the tests' f32 comparisons use it).
//
// On Hopper (compute capability 9.0, a build with sm_90a code) bf16 / f16
// problems that the mma.sync kernel takes run instead on the wgmma kernels of
// cuda_moe_gemm_wgmma.cu (persistent, TMA-fed, 128 x 128 or 128 x 256 tiles;
// up to 1024 experts). The environment variable EL_MOE_GEMM, read once,
// picks the path for A/B runs of the tests and benchmarks:
//   wgmma (default)  wgmma where the device and operands allow, else the above
//   wgmma128 / wgmma256  the same with the tile width forced (else chosen by
//                    the persistent grid's rounds)
//   mma              never wgmma: the mma.sync / SIMT kernels only
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/attention_device.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_moe_gemm_wgmma.h"

namespace el::cuda {
namespace {

enum Mode : int { kFwd = 0, kDx = 1, kDw = 2 };

struct GroupedArgs {
  const void* a;  // kFwd / kDx: the sorted rows [M, K]; kDw: dy [M, O]
  const void* b;  // kFwd / kDx: the experts' weights [E, N * K]; kDw: x [M, N]
  void* c;        // kFwd / kDx: y [M, N]; kDw: dw [E, O, N]
  const int32_t* offsets;  // [E + 1]
  int experts;
  int64_t m;  // rows of the sorted buffers
  int n;      // C's columns
  int k;      // kFwd / kDx: the reduction; kDw: O, C's rows
  bool accumulate = false;  // kDw: C += the product (Backend::grouped_gemm_dw)
};

// One block's problem: C tile origin (m0, n0) and extents, the reduction
// length, and A / B / C with the expert's offsets applied.
struct Problem {
  int64_t m0, m_end;  // C rows [m0, m_end) of this block's expert (kDw: [m0, O))
  int n0;
  int k_len;
  const void* a;
  int64_t lda;
  const void* b;
  int64_t ldb;
  void* c;
  int64_t ldc;
};

// false: the block has no tile (a row-grouped grid's spare blocks).
template <int MODE, int BM, int BN, class T>
__device__ __forceinline__ bool find_problem(const GroupedArgs& g, Problem& p) {
  p.n0 = blockIdx.y * BN;
  if constexpr (MODE == kDw) {
    const int e = blockIdx.z;
    const int lo = g.offsets[e], hi = g.offsets[e + 1];
    p.m0 = static_cast<int64_t>(blockIdx.x) * BM;
    p.m_end = g.k;
    p.k_len = hi - lo;
    p.a = static_cast<const T*>(g.a) + static_cast<int64_t>(lo) * g.k;
    p.lda = g.k;
    p.b = static_cast<const T*>(g.b) + static_cast<int64_t>(lo) * g.n;
    p.ldb = g.n;
    p.c = static_cast<T*>(g.c) + static_cast<int64_t>(e) * g.k * g.n;
    p.ldc = g.n;
    return true;
  } else {
    int acc = 0;
    const int t = blockIdx.x;
    for (int e = 0; e < g.experts; ++e) {
      const int lo = g.offsets[e], hi = g.offsets[e + 1];
      const int tiles = (hi - lo + BM - 1) / BM;
      if (t < acc + tiles) {
        p.m0 = lo + static_cast<int64_t>(t - acc) * BM;
        p.m_end = hi;
        p.k_len = g.k;
        p.a = g.a;
        p.lda = g.k;
        p.b = static_cast<const T*>(g.b) + static_cast<int64_t>(e) * g.n * g.k;
        p.ldb = MODE == kFwd ? g.k : g.n;
        p.c = g.c;
        p.ldc = g.n;
        return true;
      }
      acc += tiles;
    }
    return false;
  }
}

template <class T>
__device__ __forceinline__ void store2(T* p, float x, float y) {
  if constexpr (std::is_same_v<T, float>) {
    p[0] = x;
    p[1] = y;
  } else {
    *reinterpret_cast<uint32_t*>(p) = attn::pack2<T>(x, y);
  }
}

// ---- tensor-core kernel ------------------------------------------------------------------
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 3, kThreads = 256;
constexpr int kTileElems = kBM * kBK;  // A and B tiles alike (kBM == kBN)

// Element offset of 16-byte chunk `c` (8 elements) of row `r` in a shared
// tile. Rows of 32 elements (k contiguous, 4 chunks): chunk c ^ ((r / 2) & 3),
// so the 8 rows one ldmatrix reads land in 8 different bank groups; rows of
// 128 elements (m / n contiguous, 16 chunks): c ^ (r & 7).
template <bool KMAJOR>
__device__ __forceinline__ int swz(int r, int c) {
  if constexpr (KMAJOR) return r * 128 + ((c ^ (r & 7)) << 3);
  return r * 32 + ((c ^ ((r >> 1) & 3)) << 3);
}

// One stage's tile: non-k-major [128 rows][32 k] from rows [row0, row_end)
// of base (row stride ld, k contiguous); k-major [32 k][128] from k rows
// [k0, k_end) (row stride ld, the 128 contiguous from col0, valid below
// col_end). Chunks outside are zero-filled.
template <bool KMAJOR, class T>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t ld, int64_t row0,
                                          int64_t row_end, int k0, int k_end) {
#pragma unroll
  for (int i = 0; i < kTileElems / 8 / kThreads; ++i) {
    const int chunk = threadIdx.x + i * kThreads;
    int r, c;
    const T* src;
    bool ok;
    if constexpr (KMAJOR) {
      r = chunk / 16;  // k row
      c = chunk % 16;
      ok = k0 + r < k_end && row0 + c * 8 < row_end;
      src = base + (ok ? static_cast<int64_t>(k0 + r) * ld + row0 + c * 8 : 0);
    } else {
      r = chunk / 4;
      c = chunk % 4;
      ok = row0 + r < row_end && k0 + c * 8 < k_end;
      src = base + (ok ? (row0 + r) * ld + k0 + c * 8 : 0);
    }
    cp_async16(attn::smem_addr(tile + swz<KMAJOR>(r, c)), src, ok);
  }
}

template <class T, int MODE>
__global__ void __launch_bounds__(kThreads) grouped_gemm_tc_kernel(const GroupedArgs g) {
  constexpr bool kAKMajor = MODE == kDw;
  constexpr bool kBKMajor = MODE != kFwd;
  __shared__ alignas(128) T smem[kStages * 2 * kTileElems];
  Problem p;
  if (!find_problem<MODE, kBM, kBN, T>(g, p)) return;
  const bool add = MODE == kDw && g.accumulate;
  if (add && p.k_len == 0) return;  // an expert without rows adds nothing
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  T* C = static_cast<T*>(p.c);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp & 1) * 64, wn = (warp >> 1) * 32;
  float acc[4][4][4] = {};
  const int ktiles = (p.k_len + kBK - 1) / kBK;
  // A rows: kFwd / kDx the expert's rows [m0, m_end); kDw C rows are A's
  // contiguous columns. B rows: kFwd columns n (k contiguous); else B's k rows.
  auto load_stage = [&](int s, int kt) {
    T* as = smem + s * 2 * kTileElems;
    T* bs = as + kTileElems;
    const int k0 = kt * kBK;
    if constexpr (kAKMajor) {
      load_tile<true>(as, A, p.lda, p.m0, p.m_end, k0, p.k_len);
    } else {
      load_tile<false>(as, A, p.lda, p.m0, p.m_end, k0, p.k_len);
    }
    if constexpr (kBKMajor) {
      load_tile<true>(bs, B, p.ldb, p.n0, g.n, k0, p.k_len);
    } else {
      load_tile<false>(bs, B, p.ldb, p.n0, g.n, k0, p.k_len);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (kt + kStages - 1 < ktiles) load_stage((kt + kStages - 1) % kStages, kt + kStages - 1);
    cp_async_commit();
    const T* as = smem + (kt % kStages) * 2 * kTileElems;
    const T* bs = as + kTileElems;
    const int mat = lane >> 3, r8 = lane & 7;
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int m = wm + mi * 16;
        if constexpr (kAKMajor) {  // matrices (k, m): (0,0) (0,8) (8,0) (8,8)
          const int kr = ks + (mat >> 1) * 8 + r8, mc = (m + (mat & 1) * 8) >> 3;
          attn::ldsm_x4_trans(af[mi], attn::smem_addr(as + swz<true>(kr, mc)));
        } else {  // matrices (m, k): (0,0) (8,0) (0,8) (8,8)
          const int mr = m + (mat & 1) * 8 + r8, kc = (ks + (mat >> 1) * 8) >> 3;
          attn::ldsm_x4(af[mi], attn::smem_addr(as + swz<false>(mr, kc)));
        }
      }
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        const int n = wn + nj * 16;
        uint32_t r[4];
        if constexpr (kBKMajor) {  // matrices (k, n): (0,0) (8,0) (0,8) (8,8)
          const int kr = ks + (mat & 1) * 8 + r8, nc = (n + (mat >> 1) * 8) >> 3;
          attn::ldsm_x4_trans(r, attn::smem_addr(bs + swz<true>(kr, nc)));
        } else {  // matrices (n, k): (0,0) (0,8) (8,0) (8,8)
          const int nr = n + (mat >> 1) * 8 + r8, kc = (ks + (mat & 1) * 8) >> 3;
          attn::ldsm_x4(r, attn::smem_addr(bs + swz<false>(nr, kc)));
        }
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) attn::mma16816<T>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
  }
  cp_async_wait<0>();
  const int gr = lane >> 2, tc = (lane & 3) * 2;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t row = p.m0 + wm + mi * 16 + gr + half * 8;
      if (row >= p.m_end) continue;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int col = p.n0 + wn + ni * 8 + tc;
        if (col >= g.n) continue;
        T* c = C + row * p.ldc + col;
        float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if (add) {
          v0 += to_f<T>(c[0]);
          v1 += to_f<T>(c[1]);
        }
        store2(c, v0, v1);
      }
    }
  }
}

// ---- SIMT kernel (any float dtype, any shape) -----------------------------------------------
constexpr int kSBM = 64, kSBN = 64, kSBK = 16;

template <class T, int MODE>
__global__ void __launch_bounds__(256) grouped_gemm_simt_kernel(const GroupedArgs g) {
  __shared__ float as[kSBK][kSBM + 1], bs[kSBK][kSBN + 1];
  Problem p;
  if (!find_problem<MODE, kSBM, kSBN, T>(g, p)) return;
  const bool add = MODE == kDw && g.accumulate;
  if (add && p.k_len == 0) return;  // an expert without rows adds nothing
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  T* C = static_cast<T*>(p.c);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < p.k_len; k0 += kSBK) {
    for (int i = threadIdx.x; i < kSBK * kSBM; i += blockDim.x) {
      const int kk = i / kSBM, mm = i % kSBM;
      const int64_t m = p.m0 + mm;
      const int k = k0 + kk;
      float v = 0.f;
      if (m < p.m_end && k < p.k_len) {
        v = to_f<T>(MODE == kDw ? A[static_cast<int64_t>(k) * p.lda + m] : A[m * p.lda + k]);
      }
      as[kk][mm] = v;
      const int n = p.n0 + mm;
      float w = 0.f;
      if (n < g.n && k < p.k_len) {
        w = to_f<T>(MODE == kFwd ? B[static_cast<int64_t>(n) * p.ldb + k]
                                 : B[static_cast<int64_t>(k) * p.ldb + n]);
      }
      bs[kk][mm] = w;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = as[kk][ty * 4 + i];
        b[i] = bs[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = p.m0 + ty * 4 + i;
    if (row >= p.m_end) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = p.n0 + tx * 4 + j;
      if (col >= g.n) continue;
      T* c = C + row * p.ldc + col;
      *c = from_f<T>(add ? acc[i][j] + to_f<T>(*c) : acc[i][j]);
    }
  }
}

// Rows [offsets[E], m) of y[m, n] (the unused rows of a capacity-limited
// grouping) set to 0.
template <class T>
__global__ void zero_tail_rows_kernel(T* y, const int32_t* offsets, int experts, int64_t m,
                                      int n) {
  const int64_t first = static_cast<int64_t>(offsets[experts]) * n;
  for (int64_t i = first + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = from_f<T>(0.f);
  }
}

// Whether the tensor-core kernel takes these operands.
bool tc_ok(DType t, std::initializer_list<int64_t> contiguous_dims,
           std::initializer_list<const void*> ptrs) {
  if (t != DType::bf16 && t != DType::f16) return false;
  for (int64_t d : contiguous_dims)
    if (d % 8 != 0) return false;
  for (const void* q : ptrs)
    if (!aligned16(q)) return false;
  return true;
}

template <class T, int MODE>
void launch(const GroupedArgs& a, bool tc, dim3 grid_tc, dim3 grid_simt) {
  cudaStream_t s = ctx().stream;
  if constexpr (std::is_same_v<T, float>) {
    grouped_gemm_simt_kernel<T, MODE><<<grid_simt, 256, 0, s>>>(a);
  } else {
    if (tc) {
      grouped_gemm_tc_kernel<T, MODE><<<grid_tc, kThreads, 0, s>>>(a);
    } else {
      grouped_gemm_simt_kernel<T, MODE><<<grid_simt, 256, 0, s>>>(a);
    }
  }
}

// EL_MOE_GEMM (file header): whether to try the wgmma kernels, and their tile
// width (0: chosen per problem).
struct PathChoice {
  bool wgmma;
  int tile_n;
};
const PathChoice& path_choice() {
  static const PathChoice c = [] {
    const char* v = std::getenv("EL_MOE_GEMM");
    const std::string s = v != nullptr ? v : "";
    if (s.empty() || s == "wgmma") return PathChoice{true, 0};
    if (s == "wgmma128") return PathChoice{true, 128};
    if (s == "wgmma256") return PathChoice{true, 256};
    if (s == "mma") return PathChoice{false, 0};
    EL_CUDA_ENSURE(false, "EL_MOE_GEMM={}: expected wgmma, wgmma128, wgmma256 or mma", s);
    return PathChoice{false, 0};
  }();
  return c;
}

// The wgmma kernel for a problem the tensor-core path takes; false: not run.
bool try_wgmma(bool tc, MoeGemm mode, DType dt, const GroupedArgs& a, int64_t n, int64_t k) {
  if (!tc || !path_choice().wgmma) return false;
  const MoeGemmOperands op{mode, dt, a.a, a.b, a.c, a.offsets, a.experts, a.m, n, k, a.accumulate};
  return moe_gemm_wgmma(op, path_choice().tile_n);
}

// w in the activation dtype (a converted copy when the parameter is stored in another).
Tensor as_dtype(const Tensor& t, DType want) {
  if (t.dtype() == want) return t;
  Tensor c = Tensor::empty(t.shape(), want, t.device());
  copy(t, c);
  return c;
}

unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace

void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& offsets,
                  Tensor& y) {
  expect_cuda_float(x, "grouped_gemm (x)");
  expect_cuda_float(w, "grouped_gemm (w)");
  expect_cuda_dtype(y, x.dtype(), "grouped_gemm (y)");
  expect_cuda_dtype(offsets, DType::i32, "grouped_gemm (offsets)");
  const int64_t m = x.dim(0), k = x.dim(1), n = y.dim(1), e = w.dim(0);
  EL_CUDA_ENSURE(e + 1 == offsets.numel() && w.numel() == e * n * k && y.dim(0) == m,
                 "cuda grouped_gemm: x [{}, {}], w {}, y {}, {} offsets", m, k,
                 shape_str(w.shape()), shape_str(y.shape()), offsets.numel());
  EL_CUDA_ENSURE(n < (int64_t{1} << 31) && k < (int64_t{1} << 31) && m < (int64_t{1} << 31),
                 "cuda grouped_gemm: sizes beyond 2^31");
  const Tensor wt = as_dtype(w, x.dtype());
  const GroupedArgs a{x.raw(), wt.raw(), y.raw(), offsets.data<int32_t>(), static_cast<int>(e), m,
                      static_cast<int>(n), static_cast<int>(k)};
  // kFwd: x and w are k-contiguous; kDx: x k-contiguous, w n-contiguous; y n-contiguous.
  const bool tc = tc_ok(x.dtype(), {k, n}, {x.raw(), wt.raw(), y.raw()});
  const dim3 grid_tc(ceil_div(m, kBM) + static_cast<unsigned>(e), ceil_div(n, kBN));
  const dim3 grid_simt(ceil_div(m, kSBM) + static_cast<unsigned>(e), ceil_div(n, kSBN));
  const bool wg = try_wgmma(tc, trans_w ? MoeGemm::fwd : MoeGemm::dx, x.dtype(), a, n, k);
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    if (!wg && trans_w) launch<T, kFwd>(a, tc, grid_tc, grid_simt);
    if (!wg && !trans_w) launch<T, kDx>(a, tc, grid_tc, grid_simt);
    EL_CUDA_CHECK_LAUNCH("grouped_gemm_kernel");
    // Usually nothing to do (a dropless grouping uses every row): a grid of one
    // block per SM, not one sized for all m n elements, keeps that cheap. (The
    // wgmma kernel zeroes them itself.)
    if (!wg) {
      zero_tail_rows_kernel<T><<<std::min(grid_for(m * n, 256), ctx().sm_count), 256, 0,
                                 ctx().stream>>>(
          y.data<T>(), offsets.data<int32_t>(), static_cast<int>(e), m, static_cast<int>(n));
    }
  });
  EL_CUDA_CHECK_LAUNCH("zero_tail_rows_kernel");
}

void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets, Tensor& dw,
                     bool accumulate) {
  expect_cuda_float(dy, "grouped_gemm_dw (dy)");
  expect_cuda_dtype(x, dy.dtype(), "grouped_gemm_dw (x)");
  expect_cuda_float(dw, "grouped_gemm_dw (dw)");
  expect_cuda_dtype(offsets, DType::i32, "grouped_gemm_dw (offsets)");
  const int64_t m = dy.dim(0), o = dy.dim(1), k = x.dim(1), e = dw.dim(0);
  EL_CUDA_ENSURE(x.dim(0) == m && dw.numel() == e * o * k && e + 1 == offsets.numel() && e <= 65535,
                 "cuda grouped_gemm_dw: dy {}, x {}, dw {}, {} offsets", shape_str(dy.shape()),
                 shape_str(x.shape()), shape_str(dw.shape()), offsets.numel());
  // Computed in the activation dtype, then converted when the parameter has
  // another (and then, accumulating, added: the product rounded to the
  // activation dtype first, as without accumulate).
  const bool direct = dw.dtype() == dy.dtype();
  Tensor out = direct ? dw : Tensor::empty(dw.shape(), dy.dtype(), dw.device());
  const GroupedArgs a{dy.raw(), x.raw(), out.raw(), offsets.data<int32_t>(), static_cast<int>(e),
                      m, static_cast<int>(k), static_cast<int>(o), accumulate && direct};
  // dy is o-contiguous (A's m), x k-contiguous (B's n), dw k-contiguous.
  const bool tc = tc_ok(dy.dtype(), {o, k}, {dy.raw(), x.raw(), out.raw()});
  const dim3 grid_tc(ceil_div(o, kBM), ceil_div(k, kBN), static_cast<unsigned>(e));
  const dim3 grid_simt(ceil_div(o, kSBM), ceil_div(k, kSBN), static_cast<unsigned>(e));
  if (!try_wgmma(tc, MoeGemm::dw, dy.dtype(), a, k, o)) {
    EL_DISPATCH_FLOAT(dy.dtype(), T, { launch<T, kDw>(a, tc, grid_tc, grid_simt); });
  }
  EL_CUDA_CHECK_LAUNCH("grouped_gemm_dw_kernel");
  if (direct) return;
  if (!accumulate) {
    copy(out, dw);
    return;
  }
  Tensor wide = Tensor::empty(dw.shape(), dw.dtype(), dw.device());
  copy(out, wide);
  axpy(1.f, wide, dw);
}

}  // namespace el::cuda
