// attention.cu — the public attention launchers (attention.cuh): argument
// checks, empty shapes, workspace layout, and the choice between the
// tensor-core kernels (attention_fwd.cu / attention_bwd.cu) and the SIMT ones
// (attention_simt.cu).
#include <cmath>
#include <cstdint>

#include "cuda/attention.cuh"
#include "cuda/attention_device.cuh"

namespace el::cuda {
namespace {

int g_forward_variant = 0;
int g_backward_variant = 0;

constexpr size_t kAlign = 256;
size_t round_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

bool shape_ok(const AttentionShape& s) {
  return s.B >= 0 && s.T >= 0 && s.S >= 0 && s.H > 0 && s.Hkv > 0 && s.H % s.Hkv == 0 &&
         s.D > 0 && s.D <= attn::kSimtMaxD && std::isfinite(s.scale) && s.window >= 0 &&
         (s.window == 0 || s.causal);
}

bool elem_of(DType t, attn::Elem* e) {
  switch (t) {
    case DType::f32:
      *e = attn::Elem::f32;
      return true;
    case DType::bf16:
      *e = attn::Elem::bf16;
      return true;
    case DType::f16:
      *e = attn::Elem::f16;
      return true;
    default:
      return false;
  }
}

// The tensor-core kernels: 16-bit types, D in {64, 128, 192, 256} (192: MLA's
// 128 + 64 q/k heads).
bool tc_shape(const AttentionShape& s, attn::Elem e) {
  if (s.window > 0) return e != attn::Elem::f32 && (s.D == 64 || s.D == 128);  // SIMT otherwise
  return e != attn::Elem::f32 && (s.D == 64 || s.D == 128 || s.D == 192 || s.D == 256);
}

size_t dq_acc_bytes(const AttentionShape& s) {
  return round_up(size_t(s.B) * size_t(s.T) * size_t(s.H) * size_t(s.D) * sizeof(float));
}

}  // namespace

cudaError_t attention_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                              const AttentionShape& s, DType dtype, cudaStream_t stream) {
  attn::Elem e;
  if (!shape_ok(s) || !elem_of(dtype, &e)) return cudaErrorInvalidValue;
  if (s.B == 0 || s.T == 0) return cudaSuccess;
  if (!q || !out || !lse || (s.S > 0 && (!k || !v))) return cudaErrorInvalidValue;
  const attn::FwdArgs a{q,   k,   v,   out,   lse,     s.B,      s.T,
                        s.S, s.H, s.Hkv, s.D, s.scale, s.causal, s.alibi_slopes,
                        s.window};
  // S == 0: every row sees no key (out = 0, lse = -inf); the SIMT kernel reads no key.
  if (s.S > 0 && tc_shape(s, e) && aligned16(q) && aligned16(k) && aligned16(v) &&
      aligned16(out)) {
    return attn::forward_tc(a, e, g_forward_variant, stream);
  }
  return attn::forward_simt(a, e, stream);
}

size_t attention_backward_workspace_bytes(const AttentionShape& s, DType dtype) {
  attn::Elem e;
  if (!shape_ok(s) || !elem_of(dtype, &e)) return kAlign;
  size_t bytes = round_up(size_t(s.B) * size_t(s.H) * size_t(s.T) * sizeof(float));  // dsum
  if (tc_shape(s, e)) bytes += dq_acc_bytes(s);
  return bytes > 0 ? bytes : kAlign;
}

cudaError_t attention_backward(const void* dout, const void* q, const void* k, const void* v,
                               const void* out, const float* lse, void* dq, void* dk, void* dv,
                               void* workspace, const AttentionShape& s, DType dtype,
                               cudaStream_t stream) {
  attn::Elem e;
  if (!shape_ok(s) || !elem_of(dtype, &e)) return cudaErrorInvalidValue;
  const size_t esize = dtype_size(dtype);
  const size_t q_bytes = size_t(s.B) * size_t(s.T) * size_t(s.H) * size_t(s.D) * esize;
  const size_t kv_bytes = size_t(s.B) * size_t(s.S) * size_t(s.Hkv) * size_t(s.D) * esize;
  if ((q_bytes > 0 && (!dout || !q || !out || !lse || !dq)) ||
      (kv_bytes > 0 && (!k || !v || !dk || !dv))) {
    return cudaErrorInvalidValue;
  }
  if (q_bytes == 0 || kv_bytes == 0) {
    // No query or no key: every gradient is zero.
    if (q_bytes > 0) {
      if (cudaError_t err = cudaMemsetAsync(dq, 0, q_bytes, stream); err != cudaSuccess) return err;
    }
    if (kv_bytes > 0) {
      if (cudaError_t err = cudaMemsetAsync(dk, 0, kv_bytes, stream); err != cudaSuccess) return err;
      return cudaMemsetAsync(dv, 0, kv_bytes, stream);
    }
    return cudaSuccess;
  }
  if (!workspace || !aligned16(workspace)) return cudaErrorInvalidValue;

  const bool tc = tc_shape(s, e) && aligned16(dout) && aligned16(q) && aligned16(k) &&
                  aligned16(v) && aligned16(dq) && aligned16(dk) && aligned16(dv);
  char* ws = static_cast<char*>(workspace);
  float* dq_acc = nullptr;
  if (tc_shape(s, e)) {  // the layout attention_backward_workspace_bytes promised
    dq_acc = reinterpret_cast<float*>(ws);
    ws += dq_acc_bytes(s);
  }
  float* dsum = reinterpret_cast<float*>(ws);
  const attn::BwdArgs a{dout, q,      k,   v,   out, lse, dq,      dk,    dv,     dq_acc,
                        dsum, s.B,    s.T, s.S, s.H, s.Hkv, s.D,   s.scale, s.causal,
                        s.alibi_slopes};
  if (s.window > 0 && !tc) return cudaErrorInvalidValue;  // no SIMT window backward
  // (the tensor-core path computes dsum itself)
  if (tc) return attn::backward_tc(a, e, g_backward_variant, s.window, stream);
  if (cudaError_t err = attn::backward_dsum(a, e, stream); err != cudaSuccess) return err;
  return attn::backward_simt(a, e, stream);
}

bool attention_window_backward_supported(const AttentionShape& s, DType dtype,
                                         const void* const* ptrs, int n_ptrs) {
  attn::Elem e;
  if (!shape_ok(s) || !elem_of(dtype, &e) || !tc_shape(s, e)) return false;
  for (int i = 0; i < n_ptrs; ++i) {
    if (!aligned16(ptrs[i])) return false;
  }
  return true;
}

namespace detail {
void set_attention_variants(int forward_variant, int backward_variant) {
  g_forward_variant = forward_variant;
  g_backward_variant = backward_variant;
}
int attention_forward_variant() { return g_forward_variant; }
int attention_backward_variant() { return g_backward_variant; }
}  // namespace detail

}  // namespace el::cuda
