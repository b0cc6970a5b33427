// cuda_adamw.cu — AdamW with decoupled weight decay (the CPU's formula):
//   g = grad * grad_scale
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
// adamw_update: p is the parameter itself (f32, bf16 or f16; updated in f32
// and rounded back). adamw_update_master: p is the f32 master copy, and the
// parameter (any float dtype, what the forward reads) is overwritten with the
// rounded master, so no update is ever lost to bf16 rounding.
// The bias corrections are computed on the host in f64, as on the CPU.
// adamw_update_many applies the same update to many parameters with one
// launch per kMaxSlots tensors (a model has hundreds of small ones: norms,
// biases), each block taking one kChunk-element chunk of one tensor.
#include <cmath>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

struct AdamWArgs {
  float lr, b1, b2, eps, wd, gs, bc1, bc2;
};

// TP: storage of the value updated in f32 (param, or the f32 master);
// TG: gradient; TO: the rounded copy written to `out` (when out != nullptr).
template <class TP, class TG, class TO>
__global__ void adamw_kernel(TP* __restrict__ p, const TG* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, TO* __restrict__ out, int64_t n, AdamWArgs a) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = to_f<TG>(grad[i]) * a.gs;
    const float mi = a.b1 * m[i] + (1.f - a.b1) * g;
    const float vi = a.b2 * v[i] + (1.f - a.b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / a.bc1, vhat = vi / a.bc2;
    const float pv = to_f<TP>(p[i]);
    const float np = pv - a.lr * (mhat / (sqrtf(vhat) + a.eps) + a.wd * pv);
    p[i] = from_f<TP>(np);
    if (out) out[i] = from_f<TO>(np);
  }
}

AdamWArgs args_of(const AdamWStep& st) {
  EL_CUDA_ENSURE(st.step >= 1, "cuda adamw_update: step must be >= 1, got {}", st.step);
  AdamWArgs a{};
  a.lr = st.lr;
  a.b1 = st.beta1;
  a.b2 = st.beta2;
  a.eps = st.eps;
  a.wd = st.weight_decay;
  a.gs = st.grad_scale;
  a.bc1 = 1.f - static_cast<float>(std::pow(static_cast<double>(st.beta1), st.step));
  a.bc2 = 1.f - static_cast<float>(std::pow(static_cast<double>(st.beta2), st.step));
  return a;
}

constexpr int kMaxSlots = 24;
constexpr int64_t kChunk = 16384;

struct MultiArgs {
  void* p[kMaxSlots];  // value updated in f32: the param, or its f32 master
  const void* g[kMaxSlots];
  void* out[kMaxSlots];  // the param when p is its master, else nullptr
  float* m[kMaxSlots];
  float* v[kMaxSlots];
  int64_t n[kMaxSlots];
  int first_chunk[kMaxSlots + 1];
  DType tp[kMaxSlots], tg[kMaxSlots], tout[kMaxSlots];
  int count;
};

// The slot and element range [lo, hi) of this block's chunk.
__device__ __forceinline__ int chunk_of_block(const MultiArgs& a, int64_t& lo, int64_t& hi) {
  const int chunk = static_cast<int>(blockIdx.x);
  int s = 0;
  while (s + 1 < a.count && a.first_chunk[s + 1] <= chunk) ++s;
  lo = int64_t{chunk - a.first_chunk[s]} * kChunk;
  hi = lo + kChunk < a.n[s] ? lo + kChunk : a.n[s];
  return s;
}

__global__ void adamw_multi_kernel(MultiArgs a, AdamWArgs h) {
  int64_t lo = 0, hi = 0;
  const int s = chunk_of_block(a, lo, hi);
  float* m = a.m[s];
  float* v = a.v[s];
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const float g = ld(a.g[s], a.tg[s], i) * h.gs;
    const float mi = h.b1 * m[i] + (1.f - h.b1) * g;
    const float vi = h.b2 * v[i] + (1.f - h.b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float pv = ld(a.p[s], a.tp[s], i);
    const float np = pv - h.lr * ((mi / h.bc1) / (sqrtf(vi / h.bc2) + h.eps) + h.wd * pv);
    st(a.p[s], a.tp[s], i, np);
    if (a.out[s]) st(a.out[s], a.tout[s], i, np);
  }
}

// The common batches (f32 master + bf16/f16 param and grad; f32 training)
// with dtypes fixed at compile time and 4 elements per thread step: 16-byte
// loads of p, m, v and 8-byte loads of a bf16 grad. The tail of a tensor
// whose size is not a multiple of 4 is done one element at a time.
template <class TG, class TO, bool OUT>
__global__ void adamw_multi_vec_kernel(MultiArgs a, AdamWArgs h) {
  int64_t lo = 0, hi = 0;
  const int s = chunk_of_block(a, lo, hi);
  float* p = static_cast<float*>(a.p[s]);
  const TG* g = static_cast<const TG*>(a.g[s]);
  TO* out = static_cast<TO*>(a.out[s]);
  float* m = a.m[s];
  float* v = a.v[s];
  const auto update = [&](float gv, float& mi, float& vi, float& pv) {
    gv *= h.gs;
    mi = h.b1 * mi + (1.f - h.b1) * gv;
    vi = h.b2 * vi + (1.f - h.b2) * gv * gv;
    pv = pv - h.lr * ((mi / h.bc1) / (sqrtf(vi / h.bc2) + h.eps) + h.wd * pv);
  };
  const int64_t hi4 = lo + (hi - lo) / 4 * 4;
  for (int64_t i = lo + 4 * threadIdx.x; i < hi4; i += 4 * blockDim.x) {
    float4 pv = *reinterpret_cast<const float4*>(p + i);
    float4 mv = *reinterpret_cast<const float4*>(m + i);
    float4 vv = *reinterpret_cast<const float4*>(v + i);
    struct alignas(4 * sizeof(TG)) G4 { TG x[4]; };
    const G4 gv = *reinterpret_cast<const G4*>(g + i);
    update(to_f<TG>(gv.x[0]), mv.x, vv.x, pv.x);
    update(to_f<TG>(gv.x[1]), mv.y, vv.y, pv.y);
    update(to_f<TG>(gv.x[2]), mv.z, vv.z, pv.z);
    update(to_f<TG>(gv.x[3]), mv.w, vv.w, pv.w);
    *reinterpret_cast<float4*>(p + i) = pv;
    *reinterpret_cast<float4*>(m + i) = mv;
    *reinterpret_cast<float4*>(v + i) = vv;
    if constexpr (OUT) {
      struct alignas(4 * sizeof(TO)) O4 { TO x[4]; };
      O4 o;
      o.x[0] = from_f<TO>(pv.x);
      o.x[1] = from_f<TO>(pv.y);
      o.x[2] = from_f<TO>(pv.z);
      o.x[3] = from_f<TO>(pv.w);
      *reinterpret_cast<O4*>(out + i) = o;
    }
  }
  for (int64_t i = hi4 + threadIdx.x; i < hi; i += blockDim.x) {
    float mi = m[i], vi = v[i], pv = p[i];
    update(to_f<TG>(g[i]), mi, vi, pv);
    m[i] = mi;
    v[i] = vi;
    p[i] = pv;
    if constexpr (OUT) out[i] = from_f<TO>(pv);
  }
}

// Whether every slot of the batch has the dtypes <f32 p, tg, tout (or no out)>.
bool uniform_batch(const MultiArgs& a, DType tg, bool out, DType tout) {
  for (int i = 0; i < a.count; ++i) {
    if (a.tp[i] != DType::f32 || a.tg[i] != tg || (a.out[i] != nullptr) != out ||
        (out && a.tout[i] != tout)) {
      return false;
    }
  }
  return true;
}

void launch_multi(MultiArgs& a, const AdamWArgs& h) {
  if (a.count == 0) return;
  const unsigned grid = static_cast<unsigned>(a.first_chunk[a.count]);
  cudaStream_t stream = ctx().stream;
  if (uniform_batch(a, DType::bf16, true, DType::bf16)) {
    adamw_multi_vec_kernel<__nv_bfloat16, __nv_bfloat16, true><<<grid, 256, 0, stream>>>(a, h);
  } else if (uniform_batch(a, DType::f16, true, DType::f16)) {
    adamw_multi_vec_kernel<__half, __half, true><<<grid, 256, 0, stream>>>(a, h);
  } else if (uniform_batch(a, DType::f32, false, DType::f32)) {
    adamw_multi_vec_kernel<float, float, false><<<grid, 256, 0, stream>>>(a, h);
  } else {
    adamw_multi_kernel<<<grid, 256, 0, stream>>>(a, h);
  }
  EL_CUDA_CHECK_LAUNCH("adamw_multi_kernel");
  a = MultiArgs{};
}

}  // namespace

void adamw_update_many(const std::vector<AdamWTensors>& slots, const AdamWStep& step) {
  const AdamWArgs h = args_of(step);
  MultiArgs a{};
  for (const AdamWTensors& sl : slots) {
    EL_CUDA_ENSURE(sl.param && sl.grad && sl.m && sl.v, "cuda adamw_update_many: incomplete slot");
    Tensor& param = *sl.param;
    expect_cuda_float(param, "adamw_update_many (param)");
    expect_cuda_float(*sl.grad, "adamw_update_many (grad)");
    expect_cuda_dtype(*sl.m, DType::f32, "adamw_update_many (m)");
    expect_cuda_dtype(*sl.v, DType::f32, "adamw_update_many (v)");
    if (sl.master) expect_cuda_dtype(*sl.master, DType::f32, "adamw_update_many (master)");
    const int64_t n = param.numel();
    EL_CUDA_ENSURE(sl.grad->numel() == n && sl.m->numel() == n && sl.v->numel() == n &&
                       (!sl.master || sl.master->numel() == n),
                   "cuda adamw_update_many: '{}' {}: grad/m/v/master sizes differ", param.name(),
                   shape_str(param.shape()));
    if (n == 0) continue;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    if (a.count == kMaxSlots || int64_t{a.first_chunk[a.count]} + chunks > (int64_t{1} << 30)) {
      launch_multi(a, h);
    }
    const int i = a.count++;
    if (sl.master) {
      a.p[i] = sl.master->raw();
      a.tp[i] = DType::f32;
      a.out[i] = param.raw();
      a.tout[i] = param.dtype();
    } else {
      a.p[i] = param.raw();
      a.tp[i] = param.dtype();
      a.out[i] = nullptr;
      a.tout[i] = DType::f32;
    }
    a.g[i] = sl.grad->raw();
    a.tg[i] = sl.grad->dtype();
    a.m[i] = sl.m->data<float>();
    a.v[i] = sl.v->data<float>();
    a.n[i] = n;
    a.first_chunk[i + 1] = a.first_chunk[i] + static_cast<int>(chunks);
  }
  launch_multi(a, h);
}

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& step) {
  expect_cuda_float(param, "adamw_update (param)");
  expect_cuda_float(grad, "adamw_update (grad)");
  expect_cuda_dtype(m, DType::f32, "adamw_update (m)");
  expect_cuda_dtype(v, DType::f32, "adamw_update (v)");
  const int64_t n = param.numel();
  EL_CUDA_ENSURE(grad.numel() == n && m.numel() == n && v.numel() == n,
                 "cuda adamw_update: param {} grad {} m {} v {} differ in size '{}'",
                 shape_str(param.shape()), shape_str(grad.shape()), shape_str(m.shape()),
                 shape_str(v.shape()), param.name());
  const AdamWArgs a = args_of(step);
  if (n == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(param.dtype(), TP, {
    EL_DISPATCH_FLOAT(grad.dtype(), TG, {
      adamw_kernel<TP, TG, float><<<grid_for(n, 256), 256, 0, cx.stream>>>(
          param.data<TP>(), grad.data<TG>(), m.data<float>(), v.data<float>(), nullptr, n, a);
    });
  });
  EL_CUDA_CHECK_LAUNCH("adamw_kernel");
}

void adamw_update_master(Tensor& param, const Tensor& grad, Tensor& master, Tensor& m, Tensor& v,
                         const AdamWStep& step) {
  expect_cuda_float(param, "adamw_update_master (param)");
  expect_cuda_float(grad, "adamw_update_master (grad)");
  expect_cuda_dtype(master, DType::f32, "adamw_update_master (master)");
  expect_cuda_dtype(m, DType::f32, "adamw_update_master (m)");
  expect_cuda_dtype(v, DType::f32, "adamw_update_master (v)");
  const int64_t n = param.numel();
  EL_CUDA_ENSURE(
      grad.numel() == n && master.numel() == n && m.numel() == n && v.numel() == n,
      "cuda adamw_update_master: param {} grad {} master {} m {} v {} differ in size '{}'",
      shape_str(param.shape()), shape_str(grad.shape()), shape_str(master.shape()),
      shape_str(m.shape()), shape_str(v.shape()), param.name());
  const AdamWArgs a = args_of(step);
  if (n == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(grad.dtype(), TG, {
    EL_DISPATCH_FLOAT(param.dtype(), TO, {
      adamw_kernel<float, TG, TO><<<grid_for(n, 256), 256, 0, cx.stream>>>(
          master.data<float>(), grad.data<TG>(), m.data<float>(), v.data<float>(), param.data<TO>(),
          n, a);
    });
  });
  EL_CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace el::cuda
