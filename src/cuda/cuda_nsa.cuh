// cuda_nsa.cuh — internal to src/cuda/cuda_nsa*.cu: the argument block and
// the key rule shared by the NSA (native sparse attention) kernels.
//
// Every NSA attention branch is "query row (b, t, h) over a key set":
//   compressed: keys i < nv(p) = visible compressed tokens (i*stride + block - 1 <= p)
//   sparse:     keys s <= p with s / sb in the row's block list, or s > p - window
// with p = q_offset + t (contracts: ops/backend.h "NSA"). NsaRule carries
// what decides membership; the kernels enumerate keys so that every key of
// the set is visited exactly once (a selected block's keys that also lie in
// the window are taken by the window, duplicate block entries are skipped).
//
// Paths (cuda_nsa.cu picks): tensor cores (cuda_nsa_tc.cu: bf16/f16, D 64 or
// 128, group H/Hkv <= 16, 16-byte aligned rows) and SIMT (cuda_nsa.cu: any
// float dtype, D <= 256).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace el::cuda::nsa {

struct Rule {
  int compressed;        // 1: compressed rule (block/stride), 0: sparse (blocks/window)
  int block, stride;     // compressed token geometry
  const int32_t* blocks; // sparse: [B, Hkv, T, n] or nullptr
  int n;                 // entries per row of `blocks`
  int sb;                // select block (sparse)
  int window;            // 0 = no window (sparse)
  int q_offset;
};

// Pointers are device pointers of the storage dtype unless noted; layouts:
// q/out/dout/dq [B,T,H,D]; k/v [B,S,Hkv,D] (S = Nc for the compressed rule);
// lse/dsum [B,H,T] f32.
struct Args {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;     // backward
  const void* out;      // backward (forward output)
  void* o;              // forward output
  float* lse;           // forward output / backward input
  void* dq;
  void* dk;
  void* dv;
  float* dk_acc;        // SIMT backward: f32 [B,S,Hkv,D] accumulators
  float* dv_acc;
  float* dsum;          // backward: rowsum(dout * out), f32 [B,H,T]
  int t_split;          // tensor-core backward: positions per key-major block (0 = all);
                        // > 0 adds dk/dv into dk_acc/dv_acc (zeroed f32) instead
  int B, T, S, H, Hkv, D;
  float scale;
  Rule rule;
};

enum class Elem { f32, bf16, f16 };

// Visible compressed tokens of position p (capped by nc).
__host__ __device__ inline int visible_compressed(long long p, int block, int stride, int nc) {
  if (p < block - 1) return 0;
  const long long v = (p - block + 1) / stride + 1;
  return v < nc ? static_cast<int>(v) : nc;
}

// ---- tensor-core launchers (cuda_nsa_tc.cu) ----------------------------------------
// Whether the tensor-core kernels take this call (dtype, D, group size).
bool tc_supported(const Args& a, Elem e);
cudaError_t tc_forward(const Args& a, Elem e, cudaStream_t stream);
// Positions per key-major block for this call (0 = one block walks them all).
// The compressed branch has few keys (Nc = S / stride) and the selection
// branch's early blocks are read by most positions, so one block per key tile
// would serialise long scans; split, each block adds its partial dK / dV to
// f32 accumulators (one atomic per element and block).
int tc_split(const Args& a);
// dq (query-major pass) and dk/dv (key-major pass); a.dsum must be filled,
// and with a.t_split > 0 the zeroed f32 a.dk_acc / a.dv_acc, which the caller
// converts into dk / dv afterwards.
cudaError_t tc_backward(const Args& a, Elem e, cudaStream_t stream);

}  // namespace el::cuda::nsa
