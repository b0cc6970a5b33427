// cuda_nsa_gate.cu — NSA's gated sum of the three branches on the CUDA
// backend (Backend::nsa_gate_combine_forward / _backward, contracts in
// ops/backend.h "NSA"): out = sum_c sigmoid(g_c) o_c per (row, head), and its
// backward. Split from cuda_nsa.cu (the attention branches and the block
// selection) to keep each file to one job.
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

// out[r, :] = sum_c sigmoid(g[3r + c]) o_c[r, :]; rows = B T H.
template <class T>
__global__ void gate_forward_kernel(const T* __restrict__ g, const T* __restrict__ a,
                                    const T* __restrict__ s, const T* __restrict__ w,
                                    T* __restrict__ out, long long n, int d) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / d;
    const float x = sigmoid(to_f(g[3 * r])) * to_f(a[i]) + sigmoid(to_f(g[3 * r + 1])) * to_f(s[i]) +
                    sigmoid(to_f(g[3 * r + 2])) * to_f(w[i]);
    out[i] = from_f<T>(x);
  }
}

// One warp per row r: dgates[3r + c] = sig' * dot(dout, o_c), do_c = sig * dout.
template <class T>
__global__ void __launch_bounds__(128) gate_backward_kernel(
    const T* __restrict__ dout, const T* __restrict__ g, const T* __restrict__ oa,
    const T* __restrict__ os, const T* __restrict__ ow, T* __restrict__ dg, T* __restrict__ da,
    T* __restrict__ ds, T* __restrict__ dw, long long rows, int d) {
  const long long r = blockIdx.x * 4ll + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const T* br[3] = {oa, os, ow};
  T* dbr[3] = {da, ds, dw};
  const long long o = r * d;
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const float sg = sigmoid(to_f(g[3 * r + c]));
    float dot = 0.f;
    for (int e = lane; e < d; e += 32) {
      const float gd = to_f(dout[o + e]);
      dot = fmaf(gd, to_f(br[c][o + e]), dot);
      dbr[c][o + e] = from_f<T>(sg * gd);
    }
    dot = warp_sum(dot);
    if (lane == 0) dg[3 * r + c] = from_f<T>(sg * (1.f - sg) * dot);
  }
}

// The same two kernels 8 elements (16 bytes) at a time, for d % 8 == 0 with
// lanes_per_row = d / 8 a power of two <= 32 and 16-byte aligned tensors:
// the scalar forms above load 2 bytes a thread and divide per element, at
// about half the bandwidth these reach (0.11 + 0.13 ms at 16K tokens, 14
// heads of 64, against ~30 + 60 us of bytes).
template <class T>
__global__ void gate_forward_vec_kernel(const T* __restrict__ g, const T* __restrict__ a,
                                        const T* __restrict__ s, const T* __restrict__ w,
                                        T* __restrict__ out, long long n8, int d8) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n8;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / d8;
    const float g0 = sigmoid(to_f(g[3 * r])), g1 = sigmoid(to_f(g[3 * r + 1])),
                g2 = sigmoid(to_f(g[3 * r + 2]));
    const Pack<T, 8> pa = reinterpret_cast<const Pack<T, 8>*>(a)[i];
    const Pack<T, 8> ps = reinterpret_cast<const Pack<T, 8>*>(s)[i];
    const Pack<T, 8> pw = reinterpret_cast<const Pack<T, 8>*>(w)[i];
    Pack<T, 8> po;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      po.v[e] = from_f<T>(g0 * to_f(pa.v[e]) + g1 * to_f(ps.v[e]) + g2 * to_f(pw.v[e]));
    }
    reinterpret_cast<Pack<T, 8>*>(out)[i] = po;
  }
}

// kLanes lanes per row (d = 8 kLanes), 32 / kLanes rows per warp.
template <class T, int kLanes>
__global__ void __launch_bounds__(128) gate_backward_vec_kernel(
    const T* __restrict__ dout, const T* __restrict__ g, const T* __restrict__ oa,
    const T* __restrict__ os, const T* __restrict__ ow, T* __restrict__ dg, T* __restrict__ da,
    T* __restrict__ ds, T* __restrict__ dw, long long rows) {
  const long long gi = blockIdx.x * 128ll + threadIdx.x;
  const long long r = gi / kLanes;
  const int sub = static_cast<int>(gi % kLanes);
  const bool ok = r < rows;  // (no early return: the shuffles below take the whole warp)
  const long long i = r * kLanes + sub;  // this lane's 8-element pack
  const T* br[3] = {oa, os, ow};
  T* dbr[3] = {da, ds, dw};
  Pack<T, 8> gd;
  if (ok) gd = reinterpret_cast<const Pack<T, 8>*>(dout)[i];
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const float sg = ok ? sigmoid(to_f(g[3 * r + c])) : 0.f;
    float dot = 0.f;
    if (ok) {
      const Pack<T, 8> ob = reinterpret_cast<const Pack<T, 8>*>(br[c])[i];
      Pack<T, 8> db;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float x = to_f(gd.v[e]);
        dot = fmaf(x, to_f(ob.v[e]), dot);
        db.v[e] = from_f<T>(sg * x);
      }
      reinterpret_cast<Pack<T, 8>*>(dbr[c])[i] = db;
    }
#pragma unroll
    for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (ok && sub == 0) dg[3 * r + c] = from_f<T>(sg * (1.f - sg) * dot);
  }
}

// ---- host side ----------------------------------------------------------------------

bool aligned16_all(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    if (!aligned16(t->raw())) return false;
  }
  return true;
}

void check_launch(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    throw Exception(cuda_error(rc, what, __FILE__, __LINE__));
  }
}

}  // namespace

void nsa_gate_combine_forward(const Tensor& gates, const Tensor& o_cmp, const Tensor& o_slc,
                              const Tensor& o_win, Tensor& out) {
  const char* what = "cuda nsa_gate_combine_forward";
  for (const Tensor* t : TensorPtrs{&gates, &o_cmp, &o_slc, &o_win, &out})
    expect_cuda_dtype(*t, o_cmp.dtype(), what);
  EL_CUDA_ENSURE(o_cmp.ndim() == 4 && gates.numel() * o_cmp.dim(3) == 3 * o_cmp.numel(),
                 "{}: gates {} and branches {} (expected [B,T,3H] and [B,T,H,D])", what,
                 shape_str(gates.shape()), shape_str(o_cmp.shape()));
  const long long n = o_cmp.numel();
  if (n == 0) return;
  const int d = static_cast<int>(o_cmp.dim(3));
  const cudaStream_t stream = ctx().stream;
  if (dtype_size(o_cmp.dtype()) == 2 && d % 8 == 0 &&
      aligned16_all({&o_cmp, &o_slc, &o_win, &out})) {
    EL_DISPATCH_FLOAT(o_cmp.dtype(), T,
                      (gate_forward_vec_kernel<T><<<grid_for(n / 8, 256), 256, 0, stream>>>(
                          gates.data<T>(), o_cmp.data<T>(), o_slc.data<T>(), o_win.data<T>(),
                          out.data<T>(), n / 8, d / 8)));
    check_launch(cudaGetLastError(), what);
    return;
  }
  EL_DISPATCH_FLOAT(o_cmp.dtype(), T,
                    (gate_forward_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(
                        gates.data<T>(), o_cmp.data<T>(), o_slc.data<T>(), o_win.data<T>(),
                        out.data<T>(), n, d)));
  check_launch(cudaGetLastError(), what);
}

void nsa_gate_combine_backward(const Tensor& dout, const Tensor& gates, const Tensor& o_cmp,
                               const Tensor& o_slc, const Tensor& o_win, Tensor& dgates,
                               Tensor& do_cmp, Tensor& do_slc, Tensor& do_win) {
  const char* what = "cuda nsa_gate_combine_backward";
  for (const Tensor* t :
       TensorPtrs{&dout, &gates, &o_cmp, &o_slc, &o_win, &dgates, &do_cmp, &do_slc, &do_win})
    expect_cuda_dtype(*t, o_cmp.dtype(), what);
  EL_CUDA_ENSURE(o_cmp.ndim() == 4 && gates.numel() * o_cmp.dim(3) == 3 * o_cmp.numel(),
                 "{}: gates {} and branches {} (expected [B,T,3H] and [B,T,H,D])", what,
                 shape_str(gates.shape()), shape_str(o_cmp.shape()));
  const int d = static_cast<int>(o_cmp.dim(3));
  const long long rows = o_cmp.numel() / std::max(d, 1);
  if (rows == 0) return;
  const cudaStream_t stream = ctx().stream;
  if (dtype_size(o_cmp.dtype()) == 2 && (d == 8 || d == 16 || d == 32 || d == 64 || d == 128 ||
                                         d == 256) &&
      aligned16_all({&dout, &o_cmp, &o_slc, &o_win, &do_cmp, &do_slc, &do_win})) {
    const long long threads = rows * (d / 8);
    const unsigned vgrid = static_cast<unsigned>((threads + 127) / 128);
    EL_DISPATCH_FLOAT(o_cmp.dtype(), T, ({
      auto launch = [&](auto lanes) {
        gate_backward_vec_kernel<T, decltype(lanes)::value><<<vgrid, 128, 0, stream>>>(
            dout.data<T>(), gates.data<T>(), o_cmp.data<T>(), o_slc.data<T>(), o_win.data<T>(),
            dgates.data<T>(), do_cmp.data<T>(), do_slc.data<T>(), do_win.data<T>(), rows);
      };
      switch (d / 8) {
        case 1: launch(std::integral_constant<int, 1>{}); break;
        case 2: launch(std::integral_constant<int, 2>{}); break;
        case 4: launch(std::integral_constant<int, 4>{}); break;
        case 8: launch(std::integral_constant<int, 8>{}); break;
        case 16: launch(std::integral_constant<int, 16>{}); break;
        default: launch(std::integral_constant<int, 32>{}); break;
      }
    }));
    check_launch(cudaGetLastError(), what);
    return;
  }
  const unsigned grid = static_cast<unsigned>((rows + 3) / 4);
  EL_DISPATCH_FLOAT(o_cmp.dtype(), T,
                    (gate_backward_kernel<T><<<grid, 128, 0, stream>>>(
                        dout.data<T>(), gates.data<T>(), o_cmp.data<T>(), o_slc.data<T>(),
                        o_win.data<T>(), dgates.data<T>(), do_cmp.data<T>(), do_slc.data<T>(),
                        do_win.data<T>(), rows, d)));
  check_launch(cudaGetLastError(), what);
}

}  // namespace el::cuda
