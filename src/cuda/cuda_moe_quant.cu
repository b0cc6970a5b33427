// cuda_moe_quant.cu — the weight-only int4/int8 grouped GEMM of quantized
// MoE experts (ops::grouped_quant_linear; contract in ops/backend.h,
// grouped_quant_matmul). w is the E experts' [N, K] weights stacked as one
// QuantizedWeight [E N, K] (ops/quant_layout.h); the per-expert row offsets
// stay on the device: no path copies the counts to the host.
//
// Few rows (M <= kDirectMaxRows, a decode step): one launch, grid (N tiles,
// E + 1). Block (tile, e) reads offsets[e], offsets[e + 1] and exits at once
// when expert e received no row, so a decode step reads only the weights of
// the experts its tokens were routed to (k per token); otherwise each warp
// streams one weight row of expert e (4-byte words, dequantised in registers
// to f32) against up to kTokens of the expert's x rows at a time, f32
// accumulators, one warp reduction per token. The extra blocks of y = E zero
// the unused rows [offsets[E], M). SIMT, no tensor cores: at decode the
// weight stream is the cost, not the FMAs.
//
// Many rows (prefill): the routed experts are dequantised into a scratch
// [E, N, K] in x's dtype (blocks of empty experts exit; their scratch is left
// unwritten and never read, as grouped_gemm reads only experts with rows),
// then the dense grouped GEMM (cuda_moe_gemm.cu) runs on it. Cost: E N K
// elements of transient memory (2 bytes each for bf16/f16, the dense
// experts' size) and one write + one read of the dense weights per call,
// amortised over the M rows; a fused tensor-core kernel dequantising its
// tiles in shared memory would save both (not done).
#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kWarps = 8;             // warps per block, one weight row each
constexpr int kTokens = 8;            // x rows per pass over a weight row
constexpr int64_t kDirectMaxRows = 64;  // M up to which the direct kernel runs

struct GqArgs {
  const void* x;           // [M, K] T
  const uint8_t* qw;       // [E N, row_bytes]
  const uint16_t* scales;  // [E N, groups] f16 bits
  const uint8_t* zeros;    // [E N, groups] or nullptr (symmetric)
  const int32_t* offsets;  // [E + 1]
  void* y;                 // [M, N] T
  int m, n, k, e;
  int group_size, groups, row_bytes, sym_zero;
};

__device__ __forceinline__ float scale_of(const GqArgs& a, int64_t grow, int k, int& zero) {
  const int64_t gi = grow * a.groups + k / a.group_size;
  zero = a.zeros ? static_cast<int>(a.zeros[gi]) : a.sym_zero;
  return __half2float(__ushort_as_half(a.scales[gi]));
}

// The code of weight k in a row (quant_layout.h packing).
template <int BITS>
__device__ __forceinline__ int code_at(const uint8_t* row, int k) {
  if constexpr (BITS == 8) {
    return row[k];
  } else {
    const uint8_t b = row[k >> 1];
    return (k & 1) ? (b >> 4) : (b & 0xF);
  }
}

// WORD: each lane loads 4-byte words of the row (row_bytes % 4 == 0) or single
// bytes (any shape).
template <class T, int BITS, bool WORD>
__global__ void __launch_bounds__(kWarps * 32) grouped_quant_direct_kernel(GqArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n = blockIdx.x * kWarps + warp;
  T* y = static_cast<T*>(a.y);
  if (blockIdx.y == static_cast<unsigned>(a.e)) {  // zero the unused rows of this column tile
    const int r0 = a.offsets[a.e];
    if (n >= a.n) return;
    for (int r = r0 + lane; r < a.m; r += 32) y[static_cast<int64_t>(r) * a.n + n] = from_f<T>(0.f);
    return;
  }
  const int e = blockIdx.y;
  const int r0 = a.offsets[e], r1 = a.offsets[e + 1];
  if (r0 >= r1 || n >= a.n) return;  // an expert without rows reads no weight
  const int64_t grow = static_cast<int64_t>(e) * a.n + n;
  const uint8_t* row = a.qw + grow * a.row_bytes;
  const T* x = static_cast<const T*>(a.x);
  constexpr int kPerByte = 8 / BITS;
  constexpr int kBytes = WORD ? 4 : 1;
  constexpr int kPerLoad = kBytes * kPerByte;
  for (int t0 = r0; t0 < r1; t0 += kTokens) {
    const int nt = min(kTokens, r1 - t0);
    float acc[kTokens];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[t] = 0.f;
    for (int b = lane * kBytes; b < a.row_bytes; b += 32 * kBytes) {
      uint8_t bytes[kBytes];
      if constexpr (WORD) {
        const uint32_t wv = __ldg(reinterpret_cast<const uint32_t*>(row + b));
#pragma unroll
        for (int i = 0; i < 4; ++i) bytes[i] = static_cast<uint8_t>(wv >> (8 * i));
      } else {
        bytes[0] = __ldg(row + b);
      }
      const int k0 = b * kPerByte;
      float wf[kPerLoad];
      // One scale per load when the load stays inside one group.
      const bool one_group = (a.group_size % kPerLoad) == 0;
      int z = 0;
      float s = one_group ? scale_of(a, grow, k0, z) : 0.f;
#pragma unroll
      for (int i = 0; i < kPerLoad; ++i) {
        const int q = BITS == 8 ? bytes[i] : ((i & 1) ? (bytes[i >> 1] >> 4) : (bytes[i >> 1] & 0xF));
        if (!one_group) s = scale_of(a, grow, k0 + i, z);
        wf[i] = static_cast<float>(q - z) * s;
      }
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < nt) {
          const T* xr = x + static_cast<int64_t>(t0 + t) * a.k + k0;
#pragma unroll
          for (int i = 0; i < kPerLoad; ++i) acc[t] += wf[i] * to_f<T>(xr[i]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < nt) {
        const float v = warp_reduce(acc[t], SumOp{});
        if (lane == 0) y[static_cast<int64_t>(t0 + t) * a.n + n] = from_f<T>(v);
      }
    }
  }
}

// scratch[e, n, k] = dequant(w)[e N + n, k] for experts with rows; grid
// (row tiles, E), one warp per row.
template <class T, int BITS>
__global__ void __launch_bounds__(kWarps * 32) dequant_routed_kernel(GqArgs a, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.y, n = blockIdx.x * kWarps + warp;
  if (a.offsets[e] >= a.offsets[e + 1] || n >= a.n) return;
  const int64_t grow = static_cast<int64_t>(e) * a.n + n;
  const uint8_t* row = a.qw + grow * a.row_bytes;
  T* out = scratch + grow * a.k;
  for (int k = lane; k < a.k; k += 32) {
    int z = 0;
    const float s = scale_of(a, grow, k, z);
    out[k] = from_f<T>(static_cast<float>(code_at<BITS>(row, k) - z) * s);
  }
}

unsigned tiles(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace

void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets, Tensor& y) {
  expect_cuda_float(x, "grouped_quant_matmul (x)");
  expect_cuda_dtype(y, x.dtype(), "grouped_quant_matmul (y)");
  expect_cuda_dtype(offsets, DType::i32, "grouped_quant_matmul (offsets)");
  expect_cuda_dtype(w.qweight, DType::u8, "grouped_quant_matmul (qweight)");
  const int64_t e = offsets.numel() - 1, m = x.dim(0), k = x.dim(1), n = y.dim(1);
  EL_CUDA_ENSURE(e >= 1 && e < 65535 && w.out_features == e * n && w.in_features == k && y.dim(0) == m &&
                     w.out_features * w.in_features < (int64_t{1} << 40) && m < (int64_t{1} << 31),
                 "cuda grouped_quant_matmul: x [{}, {}], w [{}, {}], y {}, {} experts", m, k, w.out_features,
                 w.in_features, shape_str(y.shape()), e);
  const GqArgs a{x.raw(),
                 w.qweight.data<uint8_t>(),
                 static_cast<const uint16_t*>(w.scales.raw()),
                 w.zeros.defined() ? w.zeros.data<uint8_t>() : nullptr,
                 offsets.data<int32_t>(),
                 y.raw(),
                 static_cast<int>(m),
                 static_cast<int>(n),
                 static_cast<int>(k),
                 static_cast<int>(e),
                 static_cast<int>(w.group_size),
                 static_cast<int>(w.groups_per_row()),
                 static_cast<int>(k * w.bits / 8),
                 w.symmetric_zero()};
  const cudaStream_t stream = ctx().stream;
  if (m <= kDirectMaxRows) {
    const bool word = a.row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(a.qw) % 4 == 0;
    const dim3 grid(tiles(n, kWarps), static_cast<unsigned>(e + 1));
    EL_DISPATCH_FLOAT(x.dtype(), T, {
      if (w.bits == 4 && word) grouped_quant_direct_kernel<T, 4, true><<<grid, kWarps * 32, 0, stream>>>(a);
      if (w.bits == 4 && !word) grouped_quant_direct_kernel<T, 4, false><<<grid, kWarps * 32, 0, stream>>>(a);
      if (w.bits == 8 && word) grouped_quant_direct_kernel<T, 8, true><<<grid, kWarps * 32, 0, stream>>>(a);
      if (w.bits == 8 && !word) grouped_quant_direct_kernel<T, 8, false><<<grid, kWarps * 32, 0, stream>>>(a);
    });
    EL_CUDA_CHECK_LAUNCH("grouped_quant_direct_kernel");
    return;
  }
  Tensor scratch = Tensor::empty({e, n, k}, x.dtype(), x.device());
  const dim3 grid(tiles(n, kWarps), static_cast<unsigned>(e));
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    if (w.bits == 4) dequant_routed_kernel<T, 4><<<grid, kWarps * 32, 0, stream>>>(a, static_cast<T*>(scratch.raw()));
    if (w.bits == 8) dequant_routed_kernel<T, 8><<<grid, kWarps * 32, 0, stream>>>(a, static_cast<T*>(scratch.raw()));
  });
  EL_CUDA_CHECK_LAUNCH("dequant_routed_kernel");
  grouped_gemm(x, scratch, /*trans_w=*/true, offsets, y);
}

}  // namespace el::cuda
