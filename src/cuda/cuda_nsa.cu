// cuda_nsa.cu — the CUDA backend's NSA (native sparse attention) launchers
// (contracts in ops/backend.h "NSA"), the SIMT kernels of every branch, the
// and the block selection (the gated sum: cuda_nsa_gate.cu).
//
// Attention branches: bf16/f16 with D 64 / 128 (and a kv group of at most 16
// heads) run the tensor-core kernels of cuda_nsa_tc.cu; everything else (f32,
// other head dims) runs the SIMT kernels here: one warp per query row, keys
// visited one at a time with an online softmax (forward) or with p recomputed
// from the saved lse (backward: dq in registers, dk/dv by f32 atomics into a
// workspace, converted at the end). Slow but general: the tests' reference
// comparisons and f32 training use it.
//
// Selection: one warp per (b, kv group, t) recomputes p_cmp = exp(scale q.kc
// - lse) for the group's heads, sums them into per-block scores in shared
// memory (f32, fixed order) and takes the top n (ties to the lower index),
// written ascending with -1 padding.
#include <fmt/format.h>

#include <cmath>
#include <type_traits>

#include "cuda/attention.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_nsa.cuh"

namespace el::cuda {
namespace {

using nsa::Args;
using nsa::Rule;

constexpr int kSimtMaxD = 256;
constexpr int kPer = kSimtMaxD / 32;  // head-dim elements per lane

// Visits every key of query row (b, kvh, t) once: f(s) with warp-uniform s.
template <class F>
__device__ __forceinline__ void visit_keys(const Rule& r, int b, int kvh, int t, int T, int Hkv,
                                           int S, F&& f) {
  const long long p = static_cast<long long>(r.q_offset) + t;
  if (r.compressed) {
    const int nv = nsa::visible_compressed(p, r.block, r.stride, S);
    for (int s = 0; s < nv; ++s) f(s);
    return;
  }
  // Window keys [wlo, p]; wlo = p + 1 (empty) without a window.
  const long long wlo = r.window > 0 ? (p - r.window + 1 > 0 ? p - r.window + 1 : 0) : p + 1;
  if (r.blocks) {
    const int32_t* row = r.blocks + ((static_cast<long long>(b) * Hkv + kvh) * T + t) * r.n;
    for (int i = 0; i < r.n; ++i) {
      const int j = row[i];
      if (j < 0 || static_cast<long long>(j) * r.sb > p) continue;
      bool dup = false;
      for (int e = 0; e < i; ++e) dup |= row[e] == j;
      if (dup) continue;
      long long s1 = static_cast<long long>(j + 1) * r.sb;
      if (s1 > wlo) s1 = wlo;  // the block's keys inside the window are the window's
      for (long long s = static_cast<long long>(j) * r.sb; s < s1; ++s) f(static_cast<int>(s));
    }
  }
  for (long long s = wlo; s <= p; ++s) f(static_cast<int>(s));
}

template <class T>
__global__ void __launch_bounds__(128) simt_forward_kernel(const Args a) {
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const long long row = blockIdx.x * 4ll + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int h = static_cast<int>(row % a.H);
  const long long bt = row / a.H;
  const int t = static_cast<int>(bt % a.T), b = static_cast<int>(bt / a.T);
  const int kvh = h / (a.H / a.Hkv);
  const T* q = static_cast<const T*>(a.q) + row * a.D;
  const long long kbase = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * a.D;
  const long long ks = static_cast<long long>(a.Hkv) * a.D;
  const T* k = static_cast<const T*>(a.k) + kbase;
  const T* v = static_cast<const T*>(a.v) + kbase;
  float qr[kPer], acc[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < a.D ? to_f(q[d]) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  visit_keys(a.rule, b, kvh, t, a.T, a.Hkv, a.S, [&](int s) {
    const T* kr = k + s * ks;
    const T* vr = v + s * ks;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int d = lane + 32 * i;
      if (d < a.D) dot = fmaf(qr[i], to_f(kr[d]), dot);
    }
    const float sc = warp_sum(dot) * a.scale;
    const float mn = fmaxf(m, sc);
    const float c = __expf(m - mn);  // 0 for the first key (m = -inf)
    const float pp = __expf(sc - mn);
    l = l * c + pp;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int d = lane + 32 * i;
      if (d < a.D) acc[i] = fmaf(pp, to_f(vr[d]), acc[i] * c);
    }
    m = mn;
  });
  const float inv = l > 0.f ? 1.f / l : 0.f;
  T* o = static_cast<T*>(a.o) + row * a.D;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = lane + 32 * i;
    if (d < a.D) o[d] = from_f<T>(acc[i] * inv);
  }
  if (lane == 0) {
    a.lse[(static_cast<long long>(b) * a.H + h) * a.T + t] = l > 0.f ? m + logf(l) : -INFINITY;
  }
}

// dsum[b,h,t] = sum_d dout * out: one warp per query row.
template <class T>
__global__ void __launch_bounds__(128) dsum_kernel(const Args a) {
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const long long row = blockIdx.x * 4ll + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const T* g = static_cast<const T*>(a.dout) + row * a.D;
  const T* o = static_cast<const T*>(a.out) + row * a.D;
  float s = 0.f;
  for (int d = lane; d < a.D; d += 32) s = fmaf(to_f(g[d]), to_f(o[d]), s);
  s = warp_sum(s);
  if (lane == 0) {
    const int h = static_cast<int>(row % a.H);
    const long long bt = row / a.H;
    const long long t = bt % a.T, b = bt / a.T;
    a.dsum[(b * a.H + h) * a.T + t] = s;
  }
}

template <class T>
__global__ void __launch_bounds__(128) simt_backward_kernel(const Args a) {
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const long long row = blockIdx.x * 4ll + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int h = static_cast<int>(row % a.H);
  const long long bt = row / a.H;
  const int t = static_cast<int>(bt % a.T), b = static_cast<int>(bt / a.T);
  const int kvh = h / (a.H / a.Hkv);
  const long long li = (static_cast<long long>(b) * a.H + h) * a.T + t;
  const float lse = a.lse[li], dsum = a.dsum[li];
  const T* q = static_cast<const T*>(a.q) + row * a.D;
  const T* g = static_cast<const T*>(a.dout) + row * a.D;
  const long long kbase = (static_cast<long long>(b) * a.S * a.Hkv + kvh) * a.D;
  const long long ks = static_cast<long long>(a.Hkv) * a.D;
  const T* k = static_cast<const T*>(a.k) + kbase;
  const T* v = static_cast<const T*>(a.v) + kbase;
  float* dk = a.dk_acc + kbase;
  float* dv = a.dv_acc + kbase;
  float qr[kPer], gr[kPer], dq[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < a.D ? to_f(q[d]) : 0.f;
    gr[i] = d < a.D ? to_f(g[d]) : 0.f;
    dq[i] = 0.f;
  }
  if (lse != -INFINITY) {
    visit_keys(a.rule, b, kvh, t, a.T, a.Hkv, a.S, [&](int s) {
      const T* kr = k + s * ks;
      const T* vr = v + s * ks;
      float dot = 0.f, dp = 0.f;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int d = lane + 32 * i;
        if (d < a.D) {
          dot = fmaf(qr[i], to_f(kr[d]), dot);
          dp = fmaf(gr[i], to_f(vr[d]), dp);
        }
      }
      dot = warp_sum(dot);
      dp = warp_sum(dp);
      const float p = __expf(dot * a.scale - lse);
      const float ds = p * (dp - dsum) * a.scale;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int d = lane + 32 * i;
        if (d < a.D) {
          dq[i] = fmaf(ds, to_f(kr[d]), dq[i]);
          atomicAdd(dk + s * ks + d, ds * qr[i]);
          atomicAdd(dv + s * ks + d, p * gr[i]);
        }
      }
    });
  }
  T* out = static_cast<T*>(a.dq) + row * a.D;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = lane + 32 * i;
    if (d < a.D) out[d] = from_f<T>(dq[i]);
  }
}

template <class T>
__global__ void convert_kernel(const float* __restrict__ src, T* __restrict__ dst, long long n) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    dst[i] = from_f<T>(src[i]);
  }
}

// The n best of scores sc[0, jt] (each >= 0, sc[jt] = +inf) into `row`,
// ascending, -1 past the blocks that exist; ties go to the lower index. One
// warp; picks is shared scratch of n ints. (sc is consumed.)
__device__ void pick_blocks(float* sc, int* picks, int jt, int n, int lane, int32_t* row) {
  const int take = n < jt + 1 ? n : jt + 1;
  for (int k = 0; k < take; ++k) {
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = lane; j <= jt; j += 32) {
      const float x = sc[j];
      if (x > best) {  // lanes walk j upwards: ties keep the lower index
        best = x;
        bi = j;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ob > best || (ob == best && oi < bi)) {
        best = ob;
        bi = oi;
      }
    }
    if (lane == 0) {
      picks[k] = bi;
      sc[bi] = -INFINITY;  // taken (scores are >= 0, so never picked again)
    }
    __syncwarp();
  }
  if (lane == 0) {
    for (int i = 1; i < take; ++i) {  // ascending (insertion sort, n is small)
      const int x = picks[i];
      int j = i - 1;
      while (j >= 0 && picks[j] > x) {
        picks[j + 1] = picks[j];
        --j;
      }
      picks[j + 1] = x;
    }
  }
  __syncwarp();
  for (int i = lane; i < n; i += 32) row[i] = i < take ? picks[i] : -1;
}

// One warp per (b, kv group, t); scores of blocks [0, jt] in shared memory
// (jmax floats), then the n picks after them.
template <class T>
__global__ void __launch_bounds__(32) select_kernel(const Args a, int32_t* out, int n, int sb,
                                                    int jmax) {
  extern __shared__ float sc[];  // [jmax] scores, then [n] picks (as int)
  int* picks = reinterpret_cast<int*>(sc + jmax);
  const int lane = threadIdx.x;
  const int t = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const Rule& r = a.rule;
  const long long p = static_cast<long long>(r.q_offset) + t;
  const int jt = static_cast<int>(p / sb);
  for (int j = lane; j <= jt; j += 32) sc[j] = 0.f;
  __syncwarp();
  const int nv = nsa::visible_compressed(p, r.block, r.stride, a.S);
  const int group = a.H / a.Hkv;
  const long long ks = static_cast<long long>(a.Hkv) * a.D;
  const T* kc = static_cast<const T*>(a.k) + (static_cast<long long>(b) * a.S * a.Hkv + kvh) * a.D;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float lse = a.lse[(static_cast<long long>(b) * a.H + h) * a.T + t];
    if (lse == -INFINITY) continue;
    const T* q = static_cast<const T*>(a.q) + ((static_cast<long long>(b) * a.T + t) * a.H + h) * a.D;
    float qr[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int d = lane + 32 * i;
      qr[i] = d < a.D ? to_f(q[d]) : 0.f;
    }
    for (int i = 0; i < nv; ++i) {
      const long long start = static_cast<long long>(i) * r.stride;
      const long long j = start / sb;
      if (start + r.block > (j + 1) * sb || j > jt) continue;  // not inside one block
      const T* kr = kc + i * ks;
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int d = lane + 32 * e;
        if (d < a.D) dot = fmaf(qr[e], to_f(kr[d]), dot);
      }
      dot = warp_sum(dot);
      if (lane == 0) sc[j] += __expf(dot * a.scale - lse);
      __syncwarp();
    }
  }
  __syncwarp();
  if (lane == 0) sc[jt] = INFINITY;  // the query's own block always wins
  __syncwarp();
  pick_blocks(sc, picks, jt, n, lane, out + ((static_cast<long long>(b) * a.Hkv + kvh) * a.T + t) * n);
}

// The same selection with a compressed token per lane (the kernel above
// walks them one at a time, a dependent load + warp reduction each: 3.8 ms at
// 16K tokens, most of NSA's forward). Lane i loads its token's key row once in
// 16-byte packs and scores it against every query head of the group (in
// shared memory), summing the heads' probabilities in a register; the scores
// go to their select block with a shared-memory atomic. For bf16/f16,
// D % 8 == 0, groups of at most kFastGroup heads and 16-byte aligned key rows.
constexpr int kFastGroup = 16;
template <class T>
__global__ void __launch_bounds__(32) select_fast_kernel(const Args a, int32_t* out, int n, int sb,
                                                         int jmax) {
  extern __shared__ float sc[];  // [jmax] scores, [n] picks, [group][D] queries, [group] lse
  int* picks = reinterpret_cast<int*>(sc + jmax);
  const int group = a.H / a.Hkv, D = a.D;
  float* qs = sc + ((jmax + n + 3) & ~3);  // 16-byte aligned: read as float4 below
  float* ls = qs + group * D;
  const int lane = threadIdx.x;
  const int t = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const Rule& r = a.rule;
  const long long p = static_cast<long long>(r.q_offset) + t;
  const int jt = static_cast<int>(p / sb);
  for (int j = lane; j <= jt; j += 32) sc[j] = 0.f;
  for (int e = lane; e < group * D; e += 32) {
    const int h = kvh * group + e / D;
    qs[e] = to_f(static_cast<const T*>(a.q)[((static_cast<long long>(b) * a.T + t) * a.H + h) * D +
                                             e % D]);
  }
  for (int h = lane; h < group; h += 32)
    ls[h] = a.lse[(static_cast<long long>(b) * a.H + kvh * group + h) * a.T + t];
  __syncwarp();
  const int nv = nsa::visible_compressed(p, r.block, r.stride, a.S);
  const long long ks = static_cast<long long>(a.Hkv) * D;
  const T* kc = static_cast<const T*>(a.k) + (static_cast<long long>(b) * a.S * a.Hkv + kvh) * D;
  for (int i = lane; i < nv; i += 32) {
    const long long start = static_cast<long long>(i) * r.stride;
    const long long j = start / sb;
    if (start + r.block > (j + 1) * sb || j > jt) continue;  // not inside one block
    // (host dispatch: only 2-byte T, where 16 bytes are one pack of 8)
    const uint4* kr = reinterpret_cast<const uint4*>(kc + i * ks);
    float acc[kFastGroup];
#pragma unroll
    for (int h = 0; h < kFastGroup; ++h) acc[h] = 0.f;
    for (int d0 = 0; d0 < D; d0 += 8) {
      const uint4 pk = kr[d0 / 8];
      Pack<T, 8> kv;
      memcpy(&kv, &pk, sizeof(pk));
      float kf[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) kf[e] = to_f(kv.v[e]);
#pragma unroll
      for (int h = 0; h < kFastGroup; ++h) {
        if (h < group) {
          // Two 16-byte shared loads for 8 FMAs (the same address in every
          // lane: a broadcast), not a 4-byte load per FMA.
          const float4 qa = *reinterpret_cast<const float4*>(qs + h * D + d0);
          const float4 qb = *reinterpret_cast<const float4*>(qs + h * D + d0 + 4);
          acc[h] = fmaf(qa.x, kf[0], acc[h]);
          acc[h] = fmaf(qa.y, kf[1], acc[h]);
          acc[h] = fmaf(qa.z, kf[2], acc[h]);
          acc[h] = fmaf(qa.w, kf[3], acc[h]);
          acc[h] = fmaf(qb.x, kf[4], acc[h]);
          acc[h] = fmaf(qb.y, kf[5], acc[h]);
          acc[h] = fmaf(qb.z, kf[6], acc[h]);
          acc[h] = fmaf(qb.w, kf[7], acc[h]);
        }
      }
    }
    float w = 0.f;
#pragma unroll
    for (int h = 0; h < kFastGroup; ++h) {
      if (h < group && ls[h] != -INFINITY) w += __expf(acc[h] * a.scale - ls[h]);
    }
    atomicAdd(&sc[j], w);
  }
  __syncwarp();
  if (lane == 0) sc[jt] = INFINITY;  // the query's own block always wins
  __syncwarp();
  pick_blocks(sc, picks, jt, n, lane, out + ((static_cast<long long>(b) * a.Hkv + kvh) * a.T + t) * n);
}

// ---- host side ----------------------------------------------------------------------

nsa::Elem elem_of(DType t) {
  return t == DType::bf16 ? nsa::Elem::bf16 : t == DType::f16 ? nsa::Elem::f16 : nsa::Elem::f32;
}

void check_launch(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    throw Exception(cuda_error(rc, what, __FILE__, __LINE__));
  }
}

int narrow(int64_t x, const char* what) {
  EL_CUDA_ENSURE(x >= 0 && x < (int64_t{1} << 31), "cuda NSA: {} = {} does not fit 32 bits", what,
                 x);
  return static_cast<int>(x);
}

// The geometry of q[B,T,H,D] against k[B,S,Hkv,D], checked.
Args make_args(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  for (const Tensor* t : TensorPtrs{&q, &k, &v}) expect_cuda_dtype(*t, q.dtype(), op);
  EL_CUDA_ENSURE(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() &&
                     k.dim(0) == q.dim(0) && k.dim(3) == q.dim(3) && k.dim(2) > 0 &&
                     q.dim(2) % k.dim(2) == 0,
                 "cuda {}: q {} and k {} / v {} (expected q[B,T,H,D], k/v[B,S,Hkv,D], H % Hkv == 0)",
                 op, shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  EL_CUDA_ENSURE(q.dim(3) <= kSimtMaxD,
                 "cuda {}: head dim {} is not supported (at most {})", op, q.dim(3), kSimtMaxD);
  Args a{};
  a.q = q.raw();
  a.k = k.raw();
  a.v = v.raw();
  a.B = narrow(q.dim(0), "B");
  a.T = narrow(q.dim(1), "T");
  a.H = narrow(q.dim(2), "H");
  a.D = narrow(q.dim(3), "D");
  a.S = narrow(k.dim(1), "S");
  a.Hkv = narrow(k.dim(2), "Hkv");
  a.scale = scale;
  // Element offsets use 64-bit math; the row counts of the SIMT grids must fit.
  narrow(q.numel() / a.D, "B*T*H");
  return a;
}

Rule compressed_rule(int64_t block, int64_t stride, int64_t q_offset) {
  Rule r{};
  r.compressed = 1;
  r.block = narrow(block, "block");
  r.stride = narrow(stride, "stride");
  r.q_offset = narrow(q_offset, "q_offset");
  EL_CUDA_ENSURE(r.block > 0 && r.stride > 0, "cuda NSA: block {} and stride {} must be > 0",
                 r.block, r.stride);
  return r;
}

Rule sparse_rule(const Args& a, const Tensor& blocks, int64_t sb, int64_t window,
                 int64_t q_offset) {
  Rule r{};
  r.sb = narrow(sb, "select_block");
  r.window = narrow(window, "window");
  r.q_offset = narrow(q_offset, "q_offset");
  EL_CUDA_ENSURE(static_cast<int64_t>(r.q_offset) + a.T <= a.S,
                 "cuda NSA sparse attention: q_offset {} + T {} > S {}", r.q_offset, a.T, a.S);
  if (blocks.defined() && blocks.numel() > 0) {
    expect_cuda_dtype(blocks, DType::i32, "nsa sparse attention (blocks)");
    EL_CUDA_ENSURE(blocks.ndim() == 4 && blocks.dim(0) == a.B && blocks.dim(1) == a.Hkv &&
                       blocks.dim(2) == a.T && r.sb > 0,
                   "cuda NSA sparse attention: blocks {} for B {} Hkv {} T {} (select_block {})",
                   shape_str(blocks.shape()), a.B, a.Hkv, a.T, r.sb);
    r.blocks = blocks.data<int32_t>();
    r.n = narrow(blocks.dim(3), "select_count");
  }
  return r;
}

void run_forward(Args& a, DType dt, const char* what) {
  const cudaStream_t stream = ctx().stream;
  const nsa::Elem e = elem_of(dt);
  if (nsa::tc_supported(a, e)) {
    check_launch(nsa::tc_forward(a, e, stream), what);
    return;
  }
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const unsigned grid = static_cast<unsigned>((rows + 3) / 4);
  EL_DISPATCH_FLOAT(dt, T, (simt_forward_kernel<T><<<grid, 128, 0, stream>>>(a)));
  check_launch(cudaGetLastError(), what);
}

// dq overwritten, dk/dv overwritten (sums over the group's heads and queries).
void run_backward(Args& a, DType dt, const char* what) {
  const cudaStream_t stream = ctx().stream;
  const Device dev = Device::cuda(ctx().device);
  const long long rows = static_cast<long long>(a.B) * a.T * a.H;
  const unsigned grid = static_cast<unsigned>((rows + 3) / 4);
  Tensor dsum = Tensor::empty({a.B, a.H, a.T}, DType::f32, dev);
  a.dsum = dsum.data<float>();
  EL_DISPATCH_FLOAT(dt, T, (dsum_kernel<T><<<grid, 128, 0, stream>>>(a)));
  check_launch(cudaGetLastError(), what);
  const nsa::Elem e = elem_of(dt);
  const bool tc = nsa::tc_supported(a, e);
  a.t_split = tc ? nsa::tc_split(a) : 0;
  const Shape ks{a.B, a.S, a.Hkv, a.D};
  Tensor dk_acc, dv_acc;  // f32 accumulators (SIMT, split key-major pass)
  if (!tc || a.t_split > 0) {
    dk_acc = Tensor::zeros(ks, DType::f32, dev);
    dv_acc = Tensor::zeros(ks, DType::f32, dev);
    a.dk_acc = dk_acc.data<float>();
    a.dv_acc = dv_acc.data<float>();
  }
  if (tc) {
    check_launch(nsa::tc_backward(a, e, stream), what);
    if (a.t_split == 0) return;
  } else {
    EL_DISPATCH_FLOAT(dt, T, (simt_backward_kernel<T><<<grid, 128, 0, stream>>>(a)));
    check_launch(cudaGetLastError(), what);
  }
  const long long n = shape_numel(ks);
  const int cgrid = grid_for(n, 256);
  EL_DISPATCH_FLOAT(dt, T, (convert_kernel<T><<<cgrid, 256, 0, stream>>>(
                               a.dk_acc, static_cast<T*>(a.dk), n)));
  check_launch(cudaGetLastError(), what);
  EL_DISPATCH_FLOAT(dt, T, (convert_kernel<T><<<cgrid, 256, 0, stream>>>(
                               a.dv_acc, static_cast<T*>(a.dv), n)));
  check_launch(cudaGetLastError(), what);
}

// The sliding-window branch's forward over a whole sequence (no block table;
// the queries are the last T of the S keys) is banded causal attention: the
// flash forward with a window (attention.cuh) loads each K/V tile once per
// 128 query rows and skips the tiles outside the band, where the query-major
// NSA kernel serves 16 / G positions per warp and reloads the band for each
// (16K tokens, 14 / 2 heads, D 64 on an H100: 0.170 -> 0.105 ms). The
// backward likewise runs the flash backward's window instantiation where it
// has one (bf16 / f16, D 64 / 128; attention_bwd.cu), the NSA kernels elsewhere.
bool window_as_flash(const Args& a, const Tensor& blocks, int64_t window, int64_t q_offset) {
  return !(blocks.defined() && blocks.numel() > 0) && window > 0 &&
         q_offset + a.T == static_cast<int64_t>(a.S);
}

AttentionShape flash_shape(const Args& a, int64_t window) {
  AttentionShape s{a.B, a.T, a.S, a.H, a.Hkv, a.D, a.scale, true};
  s.window = narrow(window, "window");
  return s;
}

}  // namespace

void nsa_compressed_attention_forward(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                      float scale, int64_t block, int64_t stride, int64_t q_offset,
                                      Tensor& out, Tensor& lse) {
  const char* what = "cuda nsa_compressed_attention_forward";
  Args a = make_args(what, q, kc, vc, scale);
  expect_cuda_dtype(out, q.dtype(), what);
  expect_cuda_dtype(lse, DType::f32, what);
  a.rule = compressed_rule(block, stride, q_offset);
  a.o = out.raw();
  a.lse = lse.data<float>();
  if (q.numel() == 0) return;
  run_forward(a, q.dtype(), what);
}

void nsa_compressed_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& kc,
                                       const Tensor& vc, const Tensor& out, const Tensor& lse,
                                       float scale, int64_t block, int64_t stride,
                                       int64_t q_offset, Tensor& dq, Tensor& dkc, Tensor& dvc) {
  const char* what = "cuda nsa_compressed_attention_backward";
  Args a = make_args(what, q, kc, vc, scale);
  for (const Tensor* t : TensorPtrs{&dout, &out, &dq, &dkc, &dvc})
    expect_cuda_dtype(*t, q.dtype(), what);
  expect_cuda_dtype(lse, DType::f32, what);
  a.rule = compressed_rule(block, stride, q_offset);
  a.dout = dout.raw();
  a.out = out.raw();
  a.lse = const_cast<float*>(lse.data<float>());
  a.dq = dq.raw();
  a.dk = dkc.raw();
  a.dv = dvc.raw();
  run_backward(a, q.dtype(), what);
}

void nsa_sparse_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& blocks, int64_t select_block, int64_t window,
                                  float scale, int64_t q_offset, Tensor& out, Tensor& lse) {
  const char* what = "cuda nsa_sparse_attention_forward";
  Args a = make_args(what, q, k, v, scale);
  expect_cuda_dtype(out, q.dtype(), what);
  expect_cuda_dtype(lse, DType::f32, what);
  a.rule = sparse_rule(a, blocks, select_block, window, q_offset);
  a.o = out.raw();
  a.lse = lse.data<float>();
  if (q.numel() == 0) return;
  if (window_as_flash(a, blocks, window, q_offset)) {
    check_launch(attention_forward(q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(),
                                   flash_shape(a, window), q.dtype(), ctx().stream),
                 what);
    return;
  }
  run_forward(a, q.dtype(), what);
}

void nsa_sparse_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& blocks, const Tensor& out,
                                   const Tensor& lse, int64_t select_block, int64_t window,
                                   float scale, int64_t q_offset, Tensor& dq, Tensor& dk,
                                   Tensor& dv) {
  const char* what = "cuda nsa_sparse_attention_backward";
  Args a = make_args(what, q, k, v, scale);
  for (const Tensor* t : TensorPtrs{&dout, &out, &dq, &dk, &dv})
    expect_cuda_dtype(*t, q.dtype(), what);
  expect_cuda_dtype(lse, DType::f32, what);
  a.rule = sparse_rule(a, blocks, select_block, window, q_offset);
  a.dout = dout.raw();
  a.out = out.raw();
  a.lse = const_cast<float*>(lse.data<float>());
  a.dq = dq.raw();
  a.dk = dk.raw();
  a.dv = dv.raw();
  if (q.numel() > 0 && window_as_flash(a, blocks, window, q_offset)) {
    const AttentionShape s = flash_shape(a, window);
    const void* ptrs[] = {dout.raw(), q.raw(),  k.raw(),  v.raw(),
                          out.raw(),  dq.raw(), dk.raw(), dv.raw()};
    if (attention_window_backward_supported(s, q.dtype(), ptrs, 8)) {
      const size_t bytes = attention_backward_workspace_bytes(s, q.dtype());
      Tensor ws = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, q.device());
      check_launch(attention_backward(dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(),
                                      lse.data<float>(), dq.raw(), dk.raw(), dv.raw(), ws.raw(), s,
                                      q.dtype(), ctx().stream),
                   what);
      return;
    }
  }
  run_backward(a, q.dtype(), what);
}

void nsa_select_blocks(const Tensor& q, const Tensor& kc, const Tensor& lse, float scale,
                       int64_t compress_block, int64_t compress_stride, int64_t select_block,
                       int64_t q_offset, Tensor& blocks) {
  const char* what = "cuda nsa_select_blocks";
  Args a = make_args(what, q, kc, kc, scale);
  expect_cuda_dtype(lse, DType::f32, what);
  expect_cuda_dtype(blocks, DType::i32, what);
  a.rule = compressed_rule(compress_block, compress_stride, q_offset);
  a.lse = const_cast<float*>(lse.data<float>());
  const int sb = narrow(select_block, "select_block");
  EL_CUDA_ENSURE(sb > 0 && blocks.ndim() == 4 && blocks.dim(0) == a.B &&
                     blocks.dim(1) == a.Hkv && blocks.dim(2) == a.T && blocks.dim(3) > 0,
                 "{}: blocks {} for B {} Hkv {} T {} (select_block {})", what,
                 shape_str(blocks.shape()), a.B, a.Hkv, a.T, sb);
  const int n = narrow(blocks.dim(3), "select_count");
  if (a.T == 0) return;
  // Scores of blocks 0 .. (q_offset + T - 1) / sb in shared memory.
  const int64_t jmax = (q_offset + a.T - 1) / sb + 1;
  const int64_t group = a.H / a.Hkv;
  // (bf16/f16 only: a 16-byte load is one 8-element pack of them)
  const bool fast = dtype_size(q.dtype()) == 2 && group <= kFastGroup && a.D % 8 == 0 &&
                    (static_cast<int64_t>(a.Hkv) * a.D * dtype_size(q.dtype())) % 16 == 0 &&
                    aligned16(kc.raw());
  const size_t smem = static_cast<size_t>(jmax + n + (fast ? 3 + group * (a.D + 1) : 0)) * sizeof(float);
  EL_CUDA_ENSURE(smem <= 200 * 1024,
                 "{}: {} select blocks of {} positions need {} KiB of shared memory for the "
                 "scores (at most 200 KiB: shorter sequences or larger select blocks)",
                 what, jmax, sb, smem / 1024);
  const cudaStream_t stream = ctx().stream;
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.Hkv),
                  static_cast<unsigned>(a.B));
  EL_DISPATCH_FLOAT(q.dtype(), T, ({
                      auto kernel = fast ? select_fast_kernel<T> : select_kernel<T>;
                      check_launch(cudaFuncSetAttribute(
                                       kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)),
                                   what);
                      kernel<<<grid, 32, smem, stream>>>(a, blocks.data<int32_t>(), n, sb,
                                                         static_cast<int>(jmax));
                    }));
  check_launch(cudaGetLastError(), what);
}

}  // namespace el::cuda
