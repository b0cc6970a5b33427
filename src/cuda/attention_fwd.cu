// attention_fwd.cu — tensor-core attention forward (FlashAttention-2 style).
//
// One thread block per (query tile of kBM rows, head h, batch b). Each warp
// owns 16 * kMW query rows whose Q fragments stay in registers; K/V tiles of
// kBN keys are double-buffered in swizzled shared memory with cp.async, so the
// load of tile j+1 overlaps the math on tile j. Per tile:
//   S = Q K^T                    (mma.sync m16n8k16, f32 accumulators)
//   m' = max(m, rowmax(S)), P = exp2(S * scale*log2e - m'), l = l e^(m-m') + rowsum(P)
//   O = O e^(m-m') + P V         (P packed to 16 bits straight from the accumulators)
// and at the end out = O / l, lse = (m + log2 l) ln 2. Only tiles that cross
// the causal diagonal or the end of S pay for masking. Under a causal mask the
// query tiles with the most keys are scheduled first (blockIdx.x reversed).
// ALiBi (a.alibi): every tile takes the masking pass, which then also turns S
// into base-2 logits S * scale*log2e + slope*log2e * (key - query position),
// and the softmax multiplies by 1 instead of scale*log2e (smul): without
// ALiBi the kernel does exactly what it did before.
#include <type_traits>

#include "cuda/attention_device.cuh"

namespace el::cuda::attn {
namespace {

template <typename T, int D, int kWarps, int kMW, int kBN>
struct FwdCfg {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBM = 16 * kMW * kWarps;  // query rows per block
  static constexpr size_t kSmem = (size_t(kBM) * D + 4 * size_t(kBN) * D) * sizeof(T);
};

// kWin: the sliding-window instantiation (NSA's window branch, cuda_nsa.cu),
// a separate kernel so that the plain causal path compiles as before: this
// kernel sits near the register limit, where small changes move its speed.
template <typename T, int D, int kWarps, int kMW, int kBN, int kMinBlocks, bool kWin>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks) fwd_kernel(const FwdArgs a) {
  using Cfg = FwdCfg<T, D, kWarps, kMW, kBN>;
  constexpr int kBM = Cfg::kBM, kThreads = Cfg::kThreads;
  const int window = kWin ? a.window : 0;  // 0: no lower bound (folded away)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [kBM][D]
  T* sK = sQ + kBM * D;                    // [2][kBN][D]
  T* sV = sK + 2 * kBN * D;                // [2][kBN][D]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (a.H / a.Hkv);
  const int m0 = m_block * kBM;
  const int off = a.S - a.T;
  const long long q_stride = static_cast<long long>(a.H) * D;    // between query rows
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;  // between key rows
  const T* q = static_cast<const T*>(a.q) + (static_cast<long long>(b) * a.T * a.H + h) * D;
  T* out = static_cast<T*>(a.out) + (static_cast<long long>(b) * a.T * a.H + h) * D;
  const T* k = static_cast<const T*>(a.k) + (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  const T* v = static_cast<const T*>(a.v) + (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;

  // Keys any row of this tile can see: [n_base, n_end) (n_base: the tile
  // holding the sliding window's oldest key of the first row, else 0).
  int n_end = a.S;
  if (a.causal) n_end = min(a.S, m0 + kBM + off);
  const int n_base = window > 0 ? max(0, m0 + off - window + 1) / kBN * kBN : 0;
  const int n_tiles = n_end > n_base ? (n_end - n_base + kBN - 1) / kBN : 0;

  load_tile<kBM, D, kThreads>(sQ, q + m0 * q_stride, q_stride, a.T - m0, tid);
  if (n_tiles > 0) {
    load_tile<kBN, D, kThreads>(sK, k + n_base * kv_stride, kv_stride, a.S - n_base, tid);
    load_tile<kBN, D, kThreads>(sV, v + n_base * kv_stride, kv_stride, a.S - n_base, tid);
  }
  cp_async_commit();

  const int row_base = warp * 16 * kMW;  // this warp's first row within the tile
  // K as the B operand of Q K^T (keys are n), V transposed as the B operand of P V.
  const LaneAddr<D> ka(sK, (lane % 8) + (lane >> 4) * 8, (lane >> 3) & 1);
  const LaneAddr<D> va(sV, (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
  const float sl2 = a.scale * kLog2e;
  const float slope2 = a.alibi ? a.alibi[h] * kLog2e : 0.f;  // ALiBi slope, base 2
  const float smul = a.alibi ? 1.f : sl2;  // factor from S to base-2 logits in the softmax
  // Q fragments stay in registers for D 64 / 128; at D 192 / 256 they would
  // push the O accumulators into spills (ptxas: 48 bytes at 192), so each
  // k-step re-reads them from sQ (untouched until the epilogue).
  constexpr bool kQRegs = kMW * D <= 128;
  uint32_t qf[kMW][kQRegs ? D / 16 : 1][4];
  float o[kMW][D / 8][4];
  float row_m[kMW][2], row_l[kMW][2];
#pragma unroll
  for (int mi = 0; mi < kMW; ++mi) {
#pragma unroll
    for (int j = 0; j < D / 8; ++j) o[mi][j][0] = o[mi][j][1] = o[mi][j][2] = o[mi][j][3] = 0.f;
    row_m[mi][0] = row_m[mi][1] = -INFINITY;
    row_l[mi][0] = row_l[mi][1] = 0.f;
  }

  for (int it = 0; it < n_tiles; ++it) {
    const int cur = it & 1;
    const int n0 = n_base + it * kBN;
    cp_async_wait<0>();
    __syncthreads();  // tile `it` landed; everyone is done with buffer cur ^ 1
    if constexpr (kQRegs) {
      if (it == 0) {
        const LaneAddr<D> qa(sQ, row_base + (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
        for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qf[mi][kk], qa.at(mi * 16, kk));
      }
    }
    if (it + 1 < n_tiles) {
      const int n1 = n0 + kBN;
      load_tile<kBN, D, kThreads>(sK + (cur ^ 1) * kBN * D, k + n1 * kv_stride, kv_stride,
                                  a.S - n1, tid);
      load_tile<kBN, D, kThreads>(sV + (cur ^ 1) * kBN * D, v + n1 * kv_stride, kv_stride,
                                  a.S - n1, tid);
    }
    cp_async_commit();
    // A warp whose rows all end before this tile (causal) has nothing to add.
    if (a.causal && n0 > m0 + row_base + 16 * kMW - 1 + off) continue;
    // ... or whose windows all start after it.
    if (window > 0 && n0 + kBN <= m0 + row_base + off - window + 1) continue;
    const uint32_t stage = cur * kBN * D * sizeof(T);

    // S = Q K^T for this warp's rows.
    float s[kMW][kBN / 8][4];
#pragma unroll
    for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) s[mi][j][0] = s[mi][j][1] = s[mi][j][2] = s[mi][j][3] = 0.f;
    if constexpr (kQRegs) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < kBN / 16; ++np) {
          uint32_t bk[4];
          ldsm_x4(bk, ka.at(np * 16, kk) + stage);
#pragma unroll
          for (int mi = 0; mi < kMW; ++mi) {
            mma16816<T>(s[mi][2 * np], qf[mi][kk], bk[0], bk[1]);
            mma16816<T>(s[mi][2 * np + 1], qf[mi][kk], bk[2], bk[3]);
          }
        }
      }
    } else {
      const LaneAddr<D> qa(sQ, row_base + (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qt[kMW][4];
#pragma unroll
        for (int mi = 0; mi < kMW; ++mi) ldsm_x4(qt[mi], qa.at(mi * 16, kk));
#pragma unroll
        for (int np = 0; np < kBN / 16; ++np) {
          uint32_t bk[4];
          ldsm_x4(bk, ka.at(np * 16, kk) + stage);
#pragma unroll
          for (int mi = 0; mi < kMW; ++mi) {
            mma16816<T>(s[mi][2 * np], qt[mi], bk[0], bk[1]);
            mma16816<T>(s[mi][2 * np + 1], qt[mi], bk[2], bk[3]);
          }
        }
      }
    }

    // Mask keys past S and, under the causal mask, keys after row + off.
    const bool need_mask = n0 + kBN > a.S || (a.causal && n0 + kBN - 1 > m0 + row_base + off) ||
                           (window > 0 && n0 <= m0 + row_base + 16 * kMW - 1 + off - window);
    if (a.alibi) {
#pragma unroll
      for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + row_base + mi * 16 + g + (e >> 1) * 8;
            const int col = n0 + j * 8 + 2 * t4 + (e & 1);
            const bool masked = col >= a.S || (a.causal && col > row + off) ||
                                (window > 0 && col <= row + off - window);
            s[mi][j][e] =
                masked ? -INFINITY : fmaf(s[mi][j][e], sl2, slope2 * float(col - row - off));
          }
    } else if (need_mask) {
#pragma unroll
      for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = m0 + row_base + mi * 16 + g + (e >> 1) * 8;
            const int col = n0 + j * 8 + 2 * t4 + (e & 1);
            if (col >= a.S || (a.causal && col > row + off) ||
                (window > 0 && col <= row + off - window)) {
              s[mi][j][e] = -INFINITY;
            }
          }
    }

    // Online softmax (base 2, scale folded into the exponent).
#pragma unroll
    for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) mx = fmaxf(mx, fmaxf(s[mi][j][2 * hf], s[mi][j][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_m[mi][hf], mx * smul);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet
        const float alpha = exp2f(row_m[mi][hf] - m_use);
        row_m[mi][hf] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
          for (int e = 2 * hf; e < 2 * hf + 2; ++e) {
            const float p = exp2f(fmaf(s[mi][j][e], smul, -m_use));
            s[mi][j][e] = p;
            sum += p;
          }
        row_l[mi][hf] = row_l[mi][hf] * alpha + sum;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          o[mi][j][2 * hf] *= alpha;
          o[mi][j][2 * hf + 1] *= alpha;
        }
      }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pa[kMW][4];
#pragma unroll
      for (int mi = 0; mi < kMW; ++mi) {
        pa[mi][0] = pack2<T>(s[mi][2 * kk][0], s[mi][2 * kk][1]);
        pa[mi][1] = pack2<T>(s[mi][2 * kk][2], s[mi][2 * kk][3]);
        pa[mi][2] = pack2<T>(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
        pa[mi][3] = pack2<T>(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bv[4];
        ldsm_x4_trans(bv, va.at(kk * 16, dp) + stage);
#pragma unroll
        for (int mi = 0; mi < kMW; ++mi) {
          mma16816<T>(o[mi][2 * dp], pa[mi], bv[0], bv[1]);
          mma16816<T>(o[mi][2 * dp + 1], pa[mi], bv[2], bv[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // all warps are done with sQ (a block with no key tile read nothing)

  // Epilogue: normalise, write lse, stage this warp's rows of O in sQ, then
  // store them with 16-byte coalesced writes.
#pragma unroll
  for (int mi = 0; mi < kMW; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = row_l[mi][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int r = row_base + mi * 16 + g + hf * 8;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const uint32_t packed = pack2<T>(o[mi][j][2 * hf] * inv, o[mi][j][2 * hf + 1] * inv);
        *reinterpret_cast<uint32_t*>(sQ + swz<D>(r, j * 8 + 2 * t4)) = packed;
      }
      const int t = m0 + r;
      if (t4 == 0 && t < a.T) {
        const float lse =
            (l > 0.f && row_m[mi][hf] != -INFINITY) ? (row_m[mi][hf] + log2f(l)) * kLn2 : -INFINITY;
        a.lse[(static_cast<long long>(b) * a.H + h) * a.T + t] = lse;
      }
    }
  __syncwarp();
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * kMW * kChunks / 32; ++i) {
    const int idx = lane + i * 32;
    const int r = row_base + idx / kChunks, c = idx % kChunks;
    const int t = m0 + r;
    if (t < a.T) {
      *reinterpret_cast<uint4*>(out + t * q_stride + c * 8) =
          *reinterpret_cast<const uint4*>(sQ + swz<D>(r, c * 8));
    }
  }
}

template <typename T, int D, int kWarps, int kMW, int kBN, int kMinBlocks = 1, bool kWin = false>
cudaError_t launch_fwd(const FwdArgs& a, cudaStream_t stream) {
  using Cfg = FwdCfg<T, D, kWarps, kMW, kBN>;
  auto kernel = fwd_kernel<T, D, kWarps, kMW, kBN, kMinBlocks, kWin>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Cfg::kSmem));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.T + Cfg::kBM - 1) / Cfg::kBM, a.H, a.B);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmem, stream>>>(a);
  return cudaGetLastError();
}

// Tile variants (for tuning; 0 = default), as (warps, 16-row tiles per warp, kBN):
//   D = 64:  1 = (4, 1, 64), 2 = (4, 2, 64), 3 = (8, 1, 64), 4 = (8, 2, 64), 5 = (4, 2, 32),
//            6 = 2 capped at 168 registers (3 blocks / SM), 7 = 1 capped at 128 (4 blocks / SM);
//            default: 1 for causal with T <= 1024, else 2
//   D = 128: 1 = (4, 1, 64) default, 2 = (8, 1, 64), 3 = (4, 1, 32), 4 = (8, 1, 32),
//            5 = 1 capped at 168 registers
//   D = 192: (4, 1, 64) and D = 256: (4, 1, 32) only
// f16 always takes the default.
template <typename T>
cudaError_t forward_typed(const FwdArgs& a, int variant, cudaStream_t stream) {
  // A sliding window (D 64 / 128 only, attention.cu): the default tiles.
  if (a.window > 0) {
    if (a.D == 64) return launch_fwd<T, 64, 4, 2, 64, 1, true>(a, stream);
    if (a.D == 128) return launch_fwd<T, 128, 4, 1, 64, 1, true>(a, stream);
    return cudaErrorInvalidValue;
  }
  // D 192 (MLA's 128 + 64 q/k heads) and 256: 16-row warps; at 256 the key
  // tile halves to keep the score accumulators small (no variants).
  if (a.D == 192) return launch_fwd<T, 192, 4, 1, 64>(a, stream);
  if (a.D == 256) return launch_fwd<T, 256, 4, 1, 32>(a, stream);
  if constexpr (!std::is_same_v<T, __half>) {
    if (a.D == 64) {
      switch (variant) {
        case 1: return launch_fwd<T, 64, 4, 1, 64>(a, stream);
        case 3: return launch_fwd<T, 64, 8, 1, 64>(a, stream);
        case 4: return launch_fwd<T, 64, 8, 2, 64>(a, stream);
        case 5: return launch_fwd<T, 64, 4, 2, 32>(a, stream);
        case 6: return launch_fwd<T, 64, 4, 2, 64, 3>(a, stream);
        case 7: return launch_fwd<T, 64, 4, 1, 64, 4>(a, stream);
        default: break;
      }
    } else {
      switch (variant) {
        case 2: return launch_fwd<T, 128, 8, 1, 64>(a, stream);
        case 3: return launch_fwd<T, 128, 4, 1, 32>(a, stream);
        case 4: return launch_fwd<T, 128, 8, 1, 32>(a, stream);
        case 5: return launch_fwd<T, 128, 4, 1, 64, 3>(a, stream);
        default: break;
      }
    }
  }
  if (a.D == 64) {
    // Short causal sequences: 16-row warps give twice the blocks and skip more
    // of the masked diagonal (H200, B16 T1024 causal: 193 vs 185 TFLOP/s);
    // otherwise 32-row warps halve the shared-memory reads per MMA (299 vs 272
    // at T 8192).
    if (a.causal && a.T <= 1024) return launch_fwd<T, 64, 4, 1, 64>(a, stream);
    return launch_fwd<T, 64, 4, 2, 64>(a, stream);
  }
  return launch_fwd<T, 128, 4, 1, 64>(a, stream);
}

}  // namespace

cudaError_t forward_tc(const FwdArgs& a, Elem e, int variant, cudaStream_t stream) {
  if (e == Elem::bf16) return forward_typed<__nv_bfloat16>(a, variant, stream);
  return forward_typed<__half>(a, variant, stream);
}

}  // namespace el::cuda::attn
