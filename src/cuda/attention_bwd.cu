// attention_bwd.cu — tensor-core attention backward (FlashAttention-2 style).
//
// One thread block per (key tile of kBN = 16 * kWarps keys, kv head, batch).
// The block loops over every query head of the kv head's group and over the
// query tiles (kBM rows) that can see its keys, so dK/dV of the tile are
// summed in registers and written once: GQA/MQA need neither repeated K/V nor
// a reduction pass. Each warp owns 16 keys. Per query tile, with P recomputed
// from the saved lse (no T x S matrix anywhere):
//   S^T  = K Q^T,  P^T = exp2(S^T * scale*log2e - lse*log2e)   (masked -> 0)
//   dP^T = V dO^T, dS^T = P^T (dP^T - Dsum)     Dsum = rowsum(dO * O), precomputed
//   dV  += P^T dO,  dK += dS^T Q                 (P^T / dS^T fed from registers)
//   dQ  += dS K     (dS^T staged in shared memory; added with f32 atomics into
//                    a [B,T,H,D] workspace, scaled and converted at the end)
// Q, dO, lse and Dsum tiles are double-buffered with cp.async so the next
// tile loads while this one computes. ALiBi (a.alibi) adds slope*log2e *
// (key - query position) to the exponent of P^T; dS needs nothing more (the
// bias does not depend on q or k).
// D 192 (MLA's 128 + 64 q/k heads) and 256: dK and dV of a warp's 16 keys
// would hold 2 x D / 2 f32 registers per lane (192 at D 192), past what a
// thread has. There the kernel runs twice (kDV / kDK): a dV pass (S^T, P^T,
// dV += P^T dO) and a dK pass (everything else, dQ included), each holding
// one D-wide accumulator; the second recomputes S^T and P^T (6 GEMMs per
// tile instead of 5). D 64 / 128 run one pass that does both, as before.
// kWin: the sliding-window instantiation (NSA's window branch, cuda_nsa.cu;
// D 64 / 128, the default tiles): a key tile visits only the query tiles
// whose band reaches it and masks the keys older than a row's window. A
// separate instantiation with its own argument struct (BwdWinArgs): a
// runtime window in the plain kernel, even a field added to BwdArgs, changes
// its register allocation (246 -> 248 at D 64), which cost it 8-13% (H100).
#include <type_traits>

#include "cuda/attention_device.cuh"

namespace el::cuda::attn {
namespace {

template <typename T, int D, int kWarps, int kBM, bool kCache>
struct BwdCfg {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBN = 16 * kWarps;  // keys per block
  static constexpr int kRowGroups = kBM / 16;
  static_assert(kWarps % kRowGroups == 0, "dQ phase: each warp takes one 16-row group");
  static constexpr int kDSplit = kWarps / kRowGroups;  // warps sharing one row group's D
  static constexpr int kDCols = D / kDSplit;           // dQ columns per warp
  // Columns per accumulator chunk: at most 64, dividing kDCols (96 -> 48).
  static constexpr int kDC = kDCols <= 64 ? kDCols
                             : kDCols % 64 == 0 ? 64
                             : kDCols % 48 == 0 ? 48
                                                : 32;
  static_assert(kDCols % kDC == 0 && kDC % 16 == 0, "dQ columns split into whole chunks");
  static constexpr bool kCacheKV = kCache;  // K/V A-fragments kept in registers
  static constexpr size_t kSmem = (2 * size_t(kBN) * D + 4 * size_t(kBM) * D +
                                   size_t(kBN) * kBM) * sizeof(T) +
                                  4 * size_t(kBM) * sizeof(float);
};

__device__ __forceinline__ void atomic_add2(float* p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(x, y));
#else
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
#endif
}

// kDV / kDK: which of dV and dK (with dQ) this launch computes and writes
// (both, or one per pass at D > 128; see the file comment).
struct BwdWinArgs : BwdArgs {
  int window;
};
__device__ __forceinline__ int window_of(const BwdArgs&) { return 0; }
__device__ __forceinline__ int window_of(const BwdWinArgs& a) { return a.window; }

template <typename T, int D, int kWarps, int kBM, bool kCache, int kMinBlocks, bool kDV, bool kDK,
          bool kWin>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks)
    bwd_kernel(const std::conditional_t<kWin, BwdWinArgs, BwdArgs> a) {
  using Cfg = BwdCfg<T, D, kWarps, kBM, kCache>;
  constexpr int kBN = Cfg::kBN, kThreads = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // [kBN][D]
  T* sV = sK + kBN * D;                    // [kBN][D]
  T* sQ = sV + kBN * D;                    // [2][kBM][D]
  T* sdO = sQ + 2 * kBM * D;               // [2][kBM][D]
  T* sdS = sdO + 2 * kBM * D;              // [kBN][kBM]  dS^T
  float* sLse = reinterpret_cast<float*>(sdS + kBN * kBM);  // [2][kBM]
  float* sDsum = sLse + 2 * kBM;                            // [2][kBM]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int n0 = blockIdx.x * kBN, kvh = blockIdx.y, b = blockIdx.z;
  const int group = a.H / a.Hkv;
  const int off = a.S - a.T;
  const int window = window_of(a);  // 0: no lower bound (folded away)
  const long long q_stride = static_cast<long long>(a.H) * D;
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;

  // Query tiles that can see a key of this block: [mb_first, mb_end). With a
  // window, query t sees key s only if s > t + off - window: the last such
  // query of the block's newest key is n0 + kBN - 2 - off + window.
  const int m_first = a.causal ? max(0, n0 - off) : 0;
  const int n_mb_all = (a.T + kBM - 1) / kBM;
  const int mb_first = m_first < a.T ? m_first / kBM : n_mb_all;
  const int mb_end =
      window > 0 ? max(mb_first, min(n_mb_all, (n0 + kBN - 1 - off + window + kBM - 1) / kBM))
                 : n_mb_all;
  const int n_mb = mb_end - mb_first;
  const int total = group * n_mb;

  auto load_stage = [&](int it, int stage) {
    const int h = kvh * group + it / n_mb;
    const int m0 = (mb_first + it % n_mb) * kBM;
    const long long row0 = (static_cast<long long>(b) * a.T + m0) * a.H + h;  // row m0 of head h
    load_tile<kBM, D, kThreads>(sQ + stage * kBM * D, static_cast<const T*>(a.q) + row0 * D,
                                q_stride, a.T - m0, tid);
    load_tile<kBM, D, kThreads>(sdO + stage * kBM * D, static_cast<const T*>(a.dout) + row0 * D,
                                q_stride, a.T - m0, tid);
    const long long lrow = (static_cast<long long>(b) * a.H + h) * a.T;
    for (int i = tid; i < 2 * kBM; i += kThreads) {
      const int r = i % kBM, t = m0 + r;
      const bool ok = t < a.T;
      const float* src = (i < kBM ? a.lse : a.dsum) + lrow + (ok ? t : 0);
      float* dst = (i < kBM ? sLse : sDsum) + stage * kBM + r;
      cp_async4(smem_addr(dst), src, ok);
    }
  };

  if (total > 0) {
    load_tile<kBN, D, kThreads>(sK, static_cast<const T*>(a.k) + kv_base + n0 * kv_stride,
                                kv_stride, a.S - n0, tid);
    load_tile<kBN, D, kThreads>(sV, static_cast<const T*>(a.v) + kv_base + n0 * kv_stride,
                                kv_stride, a.S - n0, tid);
    load_stage(0, 0);
  }
  cp_async_commit();

  const float sl2 = a.scale * kLog2e;
  const int key_w = warp * 16;  // this warp's first key within the tile
  float dk[kDK ? D / 8 : 1][4], dv[kDV ? D / 8 : 1][4];
#pragma unroll
  for (int j = 0; j < (kDK ? D / 8 : 1); ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = 0.f;
#pragma unroll
  for (int j = 0; j < (kDV ? D / 8 : 1); ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dv[j][e] = 0.f;
  uint32_t kf[Cfg::kCacheKV ? D / 16 : 1][4], vf[Cfg::kCacheKV ? D / 16 : 1][4];
  // Lane addressing (LaneAddr): K/V rows of this warp as A operands; Q/dO as
  // B operands (n = queries) and transposed B operands (k = queries); dS^T
  // transposed as the A operand of dS K; K transposed as its B operand.
  const int lr_a = (lane % 8) + ((lane >> 3) & 1) * 8, lc_a = lane >> 4;
  const int lr_b = (lane % 8) + (lane >> 4) * 8, lc_b = (lane >> 3) & 1;
  const LaneAddr<D> k_a(sK, key_w + lr_a, lc_a), v_a(sV, key_w + lr_a, lc_a);
  const LaneAddr<D> q_b(sQ, lr_b, lc_b), do_b(sdO, lr_b, lc_b);
  const LaneAddr<D> q_t(sQ, lr_a, lc_a), do_t(sdO, lr_a, lc_a);
  const int rg = warp % Cfg::kRowGroups;
  const int col0 = (warp / Cfg::kRowGroups) * Cfg::kDCols;  // dQ columns of this warp
  const uint32_t ds_a = smem_addr(sdS + swz<kBM>(lr_b, rg * 16 + lc_b * 8));
  // col0 folds into the base when it is a whole number of 8-chunk swizzle periods.
  constexpr bool kColFold = Cfg::kDCols % 64 == 0 || Cfg::kDSplit == 1;
  const LaneAddr<D> k_t(sK, lr_a, lc_a);

  for (int it = 0; it < total; ++it) {
    const int cur = it & 1;
    const int h = kvh * group + it / n_mb;
    const int m0 = (mb_first + it % n_mb) * kBM;
    cp_async_wait<0>();
    __syncthreads();  // stage `cur` landed; the previous dQ phase is done with sdS
    if (it + 1 < total) load_stage(it + 1, cur ^ 1);
    cp_async_commit();
    const uint32_t stage = cur * kBM * D * sizeof(T);
    const float* cLse = sLse + cur * kBM;
    const float* cDsum = sDsum + cur * kBM;
    const float slope2 = a.alibi ? a.alibi[h] * kLog2e : 0.f;  // ALiBi slope of head h, base 2

    if constexpr (Cfg::kCacheKV) {
      if (it == 0) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          ldsm_x4(kf[kk], k_a.at(0, kk));
          ldsm_x4(vf[kk], v_a.at(0, kk));
        }
      }
    }

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x kBM queries.
    float st[kBM / 8][4], dpt[kBM / 8][4];
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ak[4], av[4];
      if constexpr (Cfg::kCacheKV) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          ak[e] = kf[kk][e];
          av[e] = vf[kk][e];
        }
      } else {
        ldsm_x4(ak, k_a.at(0, kk));
        if constexpr (kDK) ldsm_x4(av, v_a.at(0, kk));
      }
#pragma unroll
      for (int np = 0; np < kBM / 16; ++np) {
        uint32_t bq[4], bo[4];
        ldsm_x4(bq, q_b.at(np * 16, kk) + stage);
        if constexpr (kDK) ldsm_x4(bo, do_b.at(np * 16, kk) + stage);  // dP^T feeds dS only
        mma16816<T>(st[2 * np], ak, bq[0], bq[1]);
        mma16816<T>(st[2 * np + 1], ak, bq[2], bq[3]);
        if constexpr (kDK) {
          mma16816<T>(dpt[2 * np], av, bo[0], bo[1]);
          mma16816<T>(dpt[2 * np + 1], av, bo[2], bo[3]);
        }
      }
    }

    // P^T and dS^T (st <- P^T, dpt <- dS^T).
    const bool need_mask = m0 + kBM > a.T || n0 + key_w + 16 > a.S ||
                           (a.causal && n0 + key_w + 15 > m0 + off) ||
                           (window > 0 && n0 + key_w <= m0 + kBM - 1 + off - window);
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j) {
      const int col = j * 8 + 2 * t4;
      const float2 l2 = *reinterpret_cast<const float2*>(cLse + col);
      const float2 ds2 = *reinterpret_cast<const float2*>(cDsum + col);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float lse = (e & 1) ? l2.y : l2.x;
        const float dsum = (e & 1) ? ds2.y : ds2.x;
        float x = fmaf(st[j][e], sl2, -lse * kLog2e);
        if (a.alibi) {
          const int key = n0 + key_w + g + (e >> 1) * 8;
          const int t = m0 + col + (e & 1);
          x = fmaf(slope2, float(key - t - off), x);
        }
        float p = exp2f(x);
        if (need_mask) {
          const int key = n0 + key_w + g + (e >> 1) * 8;
          const int t = m0 + col + (e & 1);
          if (key >= a.S || t >= a.T || (a.causal && key > t + off) ||
              (window > 0 && key <= t + off - window)) {
            p = 0.f;
          }
        }
        st[j][e] = p;
        if constexpr (kDK) dpt[j][e] = p * (dpt[j][e] - dsum);
      }
    }

    // dV += P^T dO, dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk) {
      uint32_t pa[4], sa[4];
      pa[0] = pack2<T>(st[2 * kk][0], st[2 * kk][1]);
      pa[1] = pack2<T>(st[2 * kk][2], st[2 * kk][3]);
      pa[2] = pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      pa[3] = pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
      if constexpr (kDK) {
        sa[0] = pack2<T>(dpt[2 * kk][0], dpt[2 * kk][1]);
        sa[1] = pack2<T>(dpt[2 * kk][2], dpt[2 * kk][3]);
        sa[2] = pack2<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
        sa[3] = pack2<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
        // dS^T to shared memory for the dQ phase.
        const int kr = key_w + g;
        *reinterpret_cast<uint32_t*>(sdS + swz<kBM>(kr, kk * 16 + 2 * t4)) = sa[0];
        *reinterpret_cast<uint32_t*>(sdS + swz<kBM>(kr + 8, kk * 16 + 2 * t4)) = sa[1];
        *reinterpret_cast<uint32_t*>(sdS + swz<kBM>(kr, kk * 16 + 8 + 2 * t4)) = sa[2];
        *reinterpret_cast<uint32_t*>(sdS + swz<kBM>(kr + 8, kk * 16 + 8 + 2 * t4)) = sa[3];
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bo[4], bq[4];
        if constexpr (kDV) ldsm_x4_trans(bo, do_t.at(kk * 16, dp) + stage);
        if constexpr (kDK) ldsm_x4_trans(bq, q_t.at(kk * 16, dp) + stage);
        if constexpr (kDV) {
          mma16816<T>(dv[2 * dp], pa, bo[0], bo[1]);
          mma16816<T>(dv[2 * dp + 1], pa, bo[2], bo[3]);
        }
        if constexpr (kDK) {
          mma16816<T>(dk[2 * dp], sa, bq[0], bq[1]);
          mma16816<T>(dk[2 * dp + 1], sa, bq[2], bq[3]);
        }
      }
    }
    if constexpr (!kDK) continue;  // the dV pass has no dQ phase
    __syncthreads();  // dS^T of every warp is in sdS

    // dQ[kBM, D] += dS[kBM, kBN] K[kBN, D]: warp -> (16-row group, column slice).
#pragma unroll
    for (int dc = 0; dc < Cfg::kDCols / Cfg::kDC; ++dc) {
      float acc[Cfg::kDC / 8][4];
#pragma unroll
      for (int j = 0; j < Cfg::kDC / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t sa[4];
        ldsm_x4_trans(sa, ds_a + kk * 16 * kBM * sizeof(T));
#pragma unroll
        for (int dp = 0; dp < Cfg::kDC / 16; ++dp) {
          uint32_t bk[4];
          if constexpr (kColFold) {
            ldsm_x4_trans(bk, k_t.at(kk * 16, (dc * Cfg::kDC) / 16 + dp) + col0 * sizeof(T));
          } else {
            const int r = kk * 16 + lr_a;
            const int c = col0 + dc * Cfg::kDC + dp * 16 + lc_a * 8;
            ldsm_x4_trans(bk, smem_addr(sK + swz<D>(r, c)));
          }
          mma16816<T>(acc[2 * dp], sa, bk[0], bk[1]);
          mma16816<T>(acc[2 * dp + 1], sa, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int t = m0 + rg * 16 + g + hf * 8;
        if (t < a.T) {
          float* dst = a.dq_acc + ((static_cast<long long>(b) * a.T + t) * a.H + h) * D + col0 +
                       dc * Cfg::kDC + 2 * t4;
#pragma unroll
          for (int j = 0; j < Cfg::kDC / 8; ++j)
            atomic_add2(dst + j * 8, acc[j][2 * hf], acc[j][2 * hf + 1]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // dK = scale * sum dS^T Q, dV = sum P^T dO: rows n0 + key_w + g (+8).
  T* dkp = static_cast<T*>(a.dk) + kv_base;
  T* dvp = static_cast<T*>(a.dv) + kv_base;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int key = n0 + key_w + g + hf * 8;
    if (key >= a.S) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const long long o = key * kv_stride + j * 8 + 2 * t4;
      if constexpr (kDK) {
        *reinterpret_cast<uint32_t*>(dkp + o) =
            pack2<T>(dk[j][2 * hf] * a.scale, dk[j][2 * hf + 1] * a.scale);
      }
      if constexpr (kDV) {
        *reinterpret_cast<uint32_t*>(dvp + o) = pack2<T>(dv[j][2 * hf], dv[j][2 * hf + 1]);
      }
    }
  }
}

// dsum[b,h,t] = sum_d dout * out for every query row (b, t, h): D / 8 parts
// of 16 bytes per row on a group of kLanes lanes (the power of two >= D / 8;
// D 192 leaves 8 of 32 idle), 32-bit index math (the launcher checks the row
// count fits), reduced with shuffles inside each lane group.
template <int D>
constexpr int dsum_lanes() {
  static_assert(D % 8 == 0 && D / 8 <= 32, "dsum: D / 8 parts on at most one warp");
  return D / 8 <= 8 ? 8 : (D / 8 <= 16 ? 16 : 32);
}

template <typename T, int D>
__global__ void __launch_bounds__(256) dsum_vec_kernel(const BwdArgs a, unsigned rows) {
  constexpr int kLanes = dsum_lanes<D>();
  const unsigned gid = blockIdx.x * 256u + threadIdx.x;
  const unsigned row = gid / kLanes;
  const unsigned part = gid % kLanes;
  float s = 0.f;
  if (row < rows && part < D / 8) {
    const size_t off = static_cast<size_t>(row) * D + part * 8;
    const uint4 o = *reinterpret_cast<const uint4*>(static_cast<const T*>(a.out) + off);
    const uint4 g = *reinterpret_cast<const uint4*>(static_cast<const T*>(a.dout) + off);
    const T* op = reinterpret_cast<const T*>(&o);
    const T* gp = reinterpret_cast<const T*>(&g);
#pragma unroll
    for (int i = 0; i < 8; ++i) s = fmaf(to_f32(op[i]), to_f32(gp[i]), s);
    // The dQ accumulator has the same [B, T, H, D] layout: clearing it here
    // saves a separate memset pass before the backward kernel.
    float4* acc = reinterpret_cast<float4*>(a.dq_acc + off);
    acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (row < rows && part == 0) {
    const unsigned h = row % a.H, bt = row / a.H;
    const unsigned t = bt % a.T, b = bt / a.T;
    a.dsum[(static_cast<size_t>(b) * a.H + h) * a.T + t] = s;
  }
}

// dq = scale * dq_acc, converted to T; n is a multiple of 8 (D is too).
template <typename T>
__global__ void dq_convert_kernel(const float* __restrict__ acc, T* __restrict__ dq, long long n,
                                  float scale) {
  const long long i = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (i >= n) return;
  const float4 x = *reinterpret_cast<const float4*>(acc + i);
  const float4 y = *reinterpret_cast<const float4*>(acc + i + 4);
  uint4 packed;
  packed.x = pack2<T>(x.x * scale, x.y * scale);
  packed.y = pack2<T>(x.z * scale, x.w * scale);
  packed.z = pack2<T>(y.x * scale, y.y * scale);
  packed.w = pack2<T>(y.z * scale, y.w * scale);
  *reinterpret_cast<uint4*>(dq + i) = packed;
}

template <typename T, int D, int kWarps, int kBM, bool kCache, int kMinBlocks = 1, bool kDV = true,
          bool kDK = true, bool kWin = false>
cudaError_t launch_bwd(const BwdArgs& a, cudaStream_t stream, int window = 0) {
  using Cfg = BwdCfg<T, D, kWarps, kBM, kCache>;
  auto kernel = bwd_kernel<T, D, kWarps, kBM, kCache, kMinBlocks, kDV, kDK, kWin>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Cfg::kSmem));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.S + Cfg::kBN - 1) / Cfg::kBN, a.Hkv, a.B);
  if constexpr (kWin) {
    kernel<<<grid, Cfg::kThreads, Cfg::kSmem, stream>>>(BwdWinArgs{a, window});
  } else {
    kernel<<<grid, Cfg::kThreads, Cfg::kSmem, stream>>>(a);
  }
  return cudaGetLastError();
}

// Tile variants (for tuning; 0 = default), as (warps = keys / 16, kBM queries, K/V
// fragments cached in registers):
//   D = 64:  1 = (4, 64, yes), 2 = (8, 64, yes), 3 = (8, 128, no), 4 = (4, 32, yes),
//            5 = (4, 64, no) default, 6 = (8, 64, no); 7 = 5 and 8 = 4 capped at 170
//            registers (three blocks per SM)
//   D = 128: 1 = (4, 32, no), 2 = (4, 64, no), 3 = (8, 64, no) default, 4 = (8, 32, no)
// Measured on an H200 (docs/PERFORMANCE.md): 5 beat 1 by 9% on the 124M
// training shape, 3 beat 1 by 3-11% at D = 128.
//   D = 192, 256: two passes (dV, then dK + dQ) of (4, 64, no) at 192 and
//            (4, 32, no) at 256; no variants
// f16 always takes the default.
template <typename T>
cudaError_t backward_typed(const BwdArgs& a, int variant, int window, cudaStream_t stream) {
  if (window > 0) {  // (attention.cu sends only D 64 / 128 here)
    return a.D == 64 ? launch_bwd<T, 64, 4, 64, false, 1, true, true, true>(a, stream, window)
                     : launch_bwd<T, 128, 8, 64, false, 1, true, true, true>(a, stream, window);
  }
  if (a.D == 192 || a.D == 256) {
    cudaError_t err = a.D == 192 ? launch_bwd<T, 192, 4, 64, false, 1, true, false>(a, stream)
                                 : launch_bwd<T, 256, 4, 32, false, 1, true, false>(a, stream);
    if (err != cudaSuccess) return err;
    return a.D == 192 ? launch_bwd<T, 192, 4, 64, false, 1, false, true>(a, stream)
                      : launch_bwd<T, 256, 4, 32, false, 1, false, true>(a, stream);
  }
  if constexpr (!std::is_same_v<T, __half>) {
    if (a.D == 64) {
      switch (variant) {
        case 1: return launch_bwd<T, 64, 4, 64, true>(a, stream);
        case 2: return launch_bwd<T, 64, 8, 64, true>(a, stream);
        case 3: return launch_bwd<T, 64, 8, 128, false>(a, stream);
        case 4: return launch_bwd<T, 64, 4, 32, true>(a, stream);
        case 5: return launch_bwd<T, 64, 4, 64, false>(a, stream);
        case 6: return launch_bwd<T, 64, 8, 64, false>(a, stream);
        case 7: return launch_bwd<T, 64, 4, 64, false, 3>(a, stream);
        case 8: return launch_bwd<T, 64, 4, 32, true, 3>(a, stream);
        default: break;
      }
    } else {
      switch (variant) {
        case 1: return launch_bwd<T, 128, 4, 32, false>(a, stream);
        case 2: return launch_bwd<T, 128, 4, 64, false>(a, stream);
        case 4: return launch_bwd<T, 128, 8, 32, false>(a, stream);
        default: break;
      }
    }
  }
  if (a.D == 64) return launch_bwd<T, 64, 4, 64, false>(a, stream);
  return launch_bwd<T, 128, 8, 64, false>(a, stream);
}

template <typename T>
cudaError_t backward_run(const BwdArgs& a, int variant, int window, cudaStream_t stream) {
  const long long n = static_cast<long long>(a.B) * a.T * a.H * a.D;
  cudaError_t err = cudaSuccess;  // (dq_acc is cleared by dsum_vec_kernel)
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const int lanes = a.D == 64 ? dsum_lanes<64>() : a.D == 128 ? dsum_lanes<128>() : 32;
  if (rows * lanes >= (1ll << 31)) return cudaErrorInvalidValue;  // 32-bit row indices
  const unsigned dsum_blocks = static_cast<unsigned>((rows * lanes + 255) / 256);
  const unsigned urows = static_cast<unsigned>(rows);
  switch (a.D) {
    case 64: dsum_vec_kernel<T, 64><<<dsum_blocks, 256, 0, stream>>>(a, urows); break;
    case 128: dsum_vec_kernel<T, 128><<<dsum_blocks, 256, 0, stream>>>(a, urows); break;
    case 192: dsum_vec_kernel<T, 192><<<dsum_blocks, 256, 0, stream>>>(a, urows); break;
    default: dsum_vec_kernel<T, 256><<<dsum_blocks, 256, 0, stream>>>(a, urows); break;
  }
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  err = backward_typed<T>(a, variant, window, stream);
  if (err != cudaSuccess) return err;
  const int threads = 256;
  const long long blocks = (n / 8 + threads - 1) / threads;
  dq_convert_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      a.dq_acc, static_cast<T*>(a.dq), n, a.scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t backward_tc(const BwdArgs& a, Elem e, int variant, int window, cudaStream_t stream) {
  if (e == Elem::bf16) return backward_run<__nv_bfloat16>(a, variant, window, stream);
  return backward_run<__half>(a, variant, window, stream);
}

}  // namespace el::cuda::attn
