// cuda_loss.cu — fused log-softmax + cross-entropy over logits[N, V].
//
// One thread block per row, f32 math whatever the logits' dtype. The forward
// reads the row once with an online softmax (each thread keeps a running max
// and a sum rescaled when the max grows; the block then combines them), so
// lse = max + log(sum) needs no second pass. The backward reads the row once
// more and writes (softmax - onehot) * dloss. cross_entropy_fused does both in
// one launch (the loss, lse and dlogits of the classifier without ever storing
// the softmax), and may overwrite the logits with their gradient in place.
// Its fast path (V a multiple of 8 bf16 / 4 f32, rows up to 96 KiB) stages
// the row in shared memory, so the logits are read from memory once.
// Targets < 0 are ignored (loss 0, gradient 0); targets >= V are reported by
// the deferred device error record and treated as ignored.
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kThreads = 512;

struct OnlineSoftmax {
  float m = -INFINITY;  // running max
  float s = 0.f;        // sum of exp(x - m)
  __device__ void add(float x) {
    if (x > m) {
      s = s * expf(m - x) + 1.f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
};

// logsumexp of one row, returned to every thread of the block.
template <class T>
__device__ float row_lse(const T* __restrict__ row, int64_t v, bool vec_ok, float* scratch) {
  OnlineSoftmax os;
  if (vec_ok) {
    constexpr int VN = Vec<T>::kN;
    const Vec<T>* rv = reinterpret_cast<const Vec<T>*>(row);
    for (int64_t i = threadIdx.x; i < v / VN; i += blockDim.x) {
      const Vec<T> x = rv[i];
#pragma unroll
      for (int e = 0; e < VN; ++e) os.add(to_f<T>(x.v[e]));
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x) os.add(to_f<T>(row[j]));
  }
  const float mx = block_max(os.m, scratch);
  const float scaled = os.m == -INFINITY ? 0.f : os.s * expf(os.m - mx);
  const float sum = block_sum(scaled, scratch);
  return mx + logf(sum);
}

// Valid target index or -1 (ignored); reports targets >= v.
__device__ int32_t checked_target(const int32_t* targets, int64_t row, int64_t v,
                                  DeviceErrorRecord* err, int code) {
  const int32_t t = targets[row];
  if (t >= v) {
    if (threadIdx.x == 0) report_device_error(err, code, row, t, v);
    return -1;
  }
  return t;
}

// drow = (exp(x - lse) - onehot(t)) * dloss; zeros when t < 0. In-place safe.
template <class T, class TD>
__device__ void write_grad(const T* row, TD* drow, int64_t v, int32_t t, float lse, float dloss) {
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    float g = 0.f;
    if (t >= 0) g = (expf(to_f<T>(row[j]) - lse) - (j == t ? 1.f : 0.f)) * dloss;
    drow[j] = from_f<TD>(g);
  }
}

template <class T>
__global__ void ce_forward_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                  void* losses, DType tl, void* lse, DType tlse, int64_t v,
                                  bool vec_ok, DeviceErrorRecord* err) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* r = logits + row * v;
  const float l = row_lse<T>(r, v, vec_ok, scratch);
  if (threadIdx.x == 0) {
    const int32_t t = checked_target(targets, row, v, err, kErrCrossEntropyTarget);
    st(lse, tlse, row, l);
    st(losses, tl, row, t >= 0 ? l - to_f<T>(r[t]) : 0.f);
  }
}

template <class T, class TD>
__global__ void ce_backward_kernel(const T* logits, const int32_t* __restrict__ targets,
                                   const void* lse, DType tlse, float dloss, TD* dlogits, int64_t v,
                                   DeviceErrorRecord* err) {
  const int64_t row = blockIdx.x;
  const int32_t t = checked_target(targets, row, v, err, kErrCrossEntropyTarget);
  write_grad<T, TD>(logits + row * v, dlogits + row * v, v, t, ld(lse, tlse, row), dloss);
}

template <class T, class TD>
__global__ void ce_fused_kernel(const T* logits, const int32_t* __restrict__ targets, float dloss,
                                void* losses, DType tl, void* lse, DType tlse, TD* dlogits,
                                int64_t v, bool vec_ok, DeviceErrorRecord* err) {
  __shared__ float scratch[32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* r = logits + row * v;
  const float l = row_lse<T>(r, v, vec_ok, scratch);
  const int32_t t = checked_target(targets, row, v, err, kErrCrossEntropyFusedTarget);
  if (threadIdx.x == 0) {
    target_logit = t >= 0 ? to_f<T>(r[t]) : 0.f;  // read before anyone overwrites the row
    st(lse, tlse, row, l);
  }
  __syncthreads();
  if (threadIdx.x == 0) st(losses, tl, row, t >= 0 ? l - target_logit : 0.f);
  write_grad<T, TD>(r, dlogits + row * v, v, t, l, dloss);
}

// The fused classifier's fast path: the row is staged in shared memory (V a
// multiple of the 16-byte vector, at most kFusedMaxRowBytes), so the logits
// are read from memory once: max while loading, then the sum of exp, then the
// gradient, each thread re-reading only the vectors it staged (no barrier
// beyond the two reductions). A few registers a thread and 2-3 blocks per SM,
// so one block's loads overlap another's exponentials. The exponentials use
// the hardware exp2 (__expf; arguments are <= 0 here, relative error ~1e-6,
// far below bf16's, and the loss stays within f32 tolerance).
constexpr int kFusedThreads = 512;
constexpr int64_t kFusedMaxRowBytes = 96 * 1024;

template <class T, class TD>
__global__ void __launch_bounds__(kFusedThreads)
    ce_fused_smem_kernel(const T* logits, const int32_t* __restrict__ targets, float dloss,
                         float* __restrict__ losses, float* __restrict__ lse, TD* dlogits,
                         int64_t v, DeviceErrorRecord* err) {
  extern __shared__ __align__(16) unsigned char staged_raw[];
  Vec<T>* staged = reinterpret_cast<Vec<T>*>(staged_raw);
  __shared__ float scratch[32];
  constexpr int VN = Vec<T>::kN;
  static_assert(sizeof(TD) == sizeof(T), "dlogits is written in the logits' vectors");
  const int64_t row = blockIdx.x;
  const int nvec = static_cast<int>(v / VN);
  const Vec<T>* r = reinterpret_cast<const Vec<T>*>(logits + row * v);
  const int32_t t = checked_target(targets, row, v, err, kErrCrossEntropyFusedTarget);
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < nvec; j += kFusedThreads) {
    const Vec<T> x = r[j];
    staged[j] = x;
#pragma unroll
    for (int e = 0; e < VN; ++e) mx = fmaxf(mx, to_f<T>(x.v[e]));
  }
  mx = block_max(mx, scratch);
  float sum = 0.f;
  for (int j = threadIdx.x; j < nvec; j += kFusedThreads) {
    const Vec<T> x = staged[j];
#pragma unroll
    for (int e = 0; e < VN; ++e) sum += __expf(to_f<T>(x.v[e]) - mx);
  }
  const float l = mx + logf(block_sum(sum, scratch));  // block_sum's barrier: staged is complete
  if (threadIdx.x == 0) {
    lse[row] = l;
    losses[row] = t >= 0 ? l - to_f<T>(staged[t / VN].v[t % VN]) : 0.f;
  }
  Vec<TD>* d = reinterpret_cast<Vec<TD>*>(dlogits + row * v);
  for (int j = threadIdx.x; j < nvec; j += kFusedThreads) {
    const Vec<T> x = staged[j];
    Vec<TD> o;
#pragma unroll
    for (int e = 0; e < VN; ++e) {
      float g = 0.f;
      if (t >= 0) g = (__expf(to_f<T>(x.v[e]) - l) - (j * VN + e == t ? 1.f : 0.f)) * dloss;
      o.v[e] = from_f<TD>(g);
    }
    d[j] = o;
  }
}

void check_ce(const Tensor& logits, const Tensor& targets, const char* what) {
  expect_cuda_float(logits, what);
  expect_cuda_dtype(targets, DType::i32, what);
  EL_CUDA_ENSURE(logits.ndim() == 2, "cuda {}: logits must be [N, V], got {}", what,
                 shape_str(logits.shape()));
  EL_CUDA_ENSURE(targets.numel() == logits.dim(0), "cuda {}: {} targets for {} rows", what,
                 targets.numel(), logits.dim(0));
}

template <class T>
bool vec_ok_for(const Tensor& logits) {
  return aligned16(logits.raw()) && (logits.dim(1) * static_cast<int64_t>(sizeof(T))) % 16 == 0;
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                           Tensor& lse) {
  check_ce(logits, targets, "cross_entropy_forward");
  expect_cuda_float(losses, "cross_entropy_forward (losses)");
  expect_cuda_float(lse, "cross_entropy_forward (lse)");
  const int64_t n = logits.dim(0), v = logits.dim(1);
  EL_CUDA_ENSURE(v > 0 && losses.numel() == n && lse.numel() == n,
                 "cuda cross_entropy_forward: losses {} / lse {} for logits {}",
                 shape_str(losses.shape()), shape_str(lse.shape()), shape_str(logits.shape()));
  if (n == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    ce_forward_kernel<T><<<static_cast<unsigned>(n), kThreads, 0, cx.stream>>>(
        logits.data<T>(), targets.data<int32_t>(), losses.raw(), losses.dtype(), lse.raw(),
        lse.dtype(), v, vec_ok_for<T>(logits), cx.dev_error);
  });
  EL_CUDA_CHECK_LAUNCH("ce_forward_kernel");
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            float dloss, Tensor& dlogits) {
  check_ce(logits, targets, "cross_entropy_backward");
  expect_cuda_float(lse, "cross_entropy_backward (lse)");
  expect_cuda_float(dlogits, "cross_entropy_backward (dlogits)");
  const int64_t n = logits.dim(0), v = logits.dim(1);
  EL_CUDA_ENSURE(dlogits.numel() == logits.numel() && lse.numel() == n,
                 "cuda cross_entropy_backward: dlogits {} / lse {} for logits {}",
                 shape_str(dlogits.shape()), shape_str(lse.shape()), shape_str(logits.shape()));
  if (n == 0 || v == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    EL_DISPATCH_FLOAT(dlogits.dtype(), TD, {
      ce_backward_kernel<T, TD><<<static_cast<unsigned>(n), kThreads, 0, cx.stream>>>(
          logits.data<T>(), targets.data<int32_t>(), lse.raw(), lse.dtype(), dloss,
          dlogits.data<TD>(), v, cx.dev_error);
    });
  });
  EL_CUDA_CHECK_LAUNCH("ce_backward_kernel");
}

void cross_entropy_fused(const Tensor& logits, const Tensor& targets, float dloss, Tensor& losses,
                         Tensor& lse, Tensor& dlogits) {
  check_ce(logits, targets, "cross_entropy_fused");
  expect_cuda_float(losses, "cross_entropy_fused (losses)");
  expect_cuda_float(lse, "cross_entropy_fused (lse)");
  expect_cuda_float(dlogits, "cross_entropy_fused (dlogits)");
  const int64_t n = logits.dim(0), v = logits.dim(1);
  EL_CUDA_ENSURE(v > 0 && losses.numel() == n && lse.numel() == n && dlogits.numel() == n * v,
                 "cuda cross_entropy_fused: losses {} lse {} dlogits {} for logits {}",
                 shape_str(losses.shape()), shape_str(lse.shape()), shape_str(dlogits.shape()),
                 shape_str(logits.shape()));
  EL_CUDA_ENSURE(dlogits.raw() != logits.raw() || dlogits.dtype() == logits.dtype(),
                 "cuda cross_entropy_fused: in-place dlogits must keep the logits' dtype");
  if (n == 0) return;
  Context& cx = ctx();
  if (dlogits.dtype() == logits.dtype() && losses.dtype() == DType::f32 &&
      lse.dtype() == DType::f32 && aligned16(dlogits.raw())) {
    bool launched = false;
    EL_DISPATCH_FLOAT(logits.dtype(), T, {
      const int64_t row_bytes = v * static_cast<int64_t>(sizeof(T));
      if (vec_ok_for<T>(logits) && row_bytes <= kFusedMaxRowBytes) {
        const auto kernel = ce_fused_smem_kernel<T, T>;
        if (row_bytes > 48 * 1024) {
          EL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(kFusedMaxRowBytes)));
        }
        kernel<<<static_cast<unsigned>(n), kFusedThreads, static_cast<size_t>(row_bytes),
                 cx.stream>>>(logits.data<T>(), targets.data<int32_t>(), dloss,
                              losses.data<float>(), lse.data<float>(), dlogits.data<T>(), v,
                              cx.dev_error);
        launched = true;
      }
    });
    if (launched) {
      EL_CUDA_CHECK_LAUNCH("ce_fused_smem_kernel");
      return;
    }
  }
  EL_DISPATCH_FLOAT(logits.dtype(), T, {
    EL_DISPATCH_FLOAT(dlogits.dtype(), TD, {
      ce_fused_kernel<T, TD><<<static_cast<unsigned>(n), kThreads, 0, cx.stream>>>(
          logits.data<T>(), targets.data<int32_t>(), dloss, losses.raw(), losses.dtype(), lse.raw(),
          lse.dtype(), dlogits.data<TD>(), v, vec_ok_for<T>(logits), cx.dev_error);
    });
  });
  EL_CUDA_CHECK_LAUNCH("ce_fused_kernel");
}

}  // namespace el::cuda
