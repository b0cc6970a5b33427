// cuda_quant_gemm.cu — the prefill path of the weight-only quantized matmul:
// y[M, N] = x[M, K] W^T with W int4/int8 (ops/quant_layout.h), bf16/f16 x,
// on tensor cores (mma.sync m16n8k16, f32 accumulators).
//
// Block tile: 128 weight rows x BM tokens (BM 64 or 128), 8 warps as 4 (rows)
// x 2 (tokens), so a warp owns 32 rows x BM/2 tokens (RT = 2 row tiles of
// 16, CT = BM/16 token tiles of 8). K advances one k-block (4 chunks of 16
// weight bytes per row: 128 int4 / 64 int8 k's) per step through a 3-stage
// cp.async ring holding the packed weight tile [128 rows][64 B] and the x
// tile [BM][k-block] (out-of-range rows, tokens and chunks are zero-filled).
// Each warp dequantises its own A fragments from the packed tile in
// registers (cuda_quant.cuh: lane (g, t) reads chunk t of rows g and g + 8,
// 16 bytes, and the matching x unit of its token), so shared memory holds
// 4x (int4) fewer weight bytes than a bf16 tile. Scales/zeros of the next
// k-block are loaded into registers while the current one computes.
//
// Shared-memory banks: a weight row is 64 B, so the 8 lanes of a quarter
// warp (rows g, g + 1; chunks 0..3) read 128 distinct bytes. An x row is
// 256 B (int4) / 128 B (int8); the lanes of a quarter warp read unit
// 4t + i / 2t + i of tokens g, g + 1, which would hit the same banks, so unit
// u of token row r is stored at u ^ (bit 3 of u) << 1 ^ (r & 1) (a
// permutation inside the row that spreads them over the 8 16-byte bank slots).
//
// Epilogue: accumulators (+ bias) are rounded into a [BM][128 + 8] tile in
// shared memory and written out as 16-byte row segments when N % 8 == 0.
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_quant.cuh"

namespace el::cuda::quant {
namespace {

constexpr int kThreads = 256;
constexpr int kBN = 128;  // weight rows per block
constexpr int kStages = 3;
constexpr int kMaxGridY = 65535;

template <int BITS, int BM>
struct GemmShape {
  static constexpr int KC = Layout<BITS>::KC;
  static constexpr int KB = Layout<BITS>::KB;
  static constexpr int XU = KB / 8;                 // 16-byte x units per token row per stage
  static constexpr int kWRow = 64;                  // bytes of a weight row per stage
  static constexpr int kWStage = kBN * kWRow;       // 8 KB
  static constexpr int kXRow = KB * 2;              // bytes of a token row per stage
  static constexpr int kXStage = BM * kXRow;        // 32 / 16 KB (int4, BM 128 / 64)
  static constexpr int kStage = kWStage + kXStage;
  static constexpr int kSmem = kStages * kStage;
  static constexpr int kOutLd = kBN + 8;            // elements per row of the output tile
  static constexpr int kOutBytes = BM * kOutLd * 2;
  static constexpr int RT = 2;                      // 16-row tiles per warp
  static constexpr int CT = BM / 16;                // 8-token tiles per warp
  static_assert(kOutBytes <= kSmem, "output tile must fit the stage ring");
};

__device__ __forceinline__ int xswz(int u, int r) { return u ^ (((u >> 3) & 1) << 1) ^ (r & 1); }

template <class T, int BITS, int BM>
__device__ __forceinline__ void load_stage(const QArgs& a, uint8_t* ws, uint8_t* xs, int kb,
                                           int n0, int m0, int nchunks) {
  using S = GemmShape<BITS, BM>;
  const T* x = static_cast<const T*>(a.x);
#pragma unroll
  for (int i = threadIdx.x; i < kBN * 4; i += kThreads) {
    const int r = i >> 2, ch = i & 3, row = n0 + r, c = kb * 4 + ch;
    const bool ok = row < a.n && c < nchunks;
    const uint8_t* src = ok ? a.qw + static_cast<int64_t>(row) * a.row_bytes + c * 16 : a.qw;
    cp_async16(ws + r * S::kWRow + ch * 16, src, ok);
  }
#pragma unroll
  for (int i = threadIdx.x; i < BM * S::XU; i += kThreads) {
    const int r = i / S::XU, u = i % S::XU, tok = m0 + r;
    const int kk = kb * S::KB + u * 8;  // K % 8 == 0: a unit is wholly inside or past K
    const bool ok = tok < a.m && kk < a.k;
    const T* src = ok ? x + static_cast<int64_t>(tok) * a.k + kk : x;
    cp_async16(xs + r * S::kXRow + xswz(u, r) * 16, src, ok);
  }
}

template <class T, int BITS, int BM>
__global__ void __launch_bounds__(kThreads, 1) quant_gemm_tc_kernel(const QArgs a) {
  using S = GemmShape<BITS, BM>;
  constexpr int RT = S::RT, CT = S::CT, KC = S::KC, UNITS = Layout<BITS>::XU;
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t* wsm = smem;
  uint8_t* xsm = smem + kStages * S::kWStage;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wr = warp & 3, wc = warp >> 2;
  const int n0 = blockIdx.x * kBN, m0 = blockIdx.y * BM;
  const int nchunks = a.k / KC, nkb = (nchunks + 3) >> 2;

  // This lane's rows (local) and their scales for the current k-block.
  int rows[RT][2];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    rows[r][0] = wr * 32 + r * 16 + g;
    rows[r][1] = rows[r][0] + 8;
  }
  auto scales_for = [&](int kb, QScale (&sc)[RT][2]) {
    const int c = kb * 4 + t;
#pragma unroll
    for (int r = 0; r < RT; ++r) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = n0 + rows[r][h];
        sc[r][h] = load_scale<T, BITS>(a, row, c, kb < nkb && c < nchunks && row < a.n);
      }
    }
  };
  // Byte offsets of this lane's x units inside a token row (the swizzle
  // depends on the token row only through its parity, which is g's).
  int xoff[UNITS];
#pragma unroll
  for (int i = 0; i < UNITS; ++i) xoff[i] = xswz(t * UNITS + i, g) * 16;
  int xrow[CT];
#pragma unroll
  for (int ct = 0; ct < CT; ++ct) xrow[ct] = (wc * (BM / 2) + ct * 8 + g) * S::kXRow;

  float acc[RT][CT][4];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
#pragma unroll
    for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][ct][e] = 0.f;
    }
  }

#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < nkb) {
      load_stage<T, BITS, BM>(a, wsm + st * S::kWStage, xsm + st * S::kXStage, st, n0, m0,
                              nchunks);
    }
    cp_async_commit();
  }
  QScale sc[RT][2];
  scales_for(0, sc);

  for (int kb = 0; kb < nkb; ++kb) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kb landed for every thread; stage kb - 1 is free
    {
      const int nk = kb + kStages - 1;
      if (nk < nkb) {
        const int st = nk % kStages;
        load_stage<T, BITS, BM>(a, wsm + st * S::kWStage, xsm + st * S::kXStage, nk, n0, m0,
                                nchunks);
      }
      cp_async_commit();  // possibly empty: keeps the group count per iteration fixed
    }
    QScale sc_next[RT][2];
    scales_for(kb + 1, sc_next);

    const int st = kb % kStages;
    const uint8_t* wsb = wsm + st * S::kWStage;
    const uint8_t* xsb = xsm + st * S::kXStage;
    uint32_t wlo[RT][4], whi[RT][4];
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      lds16(wsb + rows[r][0] * S::kWRow + t * 16, wlo[r]);
      lds16(wsb + rows[r][1] * S::kWRow + t * 16, whi[r]);
    }
#pragma unroll
    for (int unit = 0; unit < UNITS; ++unit) {
      uint32_t xv[CT][4];
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) lds16(xsb + xrow[ct] + xoff[unit], xv[ct]);
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const int wi = word_of<BITS>(unit, sub);
        uint32_t af[RT][4];
#pragma unroll
        for (int r = 0; r < RT; ++r) {
          make_a<T, BITS>(af[r], wlo[r][wi], whi[r][wi], sub, sc[r][0], sc[r][1]);
        }
#pragma unroll
        for (int ct = 0; ct < CT; ++ct) {
          uint32_t b0, b1;
          make_b<BITS>(b0, b1, xv[ct], sub);
#pragma unroll
          for (int r = 0; r < RT; ++r) mma16816<T>(acc[r][ct], af[r], b0, b1);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      sc[r][0] = sc_next[r][0];
      sc[r][1] = sc_next[r][1];
    }
  }

  // Epilogue through shared memory (the ring is idle once every group landed).
  cp_async_wait<0>();
  __syncthreads();
  T* out = reinterpret_cast<T*>(smem);  // [BM][kOutLd]
  const T* bias = static_cast<const T*>(a.bias);
#pragma unroll
  for (int r = 0; r < RT; ++r) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = n0 + rows[r][h];
      const float b = (bias && row < a.n) ? to_f<T>(bias[row]) : 0.f;
#pragma unroll
      for (int ct = 0; ct < CT; ++ct) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int tl = wc * (BM / 2) + ct * 8 + 2 * t + j;  // D cols 2t, 2t + 1
          out[tl * S::kOutLd + rows[r][h]] = from_f<T>(acc[r][ct][2 * h + j] + b);
        }
      }
    }
  }
  __syncthreads();
  T* y = static_cast<T*>(a.y);
  if (a.n % 8 == 0 && aligned16(a.y)) {
    for (int i = threadIdx.x; i < BM * (kBN / 8); i += kThreads) {
      const int tl = i / (kBN / 8), u = i % (kBN / 8);
      const int tok = m0 + tl, col = n0 + u * 8;
      if (tok < a.m && col < a.n) {
        *reinterpret_cast<uint4*>(y + static_cast<int64_t>(tok) * a.n + col) =
            *reinterpret_cast<const uint4*>(out + tl * S::kOutLd + u * 8);
      }
    }
  } else {
    for (int i = threadIdx.x; i < BM * kBN; i += kThreads) {
      const int tl = i / kBN, cl = i % kBN;
      const int tok = m0 + tl, col = n0 + cl;
      if (tok < a.m && col < a.n) {
        y[static_cast<int64_t>(tok) * a.n + col] = out[tl * S::kOutLd + cl];
      }
    }
  }
}

template <class T, int BITS, int BM>
void launch(const QArgs& a, cudaStream_t stream) {
  using S = GemmShape<BITS, BM>;
  static const bool attr_set = [] {
    EL_CUDA_CHECK(cudaFuncSetAttribute(quant_gemm_tc_kernel<T, BITS, BM>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmem));
    return true;
  }();
  (void)attr_set;
  const int64_t per = int64_t{kMaxGridY} * BM;
  for (int64_t m0 = 0; m0 < a.m; m0 += per) {
    QArgs c = a;
    c.m = static_cast<int>(a.m - m0 < per ? a.m - m0 : per);
    c.x = static_cast<const char*>(a.x) + m0 * a.k * static_cast<int64_t>(sizeof(T));
    c.y = static_cast<char*>(a.y) + m0 * a.n * static_cast<int64_t>(sizeof(T));
    const dim3 grid(static_cast<unsigned>((c.n + kBN - 1) / kBN),
                    static_cast<unsigned>((c.m + BM - 1) / BM));
    quant_gemm_tc_kernel<T, BITS, BM><<<grid, kThreads, S::kSmem, stream>>>(c);
    EL_CUDA_CHECK_LAUNCH("quant_gemm_tc_kernel");
  }
}

template <class T>
void launch_for(const QArgs& a, int bits, int bm, cudaStream_t stream) {
  if (bits == 4) {
    bm == 128 ? launch<T, 4, 128>(a, stream) : launch<T, 4, 64>(a, stream);
  } else {
    bm == 128 ? launch<T, 8, 128>(a, stream) : launch<T, 8, 64>(a, stream);
  }
}

}  // namespace

void launch_quant_gemm(const QArgs& a, DType dtype, int bits, int bm, cudaStream_t stream) {
  EL_CUDA_ENSURE(dtype == DType::bf16 || dtype == DType::f16,
                 "cuda quant_matmul: the gemm path takes bf16/f16 x, got {}", dtype_name(dtype));
  if (dtype == DType::bf16) {
    launch_for<__nv_bfloat16>(a, bits, bm, stream);
  } else {
    launch_for<__half>(a, bits, bm, stream);
  }
}

}  // namespace el::cuda::quant
