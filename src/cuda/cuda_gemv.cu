// cuda_gemv.cu — dense bf16/f16 GEMV for small M (cuda_gemv.h):
// y[M, N] = alpha x[M, K] @ W[N, K]^T + beta y.
//
// Decode is bandwidth-bound: every weight byte is read once per step, so the
// kernel's only job is to keep enough bytes in flight. One warp per weight
// row; lane l reads the 16-byte vectors l, l + 32, ... of the row, U = 8 of
// them issued before any is used (a K = 2048 bf16 row, 256 vectors, is one
// batch: 128 bytes per lane in flight). (U = 24, one batch for the K = 5632
// rows of down, measured no faster on the H100: the row's L2 prefetch
// already covers the later batches.) With N >= 2048 rows that is >= 15
// warps x 4 KiB per SM, several times what the HBM latency-bandwidth product
// needs. Weights bypass L1 (read once); x (M x K, <= 88 KiB) stays in L1 and
// L2 and is re-read by every warp at the same k's.
// Each lane accumulates its k's in f32 for the MT tokens of the launch, then
// a butterfly shuffle sums the 32 lanes in a fixed order (the result does not
// depend on timing). Small blocks (4 warps) so that N = 2048 rows give 512
// blocks that spread evenly over the SMs.
// Launched with programmatic dependent launch (cuda_common.cuh): each warp
// starts its row's L2 prefetch before waiting for the kernel that writes x,
// which hides the step's small kernels behind weight traffic.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_context.h"
#include "cuda/cuda_gemv.h"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxGridY = 65535;

// 16 bytes read once: no L1 allocation.
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}


template <class T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const float2 a = unpack2<T>(v.x), b = unpack2<T>(v.y), c = unpack2<T>(v.z),
               d = unpack2<T>(v.w);
  f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
  f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

// Block: rows [kWarps blockIdx.x, +kWarps) (a warp each), tokens [MT blockIdx.y, +MT).
// x [m, k], w [n, k], y [m, n]; k % 8 == 0 and 16-byte aligned x and w.
// U: 16-byte weight loads per lane per pass (U x 32 vectors of the row).
template <class T, class TO, int MT, int U>
__global__ void __launch_bounds__(kThreads) dense_gemv_kernel(const T* __restrict__ x,
                                                              const T* __restrict__ w,
                                                              TO* __restrict__ y, int m, int n,
                                                              int k, float alpha, float beta) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + warp;
  const int kv = k >> 3;  // 16-byte vectors per row
  const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(row) * k);
  // The row's bytes start towards L2 while the kernel before this one (norm,
  // activation) still runs; the loads below then mostly hit L2.
  if (lane == 0 && row < n && blockIdx.y == 0) prefetch_l2(wr, static_cast<uint32_t>(k) * sizeof(T));
  pdl_wait();
  pdl_trigger();
  if (row >= n) return;  // no barrier below
  const int tok0 = blockIdx.y * MT;
  const int mt = min(MT, m - tok0);
  const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(tok0) * k);

  float acc[MT];
#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t] = 0.f;

  for (int v0 = 0; v0 < kv; v0 += 32 * U) {
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * 32 + lane;
      wv[u] = v < kv ? ld_stream(wr + v) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int v = v0 + u * 32 + lane;
      if (v < kv) {
        float wf[8];
        unpack8<T>(wv[u], wf);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          if (t < mt) {
            float xf[8];
            unpack8<T>(__ldg(xr + static_cast<int64_t>(t) * kv + v), xf);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[t] = fmaf(xf[e], wf[e], acc[t]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t] = warp_sum(acc[t]);  // every lane gets every sum
  // Lane t writes token t (the sums are in registers indexed at compile time).
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    if (lane == t && t < mt) {
      TO* out = y + static_cast<int64_t>(tok0 + t) * n + row;
      float r = alpha * acc[t];
      if (beta != 0.f) r = fmaf(beta, to_f<TO>(*out), r);
      *out = from_f<TO>(r);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class T, class TO, int MT, int U>
void launch(const Tensor& x, const Tensor& w, Tensor& y, int64_t m, int64_t n, int64_t k,
            float alpha, float beta) {
  const cudaStream_t s = ctx().stream;
  const int64_t per = int64_t{kMaxGridY} * MT;
  for (int64_t m0 = 0; m0 < m; m0 += per) {  // grid.y holds at most 65535 token tiles
    const int64_t mc = std::min(per, m - m0);
    const dim3 grid(static_cast<unsigned>(ceil_div(n, kWarps)),
                    static_cast<unsigned>(ceil_div(mc, MT)));
    launch_kernel(dense_gemv_kernel<T, TO, MT, U>, grid, kThreads, 0, s, x.data<T>() + m0 * k,
                  w.data<T>(), y.data<TO>() + m0 * n, static_cast<int>(mc), static_cast<int>(n),
                  static_cast<int>(k), alpha, beta);
    EL_CUDA_CHECK_LAUNCH("dense_gemv_kernel");
  }
}

template <class T, class TO>
void launch_for_m(const Tensor& x, const Tensor& w, Tensor& y, int64_t m, int64_t n, int64_t k,
                  float alpha, float beta) {
  if (m == 1) {
    launch<T, TO, 1, 8>(x, w, y, m, n, k, alpha, beta);
  } else if (m == 2) {
    launch<T, TO, 2, 8>(x, w, y, m, n, k, alpha, beta);
  } else if (m <= 4) {
    launch<T, TO, 4, 8>(x, w, y, m, n, k, alpha, beta);
  } else {
    launch<T, TO, 8, 8>(x, w, y, m, n, k, alpha, beta);
  }
}

bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }

// The layout checks shared by dense_gemv_takes() and dense_gemv(); M unchecked.
bool layout_ok(const Tensor& x, const Tensor& w, const Tensor& y) {
  if (x.ndim() != 2 || w.ndim() != 2 || y.ndim() != 2) return false;
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  return is_half(x.dtype()) && w.dtype() == x.dtype() &&
         (y.dtype() == x.dtype() || y.dtype() == DType::f32) && w.dim(1) == k &&
         y.dim(0) == m && y.dim(1) == n && k % 8 == 0 && x.is_contiguous() &&
         w.is_contiguous() && y.is_contiguous() && aligned16(x.raw()) && aligned16(w.raw()) &&
         n < (int64_t{1} << 31) - kWarps && k < (int64_t{1} << 31) && m < (int64_t{1} << 31);
}

}  // namespace

int dense_gemv_max_m() {
  static const int v = [] {
    const char* e = std::getenv("EL_DENSE_GEMV_MAX_M");
    // Measured on the H100 (cuda_quant_bench, 1.1B shapes): at M = 1 the GEMV
    // reads the weights at 61% of HBM over a whole decode step against
    // cuBLASLt's 51%; at M = 8 it is compute-bound and half cuBLASLt's speed.
    if (e == nullptr || *e == '\0') return 1;
    const int x = std::atoi(e);
    return x < 0 ? 0 : x;
  }();
  return v;
}

bool dense_gemv_takes(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                      const Tensor& c) {
  if (trans_a || !trans_b || a.ndim() != 2) return false;
  const int64_t m = a.dim(0);
  return m >= 1 && m <= dense_gemv_max_m() && layout_ok(a, b, c);
}

void dense_gemv(const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) {
  expect_cuda_float(x, "dense_gemv (x)");
  expect_cuda_float(w, "dense_gemv (w)");
  expect_cuda_float(y, "dense_gemv (y)");
  EL_CUDA_ENSURE(layout_ok(x, w, y),
                 "cuda dense_gemv: expected contiguous x [M, K] and w [N, K] of one dtype "
                 "(bf16/f16), y [M, N] of that dtype or f32, K % 8 == 0, 16-byte aligned x and "
                 "w; got x {} {}, w {} {}, y {} {}",
                 shape_str(x.shape()), dtype_name(x.dtype()), shape_str(w.shape()),
                 dtype_name(w.dtype()), shape_str(y.shape()), dtype_name(y.dtype()));
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // y = beta y (an empty dot product)
    if (beta == 0.f) {
      fill(y, 0.f);
    } else {
      scale(y, beta);
    }
    return;
  }
  const bool f32_out = y.dtype() == DType::f32;
  if (x.dtype() == DType::bf16) {
    f32_out ? launch_for_m<__nv_bfloat16, float>(x, w, y, m, n, k, alpha, beta)
            : launch_for_m<__nv_bfloat16, __nv_bfloat16>(x, w, y, m, n, k, alpha, beta);
  } else {
    f32_out ? launch_for_m<__half, float>(x, w, y, m, n, k, alpha, beta)
            : launch_for_m<__half, __half>(x, w, y, m, n, k, alpha, beta);
  }
}

}  // namespace el::cuda
