// cuda_quant_gemv.cu — weight-only int4/int8 matmul (ops/quant_layout.h):
// the decode GEMVs and the dispatcher behind cuda::quant_matmul.
//
// Paths (QuantPath, cuda_kernels.h):
//  * gemv (tensor cores, bf16/f16, M <= kGemvMaxM): one block of 8 warps per
//    16 weight rows and up to 8 CT tokens; the warps split K (a k-block of
//    4 x 16 weight bytes per row at a time, the weights of U k-blocks loaded
//    before any is used so each lane has 2U 16-byte weight loads in flight;
//    x is loaded per k-block, from L1/L2) and add their partial sums through
//    shared memory in a fixed order. U grows with K at M <= 8 (2, 4 or 8:
//    gemv_tc_for_m). Every weight byte is read once for all the tokens of
//    the block; the mma pads M to 8.
//    Weights bypass L1 (read once); x stays in L1 for the other blocks of
//    the SM. Layout of the fragments: cuda_quant.cuh.
//  * gemm (tensor cores, larger M): cuda_quant_gemm.cu.
//  * simt (f32 activations, or shapes the tensor-core paths do not take:
//    K or the group size not a multiple of the 16-byte chunk, unaligned
//    pointers): one warp per weight row, lanes over K, up to 8 tokens per
//    warp (more tokens: more blocks along y), f32 FMAs, warp shuffles.
//    8 k's per lane step when K and the group size are multiples of 8, one
//    otherwise (any shape, e.g. K 90 with groups of 45).
// Every path computes W = (q - z) s per element and accumulates x W in f32;
// bias is added in f32 before the one rounding to the output dtype.
// The GEMVs use programmatic dependent launch (cuda_common.cuh): the weight
// rows start towards L2 before the kernel waits for the one that writes x.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_quant.cuh"

namespace el::cuda {

using quant::Layout;
using quant::QArgs;
using quant::QScale;

namespace {

constexpr int kThreads = 256;  // 8 warps for every kernel here
constexpr int kWarps = kThreads / 32;
constexpr int kGemvMaxM = 32;   // auto: tensor-core GEMV up to this many tokens
constexpr int kMaxGridY = 65535;

// ---- tensor-core GEMV -------------------------------------------------------------------

// Block: rows [16 blockIdx.x, +16), tokens [8 CT blockIdx.y, +8 CT), all K.
// U = 8 (long rows) needs more than the 128 registers of 2 blocks per SM;
// its shapes (K > 4096 int4) have few rows, so one block per SM suffices.
template <class T, int BITS, int CT, int U>
__global__ void __launch_bounds__(kThreads, U >= 8 ? 1 : 2) quant_gemv_tc_kernel(const QArgs a) {
  constexpr int KC = Layout<BITS>::KC, XU = Layout<BITS>::XU;
  __shared__ float red[kWarps][CT * 4][32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row_lo = blockIdx.x * 16 + g, row_hi = row_lo + 8;
  const int tok0 = blockIdx.y * 8 * CT;
  const int nchunks = a.k / KC, nkb = (nchunks + 3) >> 2;
  const T* x = static_cast<const T*>(a.x);
  if (threadIdx.x == 0 && blockIdx.y == 0) {  // the block's 16 rows and their scales
    const int64_t r0 = int64_t{blockIdx.x} * 16, rows = min(16, a.n - static_cast<int>(r0));
    prefetch_l2_span(a.qw + r0 * a.row_bytes, rows * a.row_bytes);
    prefetch_l2_span(a.scales + r0 * a.groups, rows * a.groups * 2);
  }
  pdl_wait();  // x and y belong to the kernels around this one (cuda_common.cuh)
  pdl_trigger();

  float acc[CT][4];
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[ct][e] = 0.f;
  }

  for (int kb0 = warp * U; kb0 < nkb; kb0 += kWarps * U) {
    uint32_t wlo[U][4], whi[U][4];
    QScale slo[U], shi[U];
    // The weight loads (HBM) of U k-blocks first, so they are all in flight
    // before the first use; x (L1/L2 hits) is loaded per k-block below, which
    // keeps U k-blocks of x out of the registers.
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = (kb0 + u) * 4 + t;  // this lane's chunk (past nchunks when kb0 + u >= nkb)
      const bool cok = c < nchunks;
      const bool lo_ok = cok && row_lo < a.n, hi_ok = cok && row_hi < a.n;
#pragma unroll
      for (int i = 0; i < 4; ++i) wlo[u][i] = whi[u][i] = 0u;
      const uint8_t* wp = a.qw + static_cast<int64_t>(row_lo) * a.row_bytes + c * 16;
      if (lo_ok) quant::ld_stream16(wp, wlo[u]);
      if (hi_ok) quant::ld_stream16(wp + 8 * static_cast<int64_t>(a.row_bytes), whi[u]);
      slo[u] = quant::load_scale<T, BITS>(a, row_lo, c, lo_ok);
      shi[u] = quant::load_scale<T, BITS>(a, row_hi, c, hi_ok);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = (kb0 + u) * 4 + t;
      const bool cok = c < nchunks;
      uint32_t xv[CT][XU][4];
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) {
        const int tok = tok0 + ct * 8 + g;
        const bool xok = cok && tok < a.m;
        const T* xp = x + static_cast<int64_t>(tok) * a.k + c * KC;
#pragma unroll
        for (int i = 0; i < XU; ++i) {
          if (xok) {
            quant::ld_nc16(xp + 8 * i, xv[ct][i]);
          } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) xv[ct][i][j] = 0u;
          }
        }
      }
#pragma unroll
      for (int unit = 0; unit < XU; ++unit) {
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) {
          const int wi = quant::word_of<BITS>(unit, sub);
          uint32_t af[4];
          quant::make_a<T, BITS>(af, wlo[u][wi], whi[u][wi], sub, slo[u], shi[u]);
#pragma unroll
          for (int ct = 0; ct < CT; ++ct) {
            uint32_t b0, b1;
            quant::make_b<BITS>(b0, b1, xv[ct][unit], sub);
            quant::mma16816<T>(acc[ct], af, b0, b1);
          }
        }
      }
    }
  }

  // Fixed-order sum of the 8 warps' partials, bias, one rounding.
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
    for (int e = 0; e < 4; ++e) red[warp][ct * 4 + e][lane] = acc[ct][e];
  }
  __syncthreads();
  const T* bias = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  for (int i = threadIdx.x; i < CT * 4 * 32; i += kThreads) {
    const int idx = i >> 5, ln = i & 31;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w][idx][ln];
    const int e = idx & 3, ct = idx >> 2;
    const int row = blockIdx.x * 16 + (ln >> 2) + ((e >> 1) << 3);  // D rows g, g + 8
    const int tok = tok0 + ct * 8 + 2 * (ln & 3) + (e & 1);          // D cols 2t, 2t + 1
    if (row < a.n && tok < a.m) {
      if (bias) s += to_f<T>(bias[row]);
      y[static_cast<int64_t>(tok) * a.n + row] = from_f<T>(s);
    }
  }
}

// ---- SIMT GEMV (any dtype, any shape) ------------------------------------------------------

template <class T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 r = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = to_f<T>(quant::bit_cast<T>(static_cast<uint16_t>(w[i] & 0xFFFFu)));
      v[2 * i + 1] = to_f<T>(quant::bit_cast<T>(static_cast<uint16_t>(w[i] >> 16)));
    }
  }
}

// Warp per weight row; tokens [MT blockIdx.y, +MT). VEC: 8 k's per lane step
// (K % 8 == 0, group % 8 == 0, aligned rows), else one.
template <class T, int BITS, int MT, bool VEC>
__global__ void __launch_bounds__(kThreads) quant_gemv_simt_kernel(const QArgs a) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + warp;
  if (lane == 0 && row < a.n && blockIdx.y == 0) {
    prefetch_l2_span(a.qw + static_cast<int64_t>(row) * a.row_bytes, a.row_bytes);
  }
  pdl_wait();
  pdl_trigger();
  if (row >= a.n) return;  // no block barrier below
  const int tok0 = blockIdx.y * MT;
  const int mt = min(MT, a.m - tok0);
  const uint8_t* qr = a.qw + static_cast<int64_t>(row) * a.row_bytes;
  const uint16_t* sr = a.scales + static_cast<int64_t>(row) * a.groups;
  const uint8_t* zr = a.zeros ? a.zeros + static_cast<int64_t>(row) * a.groups : nullptr;
  const T* x = static_cast<const T*>(a.x) + static_cast<int64_t>(tok0) * a.k;
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0.f;

  if constexpr (VEC) {
#pragma unroll 2
    for (int k = lane * 8; k < a.k; k += 32 * 8) {
      const int gi = k / a.group_size;  // the 8 k's share a group (group % 8 == 0)
      const float s = __half2float(__ushort_as_half(__ldg(sr + gi)));
      const float z = static_cast<float>(zr ? static_cast<int>(__ldg(zr + gi)) : a.sym_zero);
      float w[8];
      if constexpr (BITS == 4) {
        const uint32_t q = __ldg(reinterpret_cast<const uint32_t*>(qr + k / 2));
#pragma unroll
        for (int e = 0; e < 8; ++e) w[e] = (static_cast<float>((q >> (4 * e)) & 15u) - z) * s;
      } else {
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(qr + k));
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          w[e] = (static_cast<float>((q.x >> (8 * e)) & 255u) - z) * s;
          w[4 + e] = (static_cast<float>((q.y >> (8 * e)) & 255u) - z) * s;
        }
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m < mt) {
          float xv[8];
          load8<T>(x + static_cast<int64_t>(m) * a.k + k, xv);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[m] = fmaf(xv[e], w[e], acc[m]);
        }
      }
    }
  } else {
    for (int k = lane; k < a.k; k += 32) {
      const int gi = k / a.group_size;
      const float s = __half2float(__ushort_as_half(__ldg(sr + gi)));
      const int z = zr ? static_cast<int>(__ldg(zr + gi)) : a.sym_zero;
      const int q = BITS == 4 ? (__ldg(qr + (k >> 1)) >> ((k & 1) * 4)) & 15 : __ldg(qr + k);
      const float w = static_cast<float>(q - z) * s;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m < mt) acc[m] = fmaf(to_f<T>(x[static_cast<int64_t>(m) * a.k + k]), w, acc[m]);
      }
    }
  }

  const float b = a.bias ? to_f<T>(static_cast<const T*>(a.bias)[row]) : 0.f;
  T* y = static_cast<T*>(a.y) + static_cast<int64_t>(tok0) * a.n + row;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0 && m < mt) y[static_cast<int64_t>(m) * a.n] = from_f<T>(s + b);
  }
}

// ---- launchers ---------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs launch(args, rows) once per chunk of at most kMaxGridY * tile tokens,
// with x and y offset to the chunk's first token.
template <class F>
void for_token_chunks(const QArgs& a, size_t elem, int tile, F launch) {
  const int64_t per = int64_t{kMaxGridY} * tile;
  for (int64_t m0 = 0; m0 < a.m; m0 += per) {
    QArgs c = a;
    c.m = static_cast<int>(std::min<int64_t>(per, a.m - m0));
    c.x = static_cast<const char*>(a.x) + m0 * a.k * static_cast<int64_t>(elem);
    c.y = static_cast<char*>(a.y) + m0 * a.n * static_cast<int64_t>(elem);
    launch(c);
  }
}

template <class T, int BITS, int CT, int U>
void launch_gemv_tc(const QArgs& a, cudaStream_t s) {
  for_token_chunks(a, sizeof(T), 8 * CT, [&](const QArgs& c) {
    const dim3 grid(static_cast<unsigned>(ceil_div(c.n, 16)),
                    static_cast<unsigned>(ceil_div(c.m, 8 * CT)));
    launch_kernel(quant_gemv_tc_kernel<T, BITS, CT, U>, grid, kThreads, 0, s, c);
    EL_CUDA_CHECK_LAUNCH("quant_gemv_tc_kernel");
  });
}

template <class T, int BITS>
void gemv_tc_for_m(const QArgs& a, cudaStream_t s) {
  if (a.m <= 8) {
    // Each pass of the k loop costs a full memory round trip (loads, then
    // use), so longer rows load more k-blocks per warp per pass: 2 up to 16
    // k-blocks a row (int4 K 2048, int8 K 1024), 4 up to 32, else 8 (down's
    // K 5632: one pass in int4, two in int8).
    const int64_t nkb = ceil_div(a.k, Layout<BITS>::KB);
    if (nkb > int64_t{kWarps} * 4) {
      launch_gemv_tc<T, BITS, 1, 8>(a, s);
    } else if (nkb > int64_t{kWarps} * 2) {
      launch_gemv_tc<T, BITS, 1, 4>(a, s);
    } else {
      launch_gemv_tc<T, BITS, 1, 2>(a, s);
    }
  } else if (a.m <= 16) {
    launch_gemv_tc<T, BITS, 2, 1>(a, s);
  } else {
    launch_gemv_tc<T, BITS, 4, 1>(a, s);  // larger M: more token tiles along y
  }
}

template <class T, int BITS, int MT>
void launch_simt(const QArgs& a, bool vec, cudaStream_t s) {
  for_token_chunks(a, sizeof(T), MT, [&](const QArgs& c) {
    const dim3 grid(static_cast<unsigned>(ceil_div(c.n, kWarps)),
                    static_cast<unsigned>(ceil_div(c.m, MT)));
    if (vec) {
      launch_kernel(quant_gemv_simt_kernel<T, BITS, MT, true>, grid, kThreads, 0, s, c);
    } else {
      launch_kernel(quant_gemv_simt_kernel<T, BITS, MT, false>, grid, kThreads, 0, s, c);
    }
    EL_CUDA_CHECK_LAUNCH("quant_gemv_simt_kernel");
  });
}

template <class T, int BITS>
void simt_for_m(const QArgs& a, bool vec, cudaStream_t s) {
  if (a.m == 1) {
    launch_simt<T, BITS, 1>(a, vec, s);
  } else if (a.m <= 4) {
    launch_simt<T, BITS, 4>(a, vec, s);
  } else {
    launch_simt<T, BITS, 8>(a, vec, s);
  }
}

// The tensor-core paths need bf16/f16 activations, whole 16-byte chunks per
// row (K a multiple of 32 int4 / 16 int8 k's), each chunk inside one group
// and 16-byte aligned x and weight rows.
bool tc_eligible(DType dtype, const QuantizedWeight& w, const Tensor& x) {
  const int64_t kc = w.bits == 4 ? 32 : 16;
  return dtype != DType::f32 && w.in_features % kc == 0 && w.group_size % kc == 0 &&
         aligned16(x.raw()) && aligned16(w.qweight.raw());
}

bool simt_vec_ok(const QuantizedWeight& w, const Tensor& x) {
  return w.in_features % 8 == 0 && w.group_size % 8 == 0 && aligned16(x.raw()) &&
         (reinterpret_cast<uintptr_t>(w.qweight.raw()) & 7u) == 0;
}

// GEMM token tile: 128 when that still gives every SM a block, else 64.
int gemm_bm(int64_t m, int64_t n) {
  return ceil_div(n, 128) * ceil_div(m, 128) >= ctx().sm_count ? 128 : 64;
}

void check_operands(const Tensor& x, const QuantizedWeight& w, const Tensor& bias,
                    const Tensor& y) {
  constexpr const char* what = "quant_matmul";
  expect_cuda_float(x, what);
  expect_cuda_dtype(y, x.dtype(), what);
  if (bias.defined()) expect_cuda_dtype(bias, x.dtype(), what);
  const int64_t n = w.out_features, k = w.in_features;
  EL_CUDA_ENSURE((w.bits == 4 || w.bits == 8) && k > 0 && n >= 0 && w.group_size > 0 &&
                     k % w.group_size == 0 && (w.bits == 8 || k % 2 == 0),
                 "cuda quant_matmul: malformed quantized weight (bits {}, group {}, [{}, {}])",
                 w.bits, w.group_size, n, k);
  expect_cuda_dtype(w.qweight, DType::u8, "quant_matmul (qweight)");
  expect_cuda_dtype(w.scales, DType::f16, "quant_matmul (scales)");
  if (w.zeros.defined()) expect_cuda_dtype(w.zeros, DType::u8, "quant_matmul (zeros)");
  const int64_t groups = k / w.group_size;
  EL_CUDA_ENSURE(w.qweight.numel() == n * k * w.bits / 8 && w.scales.numel() == n * groups &&
                     (!w.zeros.defined() || w.zeros.numel() == n * groups),
                 "cuda quant_matmul: qweight {} / scales {} do not match [{}, {}] at {} bits, "
                 "group {}",
                 w.qweight.numel(), w.scales.numel(), n, k, w.bits, w.group_size);
  EL_CUDA_ENSURE(x.numel() % k == 0, "cuda quant_matmul: x has {} values, not a multiple of K {}",
                 x.numel(), k);
  const int64_t m = x.numel() / k;
  EL_CUDA_ENSURE(y.numel() == m * n, "cuda quant_matmul: y has {} values, expected {} x {}",
                 y.numel(), m, n);
  EL_CUDA_ENSURE(!bias.defined() || bias.numel() == n,
                 "cuda quant_matmul: bias has {} values, expected {}", bias.numel(), n);
  // Kernel indices are 32-bit below 2^31 (offsets are formed in 64 bits).
  EL_CUDA_ENSURE(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 28),
                 "cuda quant_matmul: [{}, {}] x [{}, {}] is too large", m, k, n, k);
}

}  // namespace

const char* quant_path_name(QuantPath path) {
  switch (path) {
    case QuantPath::simt: return "simt";
    case QuantPath::gemv: return "gemv";
    case QuantPath::gemm: return "gemm";
    case QuantPath::stream: return "stream";
    default: return "auto";
  }
}

namespace {

// The kernels' arguments (y and bias may be null where only the choice of
// path needs them).
QArgs quant_args(const Tensor& x, const QuantizedWeight& w, const void* bias, void* y) {
  const int64_t k = w.in_features;
  QArgs a;
  a.x = x.raw();
  a.qw = w.qweight.data<uint8_t>();
  a.scales = w.scales.data<uint16_t>();
  a.zeros = w.zeros.defined() ? w.zeros.data<uint8_t>() : nullptr;
  a.bias = bias;
  a.y = y;
  a.m = static_cast<int>(x.numel() / k);
  a.n = static_cast<int>(w.out_features);
  a.k = static_cast<int>(k);
  a.group_size = static_cast<int>(w.group_size);
  a.groups = static_cast<int>(k / w.group_size);
  a.row_bytes = static_cast<int>(k * w.bits / 8);
  a.sym_zero = w.symmetric_zero();
  return a;
}

// One token's weights of at least this many bytes take the stream path
// (automatic; EL_QUANT_STREAM=0 turns it off and EL_QUANT_STREAM_MIN_KIB=n
// moves the bound, for A/B runs). Measured down to 2.1 MB (session 27:
// int4 o 2048 x 2048 3.85 us against 4.16 on the GEMV, qkv 4.10 against
// 4.66; layered int4 decode 0.790-0.794 ms with the bound at 1 MiB against
// 0.841-0.849 at 4 MiB); below it a block's share is a window or less.
constexpr int64_t kStreamMinKiB = 2048;
bool stream_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("EL_QUANT_STREAM");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}
int64_t stream_min_bytes() {
  static const int64_t n = [] {
    const char* e = std::getenv("EL_QUANT_STREAM_MIN_KIB");
    return (e ? std::max<int64_t>(0, std::atoll(e)) : kStreamMinKiB) * 1024;
  }();
  return n;
}

}  // namespace

QuantPath quant_matmul_path(const Tensor& x, const QuantizedWeight& w) {
  if (!tc_eligible(x.dtype(), w, x)) return QuantPath::simt;
  const int64_t m = x.numel() / std::max<int64_t>(w.in_features, 1);
  const int64_t bytes = w.out_features * w.in_features * w.bits / 8;
  if (m == 1 && stream_enabled() && bytes >= stream_min_bytes() &&
      quant::stream_gemv_takes(quant_args(x, w, nullptr, nullptr), x.dtype(), w.bits))
    return QuantPath::stream;
  return m <= kGemvMaxM ? QuantPath::gemv : QuantPath::gemm;
}

void quant_matmul_with(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y,
                       QuantPath path) {
  check_operands(x, w, bias, y);
  const int64_t k = w.in_features, n = w.out_features, m = x.numel() / k;
  if (m == 0 || n == 0) return;
  if (path == QuantPath::automatic) path = quant_matmul_path(x, w);
  EL_CUDA_ENSURE(path == QuantPath::simt || tc_eligible(x.dtype(), w, x),
                 "cuda quant_matmul: the {} tensor-core path needs bf16/f16 x, K and group size "
                 "multiples of {} and 16-byte aligned x and qweight (x {}, K {}, group {})",
                 quant_path_name(path), w.bits == 4 ? 32 : 16, dtype_name(x.dtype()), k,
                 w.group_size);
  const QArgs a = quant_args(x, w, bias.defined() ? bias.raw() : nullptr, y.raw());
  const cudaStream_t s = ctx().stream;
  const bool four = w.bits == 4;

  if (path == QuantPath::stream) {
    quant::launch_stream_gemv(a, x.dtype(), w.bits, s);
  } else if (path == QuantPath::simt) {
    const bool vec = simt_vec_ok(w, x);
    EL_DISPATCH_FLOAT(x.dtype(), T, {
      if (four) {
        simt_for_m<T, 4>(a, vec, s);
      } else {
        simt_for_m<T, 8>(a, vec, s);
      }
    });
  } else if (path == QuantPath::gemv) {
    if (x.dtype() == DType::bf16) {
      four ? gemv_tc_for_m<__nv_bfloat16, 4>(a, s) : gemv_tc_for_m<__nv_bfloat16, 8>(a, s);
    } else {
      four ? gemv_tc_for_m<__half, 4>(a, s) : gemv_tc_for_m<__half, 8>(a, s);
    }
  } else {
    quant::launch_quant_gemm(a, x.dtype(), w.bits, gemm_bm(m, n), s);
  }
}

void quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor& y) {
  quant_matmul_with(x, w, bias, y, QuantPath::automatic);
}

}  // namespace el::cuda
