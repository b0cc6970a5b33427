// cuda_nsa_tc.cu — tensor-core kernels of the NSA attention branches (bf16 /
// f16, D 64 or 128, f32 accumulation), built from the project's mma.sync /
// ldmatrix / cp.async pieces (attention_device.cuh). Contracts: cuda_nsa.cuh.
//
// Query-major kernel (forward and the dq pass of the backward). One warp per
// thread block owns a 16-row tile: R = 16 / G consecutive positions times the
// G query heads of one kv group (NSA's "group-centric" loading: the heads of a
// group share their selected blocks, so each K/V chunk is loaded once for all
// of them). The warp walks chunks of 32 keys, double-buffered with cp.async:
//   sparse:     the distinct selected blocks of its R positions (only the
//               part of each block before the window of the last position),
//               then the window span [p_min - w + 1, p_max];
//   compressed: [0, visible(p_max)).
// Per element a mask applies the exact rule of each row (ownership: a key in
// both a selected block and the row's window counts in the window chunk), so
// no key is counted twice and no dense T x S pass exists. Forward: online
// softmax (base 2) as attention_fwd.cu. dq pass: P = exp2(S - lse), dP = dO
// V^T, dS = P (dP - Dsum), dQ += dS K, all in registers, written once.
//
// Key-major kernel (dk/dv of the backward, no atomics). One block of 4 warps
// owns 64 keys of one kv head (16 per warp, dK/dV in registers). It scans
// the positions that can see any of its keys (compressed: a suffix; window:
// a band; selection: the positions whose block list names one of its blocks,
// read from the block table) and compacts them, in order, into a ring of
// positions; full tiles of kBM rows (positions x heads) are gathered into
// shared memory and processed as in attention_bwd.cu: S^T = K Q^T, P^T,
// dP^T = V dO^T, dS^T, dV += P^T dO, dK += dS^T Q, with the same per-element
// rule as the query-major pass.
#include <type_traits>

#include "cuda/attention_device.cuh"
#include "cuda/cuda_nsa.cuh"

namespace el::cuda::nsa {
namespace {

using attn::kLn2;
using attn::kLog2e;
using attn::LaneAddr;
using attn::ldsm_x4;
using attn::ldsm_x4_trans;
using attn::load_tile;
using attn::mma16816;
using attn::pack2;
using attn::smem_addr;
using attn::swz;

constexpr int kChunk = 32;   // keys per chunk (query-major)
constexpr int kKeys = 64;    // keys per block (key-major)
constexpr int kRing = 256;   // positions the key-major ring holds
constexpr int kScan = 128;   // positions scanned per round (= threads)

__device__ __forceinline__ long long min_ll(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long max_ll(long long a, long long b) { return a > b ? a : b; }

// Whether key s is visible to a row at position p (p < 0: padding row).
// chunk_j >= 0: s comes from selected block chunk_j and row_sel says whether
// the row selected it; chunk_j < 0: s comes from the window (or the
// compressed prefix).
__device__ __forceinline__ bool qmajor_visible(const Rule& r, int s, int p, int chunk_j,
                                               bool row_sel) {
  if (p < 0) return false;
  if (r.compressed) return static_cast<long long>(s) * r.stride + r.block - 1 <= p;
  if (s > p) return false;
  const bool in_win = r.window > 0 && s > p - r.window;
  return chunk_j < 0 ? in_win : (row_sel && !in_win);
}

template <typename T, int D, bool kDQ>
struct QCfg {
  static constexpr size_t kTileBytes = size_t(16) * D * sizeof(T);
  static constexpr size_t kSmem =
      (kDQ ? 2 : 1) * kTileBytes + 4 * size_t(kChunk) * D * sizeof(T);  // + 2 * 16 n ints
};

template <typename T, int D, bool kDQ>
__global__ void __launch_bounds__(32) qmajor_kernel(const Args a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);           // [16][D]
  T* sdO = sQ + 16 * D;                             // [16][D] (dq pass)
  T* sK = sQ + (kDQ ? 2 : 1) * 16 * D;              // [2][kChunk][D]
  T* sV = sK + 2 * kChunk * D;                      // [2][kChunk][D]
  int* sRow = reinterpret_cast<int*>(sV + 2 * kChunk * D);  // [R][n] block lists
  const Rule& r = a.rule;
  int* sJ = sRow + 16 * (r.n > 0 ? r.n : 1);                // distinct blocks

  const int lane = threadIdx.x, g = lane / 4, t4 = lane % 4;
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int G = a.H / a.Hkv, R = 16 / G;
  const int t0 = blockIdx.x * R;
  const int npos = min(R, a.T - t0);
  const int nrows = npos * G;
  const int p0 = r.q_offset + t0, p_max = p0 + npos - 1;
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  const T* k = static_cast<const T*>(a.k) + kv_base;
  const T* v = static_cast<const T*>(a.v) + kv_base;
  // Row rho of the tile: position t0 + rho / G, head kvh * G + rho % G.
  auto row_offset = [&](int rho) {
    return ((static_cast<long long>(b) * a.T + t0 + rho / G) * a.H + kvh * G + rho % G) * D;
  };
  auto lse_index = [&](int rho) {
    return (static_cast<long long>(b) * a.H + kvh * G + rho % G) * a.T + t0 + rho / G;
  };

  // Gather the tile's Q (and dO) rows.
  {
    const T* q = static_cast<const T*>(a.q);
    const T* dout = static_cast<const T*>(a.dout);
    for (int idx = lane; idx < 16 * (D / 8); idx += 32) {
      const int rho = idx / (D / 8), c = idx % (D / 8);
      const bool ok = rho < nrows;
      const long long off = ok ? row_offset(rho) + c * 8 : 0;
      cp_async16(smem_addr(sQ + swz<D>(rho, c * 8)), q + off, ok);
      if constexpr (kDQ) cp_async16(smem_addr(sdO + swz<D>(rho, c * 8)), dout + off, ok);
    }
  }

  // Window span and the distinct selected blocks of the tile's positions.
  const long long wlo_max = (!r.compressed && r.window > 0) ? p_max - r.window + 1 : (1ll << 40);
  int nj = 0;
  if (!r.compressed && r.blocks) {
    const int32_t* bl = r.blocks + ((static_cast<long long>(b) * a.Hkv + kvh) * a.T + t0) * r.n;
    const int ne = npos * r.n;
    for (int i = lane; i < ne; i += 32) sRow[i] = bl[i];
    __syncwarp();
    for (int base = 0; base < ne; base += 32) {
      const int i = base + lane;
      bool keep = false;
      if (i < ne) {
        const int j = sRow[i];
        const long long js = static_cast<long long>(j) * r.sb;
        keep = j >= 0 && js <= p0 + i / r.n && js < wlo_max;
        for (int e = 0; e < i && keep; ++e) {
          const int je = sRow[e];
          if (je == j && js <= p0 + e / r.n) keep = false;  // an earlier valid entry has it
        }
      }
      const unsigned m = __ballot_sync(0xffffffffu, keep);
      if (keep) sJ[nj + __popc(m & ((1u << lane) - 1u))] = sRow[i];
      nj += __popc(m);
    }
    __syncwarp();
  }

  // Chunk iterator (warp-uniform state): blocks, then the window / prefix.
  int it_bi = -1, it_phase = r.compressed ? 1 : 0, it_j = -1;
  long long it_s = 0, it_e = 0;
  auto next_chunk = [&](int& c0, int& c1, int& cj) -> bool {
    while (true) {
      if (it_s < it_e) {
        c0 = static_cast<int>(it_s);
        c1 = static_cast<int>(min_ll(it_s + kChunk, it_e));
        cj = it_j;
        it_s += kChunk;
        return true;
      }
      if (it_phase == 0) {
        if (++it_bi < nj) {
          it_j = sJ[it_bi];
          it_s = static_cast<long long>(it_j) * r.sb;
          it_e = min_ll(min_ll(it_s + r.sb, static_cast<long long>(p_max) + 1), wlo_max);
          continue;
        }
        it_phase = 1;
        it_j = -1;
        if (r.window > 0) {
          it_s = max_ll(0, static_cast<long long>(p0) - r.window + 1);
          it_e = static_cast<long long>(p_max) + 1;
        }
        continue;
      }
      if (it_phase == 1 && r.compressed) {
        it_phase = 2;
        it_s = 0;
        it_e = visible_compressed(p_max, r.block, r.stride, a.S);
        continue;
      }
      return false;
    }
  };

  // This lane's two rows (g, g + 8): positions (-1 = padding) and statistics.
  const int p_lo = g < nrows ? p0 + g / G : -1;
  const int p_hi = g + 8 < nrows ? p0 + (g + 8) / G : -1;
  float lse2[2] = {0.f, 0.f}, dsum[2] = {0.f, 0.f};
  if constexpr (kDQ) {
    if (p_lo >= 0) {
      lse2[0] = a.lse[lse_index(g)] * kLog2e;
      dsum[0] = a.dsum[lse_index(g)];
    }
    if (p_hi >= 0) {
      lse2[1] = a.lse[lse_index(g + 8)] * kLog2e;
      dsum[1] = a.dsum[lse_index(g + 8)];
    }
    // Rows with no key (lse -inf) contribute nothing: mask them out.
  }
  const bool dead_lo = kDQ && lse2[0] == -INFINITY, dead_hi = kDQ && lse2[1] == -INFINITY;

  int c0 = 0, c1 = 0, cj = -1;
  bool has = next_chunk(c0, c1, cj);
  if (has) {
    load_tile<kChunk, D, 32>(sK, k + c0 * kv_stride, kv_stride, a.S - c0, lane);
    load_tile<kChunk, D, 32>(sV, v + c0 * kv_stride, kv_stride, a.S - c0, lane);
  }
  cp_async_commit();

  const LaneAddr<D> kb(sK, (lane % 8) + (lane >> 4) * 8, (lane >> 3) & 1);  // K / V as B (keys = n)
  const LaneAddr<D> vb(sV, (lane % 8) + (lane >> 4) * 8, (lane >> 3) & 1);
  const LaneAddr<D> vt(sV, (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);  // V / K as B^T
  const LaneAddr<D> kt(sK, (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
  const float sl2 = a.scale * kLog2e;

  uint32_t qf[D / 16][4], df[kDQ ? D / 16 : 1][4];
  float acc[D / 8][4];  // O (forward) or dQ (dq pass)
#pragma unroll
  for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  float row_m[2] = {-INFINITY, -INFINITY}, row_l[2] = {0.f, 0.f};

  int stage = 0;
  bool first = true;
  while (has) {
    int n0 = 0, n1 = 0, nj2 = -1;
    const bool has_next = next_chunk(n0, n1, nj2);
    cp_async_wait<0>();
    __syncwarp();
    if (first) {
      const LaneAddr<D> qa(sQ, (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qf[kk], qa.at(0, kk));
      if constexpr (kDQ) {
        const LaneAddr<D> da(sdO, (lane % 8) + ((lane >> 3) & 1) * 8, lane >> 4);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(df[kk], da.at(0, kk));
      }
      first = false;
    }
    if (has_next) {
      const int ns = stage ^ 1;
      load_tile<kChunk, D, 32>(sK + ns * kChunk * D, k + n0 * kv_stride, kv_stride, a.S - n0, lane);
      load_tile<kChunk, D, 32>(sV + ns * kChunk * D, v + n0 * kv_stride, kv_stride, a.S - n0, lane);
    }
    cp_async_commit();

    // Which rows selected this chunk's block (lane rho < 16 answers for row rho).
    bool sel_lo = false, sel_hi = false;
    if (cj >= 0) {
      bool mine = false;
      if (lane < nrows) {
        const int* lst = sRow + (lane / G) * r.n;
        for (int e = 0; e < r.n; ++e) mine |= lst[e] == cj;
      }
      const unsigned m = __ballot_sync(0xffffffffu, mine);
      sel_lo = (m >> g) & 1u;
      sel_hi = (m >> (g + 8)) & 1u;
    }
    const uint32_t soff = stage * kChunk * D * sizeof(T);

    // S = Q K^T over the chunk's 32 keys.
    float s[kChunk / 8][4];
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int np = 0; np < kChunk / 16; ++np) {
        uint32_t bk[4];
        ldsm_x4(bk, kb.at(np * 16, kk) + soff);
        mma16816<T>(s[2 * np], qf[kk], bk[0], bk[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], bk[2], bk[3]);
      }
    // Mask: keys outside [c0, c1) or not visible to the row.
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = c0 + j * 8 + 2 * t4 + (e & 1);
        const bool hi = e >> 1;
        const bool vis = key < c1 && qmajor_visible(r, key, hi ? p_hi : p_lo, cj,
                                                    hi ? sel_hi : sel_lo);
        if (!vis) s[j][e] = -INFINITY;
      }

    if constexpr (!kDQ) {
      // Online softmax (base 2).
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kChunk / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * hf], s[j][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_m[hf], mx * sl2);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(row_m[hf] - m_use);
        row_m[hf] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kChunk / 8; ++j)
#pragma unroll
          for (int e = 2 * hf; e < 2 * hf + 2; ++e) {
            const float p = exp2f(fmaf(s[j][e], sl2, -m_use));
            s[j][e] = p;
            sum += p;
          }
        row_l[hf] = row_l[hf] * alpha + sum;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          acc[j][2 * hf] *= alpha;
          acc[j][2 * hf + 1] *= alpha;
        }
      }
      // O += P V.
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        uint32_t pa[4];
        pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t bv[4];
          ldsm_x4_trans(bv, vt.at(kk * 16, dp) + soff);
          mma16816<T>(acc[2 * dp], pa, bv[0], bv[1]);
          mma16816<T>(acc[2 * dp + 1], pa, bv[2], bv[3]);
        }
      }
    } else {
      // dP = dO V^T.
      float dp[kChunk / 8][4];
#pragma unroll
      for (int j = 0; j < kChunk / 8; ++j) dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
        for (int np = 0; np < kChunk / 16; ++np) {
          uint32_t bv[4];
          ldsm_x4(bv, vb.at(np * 16, kk) + soff);
          mma16816<T>(dp[2 * np], df[kk], bv[0], bv[1]);
          mma16816<T>(dp[2 * np + 1], df[kk], bv[2], bv[3]);
        }
      // P = exp2(S scale log2e - lse log2e), dS = P (dP - Dsum).
#pragma unroll
      for (int j = 0; j < kChunk / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hf = e >> 1;
          const bool dead = hf ? dead_hi : dead_lo;
          const float p =
              (s[j][e] == -INFINITY || dead) ? 0.f : exp2f(fmaf(s[j][e], sl2, -lse2[hf]));
          s[j][e] = p * (dp[j][e] - dsum[hf]);
        }
      // dQ += dS K.
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        uint32_t sa[4];
        sa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        sa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        sa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        sa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int d2 = 0; d2 < D / 16; ++d2) {
          uint32_t bk[4];
          ldsm_x4_trans(bk, kt.at(kk * 16, d2) + soff);
          mma16816<T>(acc[2 * d2], sa, bk[0], bk[1]);
          mma16816<T>(acc[2 * d2 + 1], sa, bk[2], bk[3]);
        }
      }
    }
    c0 = n0;
    c1 = n1;
    cj = nj2;
    has = has_next;
    stage ^= 1;
  }
  cp_async_wait<0>();

  // Epilogue: this lane's rows g and g + 8, two columns per 8-column tile.
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int rho = g + hf * 8;
    float mul = a.scale;
    if constexpr (!kDQ) {
      float l = row_l[hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      mul = l > 0.f ? 1.f / l : 0.f;
      if (t4 == 0 && rho < nrows) {
        a.lse[lse_index(rho)] =
            (l > 0.f && row_m[hf] != -INFINITY) ? (row_m[hf] + log2f(l)) * kLn2 : -INFINITY;
      }
    }
    if (rho < nrows) {
      T* dst = static_cast<T*>(kDQ ? a.dq : a.o) + row_offset(rho);
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        *reinterpret_cast<uint32_t*>(dst + j * 8 + 2 * t4) =
            pack2<T>(acc[j][2 * hf] * mul, acc[j][2 * hf + 1] * mul);
      }
    }
  }
}

template <typename T, int D, int kBM>
struct KCfg {
  static constexpr size_t kSmem = (2 * size_t(kKeys) * D + 2 * size_t(kBM) * D) * sizeof(T) +
                                  size_t(kBM) * (2 * sizeof(float) + sizeof(int) +
                                                 sizeof(unsigned long long)) +
                                  size_t(kRing) * (sizeof(int) + sizeof(unsigned long long)) +
                                  8 * sizeof(int);
};

template <typename T, int D, int kBM>
__global__ void __launch_bounds__(128) kmajor_kernel(const Args a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // [kKeys][D]
  T* sV = sK + kKeys * D;                  // [kKeys][D]
  T* sQ = sV + kKeys * D;                  // [kBM][D]
  T* sdO = sQ + kBM * D;                   // [kBM][D]
  unsigned long long* sSel = reinterpret_cast<unsigned long long*>(sdO + kBM * D);  // [kBM]
  unsigned long long* ringSel = sSel + kBM;                                          // [kRing]
  float* sLse = reinterpret_cast<float*>(ringSel + kRing);                           // [kBM]
  float* sDs = sLse + kBM;                                                           // [kBM]
  int* sP = reinterpret_cast<int*>(sDs + kBM);                                       // [kBM]
  int* ringT = sP + kBM;                                                             // [kRing]
  int* sCnt = ringT + kRing;                                                         // [4]

  const Rule& r = a.rule;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int nsplit = a.t_split > 0 ? (a.T + a.t_split - 1) / a.t_split : 1;
  const int split = blockIdx.x % nsplit;
  const int c0 = (blockIdx.x / nsplit) * kKeys, kvh = blockIdx.y, b = blockIdx.z;
  const int G = a.H / a.Hkv, P = kBM / G;
  const long long q_stride = static_cast<long long>(a.H) * D;
  const long long kv_stride = static_cast<long long>(a.Hkv) * D;
  const long long kv_base = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  const int c_last = min(c0 + kKeys, a.S) - 1;  // last key of this block
  const int j0 = r.compressed ? 0 : c0 / r.sb, j1 = r.compressed ? 0 : c_last / r.sb;

  load_tile<kKeys, D, 128>(sK, static_cast<const T*>(a.k) + kv_base + c0 * kv_stride, kv_stride,
                           a.S - c0, tid);
  load_tile<kKeys, D, 128>(sV, static_cast<const T*>(a.v) + kv_base + c0 * kv_stride, kv_stride,
                           a.S - c0, tid);
  cp_async_commit();

  // Positions that can see a key of [c0, c_last].
  long long t_lo, t_hi = a.T;
  if (r.compressed) {
    t_lo = static_cast<long long>(c0) * r.stride + r.block - 1 - r.q_offset;
  } else {
    t_lo = static_cast<long long>(c0) - r.q_offset;
    if (!r.blocks) t_hi = min_ll(a.T, static_cast<long long>(c_last) + r.window - r.q_offset);
  }
  t_lo = max_ll(t_lo, 0);
  if (a.t_split > 0) {  // this block's share of the positions
    t_lo = max_ll(t_lo, static_cast<long long>(split) * a.t_split);
    t_hi = min_ll(t_hi, static_cast<long long>(split + 1) * a.t_split);
  }
  bool any = false;  // whether a tile was processed (split blocks with none add nothing)

  // This lane's two keys and their block bits.
  const int key_w = warp * 16;
  const int key_lo = c0 + key_w + g, key_hi = key_lo + 8;
  const int bit_lo = r.compressed ? 0 : key_lo / r.sb - j0;
  const int bit_hi = r.compressed ? 0 : key_hi / r.sb - j0;
  auto visible = [&](int key, int bit, int p, unsigned long long sel) {
    if (key >= a.S || p < 0) return false;
    if (r.compressed) return static_cast<long long>(key) * r.stride + r.block - 1 <= p;
    if (key > p) return false;
    if (r.window > 0 && key > p - r.window) return true;
    return bit < 64 && ((sel >> bit) & 1ull) != 0;
  };

  const int lr_a = (lane % 8) + ((lane >> 3) & 1) * 8, lc_a = lane >> 4;
  const int lr_b = (lane % 8) + (lane >> 4) * 8, lc_b = (lane >> 3) & 1;
  const LaneAddr<D> k_a(sK, key_w + lr_a, lc_a), v_a(sV, key_w + lr_a, lc_a);
  const LaneAddr<D> q_b(sQ, lr_b, lc_b), do_b(sdO, lr_b, lc_b);
  const LaneAddr<D> q_t(sQ, lr_a, lc_a), do_t(sdO, lr_a, lc_a);
  const float sl2 = a.scale * kLog2e;

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.f;

  int head = 0, cnt = 0;
  long long scan = t_lo;
  while (scan < t_hi || cnt > 0) {
    if (scan < t_hi && cnt < P) {
      // Scan kScan positions; keep those that see a key, in order.
      const long long t = scan + tid;
      bool keep = false;
      unsigned long long sel = 0;
      if (t < t_hi) {
        const long long p = r.q_offset + t;
        if (r.compressed) {
          keep = true;
        } else {
          keep = r.window > 0 && c0 <= p && c_last > p - r.window;
          if (r.blocks) {
            const int32_t* row = r.blocks + ((static_cast<long long>(b) * a.Hkv + kvh) * a.T + t) * r.n;
            for (int e = 0; e < r.n; ++e) {
              const int j = row[e];
              if (j >= j0 && j <= j1 && static_cast<long long>(j) * r.sb <= p) sel |= 1ull << (j - j0);
            }
          }
          keep = keep || sel != 0;
        }
      }
      const unsigned m = __ballot_sync(0xffffffffu, keep);
      if (lane == 0) sCnt[warp] = __popc(m);
      __syncthreads();
      int before = 0, total = 0;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        before += w < warp ? sCnt[w] : 0;
        total += sCnt[w];
      }
      if (keep) {
        const int slot = (head + cnt + before + __popc(m & ((1u << lane) - 1u))) % kRing;
        ringT[slot] = static_cast<int>(t);
        ringSel[slot] = sel;
      }
      __syncthreads();
      cnt += total;
      scan += kScan;
      continue;
    }
    // A tile of np positions x G heads.
    const int np = min(P, cnt), rows = np * G;
    any = true;
    for (int rho = tid; rho < kBM; rho += 128) {
      if (rho < rows) {
        const int slot = (head + rho / G) % kRing;
        const int t = ringT[slot];
        const long long li = (static_cast<long long>(b) * a.H + kvh * G + rho % G) * a.T + t;
        sP[rho] = r.q_offset + t;
        sSel[rho] = ringSel[slot];
        sLse[rho] = a.lse[li] * kLog2e;
        sDs[rho] = a.dsum[li];
      } else {
        sP[rho] = -1;
        sSel[rho] = 0;
        sLse[rho] = 0.f;
        sDs[rho] = 0.f;
      }
    }
    for (int idx = tid; idx < kBM * (D / 8); idx += 128) {
      const int rho = idx / (D / 8), c = idx % (D / 8);
      const bool ok = rho < rows;
      long long off = 0;
      if (ok) {
        const int t = ringT[(head + rho / G) % kRing];
        off = (static_cast<long long>(b) * a.T + t) * q_stride + (kvh * G + rho % G) * D + c * 8;
      }
      cp_async16(smem_addr(sQ + swz<D>(rho, c * 8)), static_cast<const T*>(a.q) + off, ok);
      cp_async16(smem_addr(sdO + swz<D>(rho, c * 8)), static_cast<const T*>(a.dout) + off,
                       ok);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x kBM rows.
    float st[kBM / 8][4], dpt[kBM / 8][4];
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ak[4], av[4];
      ldsm_x4(ak, k_a.at(0, kk));
      ldsm_x4(av, v_a.at(0, kk));
#pragma unroll
      for (int np2 = 0; np2 < kBM / 16; ++np2) {
        uint32_t bq[4], bo[4];
        ldsm_x4(bq, q_b.at(np2 * 16, kk));
        ldsm_x4(bo, do_b.at(np2 * 16, kk));
        mma16816<T>(st[2 * np2], ak, bq[0], bq[1]);
        mma16816<T>(st[2 * np2 + 1], ak, bq[2], bq[3]);
        mma16816<T>(dpt[2 * np2], av, bo[0], bo[1]);
        mma16816<T>(dpt[2 * np2 + 1], av, bo[2], bo[3]);
      }
    }
    // P^T and dS^T with the rule of each (key, row).
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j) {
      const int col = j * 8 + 2 * t4;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rho = col + (e & 1);
        const bool hi = e >> 1;
        const bool vis = visible(hi ? key_hi : key_lo, hi ? bit_hi : bit_lo, sP[rho], sSel[rho]);
        const float p = vis ? exp2f(fmaf(st[j][e], sl2, -sLse[rho])) : 0.f;
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - sDs[rho]);
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
      sa[0] = pack2<T>(dpt[2 * kk][0], dpt[2 * kk][1]);
      sa[1] = pack2<T>(dpt[2 * kk][2], dpt[2 * kk][3]);
      sa[2] = pack2<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
      sa[3] = pack2<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bo[4], bq[4];
        ldsm_x4_trans(bo, do_t.at(kk * 16, dp));
        ldsm_x4_trans(bq, q_t.at(kk * 16, dp));
        mma16816<T>(dv[2 * dp], pa, bo[0], bo[1]);
        mma16816<T>(dv[2 * dp + 1], pa, bo[2], bo[3]);
        mma16816<T>(dk[2 * dp], sa, bq[0], bq[1]);
        mma16816<T>(dk[2 * dp + 1], sa, bq[2], bq[3]);
      }
    }
    __syncthreads();  // everyone is done with this tile's shared rows
    head = (head + np) % kRing;
    cnt -= np;
  }
  cp_async_wait<0>();

  if (a.t_split > 0) {
    if (!any) return;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int key = hf ? key_hi : key_lo;
      if (key >= a.S) continue;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const long long o = kv_base + key * kv_stride + j * 8 + 2 * t4;
        atomicAdd(reinterpret_cast<float2*>(a.dk_acc + o),
                  make_float2(dk[j][2 * hf] * a.scale, dk[j][2 * hf + 1] * a.scale));
        atomicAdd(reinterpret_cast<float2*>(a.dv_acc + o), make_float2(dv[j][2 * hf], dv[j][2 * hf + 1]));
      }
    }
    return;
  }
  T* dkp = static_cast<T*>(a.dk) + kv_base;
  T* dvp = static_cast<T*>(a.dv) + kv_base;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int key = hf ? key_hi : key_lo;
    if (key >= a.S) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const long long o = key * kv_stride + j * 8 + 2 * t4;
      *reinterpret_cast<uint32_t*>(dkp + o) =
          pack2<T>(dk[j][2 * hf] * a.scale, dk[j][2 * hf + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dvp + o) = pack2<T>(dv[j][2 * hf], dv[j][2 * hf + 1]);
    }
  }
}

template <typename T, int D, bool kDQ>
cudaError_t launch_qmajor(const Args& a, cudaStream_t stream) {
  const int G = a.H / a.Hkv, R = 16 / G;
  const size_t smem = QCfg<T, D, kDQ>::kSmem + size_t(16) * (a.rule.n > 0 ? a.rule.n : 1) * 2 * sizeof(int);
  auto kernel = qmajor_kernel<T, D, kDQ>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.T + R - 1) / R, a.Hkv, a.B);
  kernel<<<grid, 32, smem, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int D, int kBM>
cudaError_t launch_kmajor(const Args& a, cudaStream_t stream) {
  const size_t smem = KCfg<T, D, kBM>::kSmem;
  auto kernel = kmajor_kernel<T, D, kBM>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const int nsplit = a.t_split > 0 ? (a.T + a.t_split - 1) / a.t_split : 1;
  const dim3 grid(((a.S + kKeys - 1) / kKeys) * nsplit, a.Hkv, a.B);
  kernel<<<grid, 128, smem, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_typed(const Args& a, cudaStream_t stream) {
  return a.D == 64 ? launch_qmajor<T, 64, false>(a, stream) : launch_qmajor<T, 128, false>(a, stream);
}

template <typename T>
cudaError_t backward_typed(const Args& a, cudaStream_t stream) {
  cudaError_t err = a.D == 64 ? launch_qmajor<T, 64, true>(a, stream)
                              : launch_qmajor<T, 128, true>(a, stream);
  if (err != cudaSuccess) return err;
  return a.D == 64 ? launch_kmajor<T, 64, 64>(a, stream) : launch_kmajor<T, 128, 32>(a, stream);
}

bool aligned(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool tc_supported(const Args& a, Elem e) {
  if (e == Elem::f32 || (a.D != 64 && a.D != 128)) return false;
  const int G = a.H / a.Hkv;
  if (G < 1 || G > 16) return false;
  if (a.rule.n > 64) return false;  // the per-tile block lists live in shared memory
  const void* ptrs[] = {a.q, a.k, a.v, a.o, a.dout, a.out, a.dq, a.dk, a.dv};
  for (const void* p : ptrs)
    if (!aligned(p)) return false;
  return true;
}

int tc_split(const Args& a) {
  // The window branch reads a band of positions per key tile: no split.
  if (!a.rule.compressed && !a.rule.blocks) return 0;
  constexpr int kPositions = 512;
  return a.T > 2 * kPositions ? kPositions : 0;
}

cudaError_t tc_forward(const Args& a, Elem e, cudaStream_t stream) {
  if (e == Elem::bf16) return forward_typed<__nv_bfloat16>(a, stream);
  return forward_typed<__half>(a, stream);
}

cudaError_t tc_backward(const Args& a, Elem e, cudaStream_t stream) {
  if (e == Elem::bf16) return backward_typed<__nv_bfloat16>(a, stream);
  return backward_typed<__half>(a, stream);
}

}  // namespace el::cuda::nsa
