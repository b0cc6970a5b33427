// cuda_elementwise.cu — add/axpy/scale, SwiGLU, GELU, sum of squares, all_finite.
//
// The pointwise kernels share one template: NI inputs and NO outputs, an
// operator on f32 values. When every tensor has the same dtype and every
// pointer is 16-byte aligned (the allocator's blocks are; views may not be),
// each thread moves 16-byte vectors (4 f32 or 8 bf16/f16 per access); any
// other combination runs the scalar kernel that converts per element from
// dtypes known at run time. In-place use (axpy's y, scale's x) is safe: each
// element is read and written by the same thread.
// The reductions write one f64 partial per block and a one-block kernel adds
// the partials in block order, so results do not depend on timing.
// sum_squares_many (the global gradient norm over ~100 tensors) is one launch
// per kSsqGroup tensors: the tensors are cut into fixed chunks of kSsqChunk
// elements, a table of {pointer, size, first chunk, dtype} travels as the
// kernel's parameter (no host-to-device copy, which from pageable memory may
// wait for the stream), and block b reduces chunks b, b + grid, ... (finding
// each chunk's tensor by binary search). Chunks, groups and grids depend only
// on the tensor sizes, so the sum does too.
#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

template <int NI, int NO>
struct EwArgs {
  const void* in[NI > 0 ? NI : 1];
  DType tin[NI > 0 ? NI : 1];
  void* out[NO];
  DType tout[NO];
  int64_t n;
};

template <class T, int NI, int NO, class Op>
__global__ void ew_vec_kernel(EwArgs<NI, NO> a, Op op) {
  constexpr int V = Vec<T>::kN;
  const int64_t nvec = a.n / V;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t tid = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < nvec; i += stride) {
    Vec<T> vin[NI > 0 ? NI : 1];
#pragma unroll
    for (int j = 0; j < NI; ++j) vin[j] = static_cast<const Vec<T>*>(a.in[j])[i];
    Vec<T> vout[NO];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float x[NI > 0 ? NI : 1], y[NO];
#pragma unroll
      for (int j = 0; j < NI; ++j) x[j] = to_f<T>(vin[j].v[e]);
      op(x, y);
#pragma unroll
      for (int j = 0; j < NO; ++j) vout[j].v[e] = from_f<T>(y[j]);
    }
#pragma unroll
    for (int j = 0; j < NO; ++j) static_cast<Vec<T>*>(a.out[j])[i] = vout[j];
  }
  for (int64_t i = nvec * V + tid; i < a.n; i += stride) {  // the last < V elements
    float x[NI > 0 ? NI : 1], y[NO];
#pragma unroll
    for (int j = 0; j < NI; ++j) x[j] = to_f<T>(static_cast<const T*>(a.in[j])[i]);
    op(x, y);
#pragma unroll
    for (int j = 0; j < NO; ++j) static_cast<T*>(a.out[j])[i] = from_f<T>(y[j]);
  }
}

template <int NI, int NO, class Op>
__global__ void ew_mixed_kernel(EwArgs<NI, NO> a, Op op) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < a.n; i += stride) {
    float x[NI > 0 ? NI : 1], y[NO];
#pragma unroll
    for (int j = 0; j < NI; ++j) x[j] = ld(a.in[j], a.tin[j], i);
    op(x, y);
#pragma unroll
    for (int j = 0; j < NO; ++j) st(a.out[j], a.tout[j], i, y[j]);
  }
}

template <int NI, int NO, class Op>
void launch_ew(const char* what, const Tensor* const (&ins)[NI], Tensor* const (&outs)[NO], Op op) {
  EwArgs<NI, NO> a{};
  const int64_t n = outs[0]->numel();
  a.n = n;
  bool same = true, aligned = true;
  const DType t0 = outs[0]->dtype();
  for (int j = 0; j < NI; ++j) {
    expect_cuda_float(*ins[j], what);
    EL_CUDA_ENSURE(ins[j]->numel() == n, "cuda {}: {} and {} differ in size", what,
                   shape_str(ins[j]->shape()), shape_str(outs[0]->shape()));
    a.in[j] = ins[j]->raw();
    a.tin[j] = ins[j]->dtype();
    same = same && a.tin[j] == t0;
    aligned = aligned && aligned16(a.in[j]);
  }
  for (int j = 0; j < NO; ++j) {
    expect_cuda_float(*outs[j], what);
    EL_CUDA_ENSURE(outs[j]->numel() == n, "cuda {}: {} and {} differ in size", what,
                   shape_str(outs[j]->shape()), shape_str(outs[0]->shape()));
    a.out[j] = outs[j]->raw();
    a.tout[j] = outs[j]->dtype();
    same = same && a.tout[j] == t0;
    aligned = aligned && aligned16(a.out[j]);
  }
  if (n == 0) return;
  constexpr int kThreads = 256;
  cudaStream_t s = ctx().stream;
  if (same && aligned) {
    EL_DISPATCH_FLOAT(t0, T, {
      const int grid = grid_for((n + Vec<T>::kN - 1) / Vec<T>::kN, kThreads);
      ew_vec_kernel<T, NI, NO, Op><<<grid, kThreads, 0, s>>>(a, op);
    });
  } else {
    ew_mixed_kernel<NI, NO, Op><<<grid_for(n, kThreads), kThreads, 0, s>>>(a, op);
  }
  EL_CUDA_CHECK_LAUNCH("elementwise kernel");
}

// ---- operators (f32 math) ---------------------------------------------------------
struct MulOp {
  __device__ void operator()(const float* x, float* y) const { y[0] = x[0] * x[1]; }
};
struct AddOp {
  __device__ void operator()(const float* x, float* y) const { y[0] = x[0] + x[1]; }
};
struct AxpyOp {  // in: x, y
  float alpha;
  __device__ void operator()(const float* x, float* y) const { y[0] = fmaf(alpha, x[0], x[1]); }
};
struct ScaleOp {
  float s;
  __device__ void operator()(const float* x, float* y) const { y[0] = x[0] * s; }
};
__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }
struct SwigluFwdOp {  // in: gate, up
  __device__ void operator()(const float* x, float* y) const { y[0] = x[0] * sigmoid(x[0]) * x[1]; }
};
struct SwigluBwdOp {  // in: dout, gate, up; out: dgate, dup
  __device__ void operator()(const float* x, float* y) const {
    const float s = sigmoid(x[1]);
    const float silu = x[1] * s;
    y[0] = x[0] * x[2] * (s + silu * (1.f - s));
    y[1] = x[0] * silu;
  }
};
constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;
struct GeluFwdOp {
  __device__ void operator()(const float* x, float* y) const {
    const float v = x[0];
    y[0] = 0.5f * v * (1.f + tanhf(kGeluC * (v + kGeluA * v * v * v)));
  }
};
struct GeluBwdOp {  // in: dout, x
  __device__ void operator()(const float* x, float* y) const {
    const float v = x[1];
    const float th = tanhf(kGeluC * (v + kGeluA * v * v * v));
    const float dinner = kGeluC * (1.f + 3.f * kGeluA * v * v);
    y[0] = x[0] * (0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * dinner);
  }
};

// The erf GELU (transformers' "gelu"): x Phi(x); derivative Phi(x) + x phi(x).
struct GeluExactFwdOp {
  __device__ void operator()(const float* x, float* y) const {
    const float v = x[0];
    y[0] = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
  }
};
struct GeluExactBwdOp {  // in: dout, x
  __device__ void operator()(const float* x, float* y) const {
    const float v = x[1];
    const float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
    y[0] = x[0] * (cdf + v * 0.39894228040143268f * __expf(-0.5f * v * v));
  }
};

// RWKV's receptance gate and channel-mix activation (ops/backend.h "RWKV-4").
struct SigmoidMulFwdOp {  // in: r, y
  __device__ void operator()(const float* x, float* y) const { y[0] = sigmoid(x[0]) * x[1]; }
};
struct SigmoidMulBwdOp {  // in: dout, r, y; out: dr, dy
  __device__ void operator()(const float* x, float* y) const {
    const float s = sigmoid(x[1]);
    y[0] = x[0] * x[2] * s * (1.f - s);
    y[1] = x[0] * s;
  }
};
struct ReluSquareFwdOp {
  __device__ void operator()(const float* x, float* y) const {
    const float p = fmaxf(x[0], 0.f);
    y[0] = p * p;
  }
};
struct ReluSquareBwdOp {  // in: dout, x
  __device__ void operator()(const float* x, float* y) const {
    y[0] = 2.f * fmaxf(x[1], 0.f) * x[0];
  }
};

// ---- reductions ----------------------------------------------------------------
constexpr int kReduceThreads = 256;

// partial[blockIdx.x] (+)= sum of x^2 over this block's grid-stride share.
template <class T>
__global__ void sum_squares_kernel(const T* __restrict__ x, int64_t n, double* partial,
                                   bool accumulate) {
  __shared__ double scratch[32];
  float acc = 0.f;  // f32 per thread (a few hundred terms), f64 across threads and blocks
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t tid = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (aligned16(x)) {
    constexpr int V = Vec<T>::kN;
    const int64_t nvec = n / V;
    for (int64_t i = tid; i < nvec; i += stride) {
      const Vec<T> v = reinterpret_cast<const Vec<T>*>(x)[i];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float f = to_f<T>(v.v[e]);
        acc = fmaf(f, f, acc);
      }
    }
    for (int64_t i = nvec * V + tid; i < n; i += stride) {
      const float f = to_f<T>(x[i]);
      acc = fmaf(f, f, acc);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) {
      const float f = to_f<T>(x[i]);
      acc = fmaf(f, f, acc);
    }
  }
  const double total = block_sum_d(static_cast<double>(acc), scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = accumulate ? partial[blockIdx.x] + total : total;
}

// out = sum of partial[0..count) in index order (one block).
__global__ void sum_partials_kernel(const double* partial, int count, double* out) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  const double total = block_sum_d(acc, scratch);
  if (threadIdx.x == 0) *out = total;
}

template <class T>
__global__ void all_finite_kernel(const T* __restrict__ x, int64_t n, int* bad) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  bool ok = true;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    ok = ok && isfinite(to_f<T>(x[i]));
  }
  if (!ok) *bad = 1;  // every writer writes the same value
}

// One tensor of sum_squares_many (24 bytes).
struct SsqEntry {
  const void* p;
  int64_t n;
  int32_t first_chunk;  // index of its first chunk among the group's chunks
  DType dtype;
};
constexpr int kSsqGroup = 128;  // tensors per launch: a 3 KB parameter (< the 4 KB classic limit)
struct SsqTable {
  SsqEntry e[kSsqGroup];
};
static_assert(sizeof(SsqTable) <= 4096, "kernel parameters are limited to 4 KB");
constexpr int64_t kSsqChunk = int64_t{1} << 15;  // elements (a multiple of every Vec<T>::kN)

// Sum of squares of x[begin, begin + len) over this thread's share (f32: a
// chunk gives each thread ~128 terms).
template <class T>
__device__ __forceinline__ float ssq_chunk(const T* __restrict__ x, int64_t begin, int len) {
  float acc = 0.f;
  x += begin;
  if (aligned16(x)) {  // begin keeps the tensor's alignment
    constexpr int V = Vec<T>::kN;
    const int nvec = len / V;
    const Vec<T>* xv = reinterpret_cast<const Vec<T>*>(x);
    const int step = blockDim.x;
    int i = threadIdx.x;
    constexpr int kU = 4;  // loads issued before any is used (memory-level parallelism)
    for (; i + (kU - 1) * step < nvec; i += kU * step) {
      Vec<T> v[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) v[u] = xv[i + u * step];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float f = to_f<T>(v[u].v[e]);
          acc = fmaf(f, f, acc);
        }
      }
    }
    for (; i < nvec; i += step) {
      const Vec<T> v = xv[i];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float f = to_f<T>(v.v[e]);
        acc = fmaf(f, f, acc);
      }
    }
    for (int i = nvec * V + threadIdx.x; i < len; i += blockDim.x) {
      const float f = to_f<T>(x[i]);
      acc = fmaf(f, f, acc);
    }
  } else {
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      const float f = to_f<T>(x[i]);
      acc = fmaf(f, f, acc);
    }
  }
  return acc;
}

// partial[blockIdx.x] = sum of squares over chunks blockIdx.x, +gridDim.x, ...
// of the `count` tensors in `table` (`chunks` in all). __grid_constant__: the
// table is read in place from parameter space (indexing a by-value parameter
// would copy it to every thread's stack).
__global__ void __launch_bounds__(256) sum_squares_many_kernel(const __grid_constant__ SsqTable table,
                                                               int count, int chunks,
                                                               double* partial) {
  __shared__ double scratch[32];
  double total = 0.0;  // f32 within a chunk, f64 across chunks and threads
  for (int ch = blockIdx.x; ch < chunks; ch += gridDim.x) {
    int lo = 0, hi = count - 1;  // last entry with first_chunk <= ch
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (table.e[mid].first_chunk <= ch) lo = mid; else hi = mid - 1;
    }
    const SsqEntry e = table.e[lo];
    const int64_t begin = (ch - e.first_chunk) * kSsqChunk;
    const int len = static_cast<int>(e.n - begin < kSsqChunk ? e.n - begin : kSsqChunk);
    float acc;
    switch (e.dtype) {
      case DType::bf16:
        acc = ssq_chunk(static_cast<const __nv_bfloat16*>(e.p), begin, len);
        break;
      case DType::f16:
        acc = ssq_chunk(static_cast<const __half*>(e.p), begin, len);
        break;
      default:
        acc = ssq_chunk(static_cast<const float*>(e.p), begin, len);
        break;
    }
    total += acc;
  }
  total = block_sum_d(total, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

int reduce_grid(int64_t n) {
  const int g = grid_for((n + 7) / 8, kReduceThreads);
  return g < kReduceSlots ? g : kReduceSlots;
}

// Queues sum-of-squares partials of x into ctx().reduce_scratch; the grid is
// fixed for all tensors of one reduction so partial slots line up.
void queue_sum_squares(const Tensor& x, int grid, bool accumulate) {
  Context& c = ctx();
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    sum_squares_kernel<T><<<grid, kReduceThreads, 0, c.stream>>>(x.data<T>(), x.numel(),
                                                                 c.reduce_scratch, accumulate);
  });
  EL_CUDA_CHECK_LAUNCH("sum_squares_kernel");
}

double finish_sum(int grid) {
  Context& c = ctx();
  sum_partials_kernel<<<1, kReduceThreads, 0, c.stream>>>(c.reduce_scratch, grid,
                                                          c.reduce_scratch + kReduceSlots);
  EL_CUDA_CHECK_LAUNCH("sum_partials_kernel");
  EL_CUDA_CHECK(cudaMemcpyAsync(c.host_scalar, c.reduce_scratch + kReduceSlots, sizeof(double),
                                cudaMemcpyDeviceToHost, c.stream));
  check_device_errors();  // waits for the stream
  return *c.host_scalar;
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  launch_ew<2, 1>("add", {&a, &b}, {&out}, AddOp{});
}

void mul(const Tensor& a, const Tensor& b, Tensor& out) {
  launch_ew<2, 1>("mul", {&a, &b}, {&out}, MulOp{});
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  launch_ew<2, 1>("axpy", {&x, &y}, {&y}, AxpyOp{alpha});
}

void scale(Tensor& x, float s) { launch_ew<1, 1>("scale", {&x}, {&x}, ScaleOp{s}); }

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  launch_ew<2, 1>("swiglu_forward", {&gate, &up}, {&out}, SwigluFwdOp{});
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  launch_ew<3, 2>("swiglu_backward", {&dout, &gate, &up}, {&dgate, &dup}, SwigluBwdOp{});
}

namespace {

// SwiGLU over packed [gate | up] rows (gate_up[N, 2F]): a block is tx x ty
// threads, ty rows at a time, each thread V consecutive columns of its row
// (V = Vec<T>::kN when F and the pointers allow 16-byte accesses, else 1), so
// no thread divides to find its row. Forward: out[N, F]; backward: dgate_up.
template <class T, int V, bool kBackward>
__global__ void swiglu_packed_kernel(const T* __restrict__ gu, const T* __restrict__ dy,
                                     T* __restrict__ out, int64_t rows, int64_t f) {
  struct alignas(sizeof(T) * V) P { T v[V]; };
  const int64_t vf = f / V;  // vectors per row of F
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  for (int64_t r = int64_t{blockIdx.x} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.x} * blockDim.y) {
    for (int64_t cv = threadIdx.x; cv < vf; cv += blockDim.x) {
      const int64_t c = cv * V;
      const P g = *reinterpret_cast<const P*>(gu + r * 2 * f + c);
      const P u = *reinterpret_cast<const P*>(gu + r * 2 * f + f + c);
      if constexpr (!kBackward) {
        P o;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          float y[1];
          const float x[2] = {to_f<T>(g.v[e]), to_f<T>(u.v[e])};
          SwigluFwdOp{}(x, y);
          o.v[e] = from_f<T>(y[0]);
        }
        *reinterpret_cast<P*>(out + r * f + c) = o;
      } else {
        const P d = *reinterpret_cast<const P*>(dy + r * f + c);
        P dg, du;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          float y[2];
          const float x[3] = {to_f<T>(d.v[e]), to_f<T>(g.v[e]), to_f<T>(u.v[e])};
          SwigluBwdOp{}(x, y);
          dg.v[e] = from_f<T>(y[0]);
          du.v[e] = from_f<T>(y[1]);
        }
        *reinterpret_cast<P*>(out + r * 2 * f + c) = dg;
        *reinterpret_cast<P*>(out + r * 2 * f + f + c) = du;
      }
    }
  }
}

template <bool kBackward>
void launch_swiglu_packed(const char* what, const Tensor& gate_up, const Tensor* dout, Tensor& out) {
  expect_cuda_float(gate_up, what);
  expect_cuda_dtype(out, gate_up.dtype(), what);
  if (dout) expect_cuda_dtype(*dout, gate_up.dtype(), what);
  EL_CUDA_ENSURE(gate_up.ndim() >= 1 && gate_up.dim(-1) % 2 == 0,
                 "cuda {}: gate_up {} must be [..., 2F]", what, shape_str(gate_up.shape()));
  const int64_t f = gate_up.dim(-1) / 2;
  const int64_t rows = f == 0 ? 0 : gate_up.numel() / (2 * f);
  const Tensor& narrow = dout ? *dout : out;  // the [N, F] tensor
  EL_CUDA_ENSURE(narrow.numel() == rows * f && (!dout || out.numel() == gate_up.numel()),
                 "cuda {}: {} and {} do not match gate_up {}", what, shape_str(narrow.shape()),
                 shape_str(out.shape()), shape_str(gate_up.shape()));
  if (rows == 0) return;
  constexpr int kThreads = 256;
  cudaStream_t s = ctx().stream;
  EL_DISPATCH_FLOAT(gate_up.dtype(), T, {
    constexpr int V = Vec<T>::kN;
    const bool vec = f % V == 0 && aligned16(gate_up.raw()) && aligned16(out.raw()) &&
                     (!dout || aligned16(dout->raw()));
    const T* dy = dout ? dout->data<T>() : nullptr;
    const dim3 block = row_block(vec ? f / V : f, kThreads);
    const int grid = grid_for((rows + block.y - 1) / block.y * kThreads, kThreads);
    if (vec) {
      launch_kernel(swiglu_packed_kernel<T, V, kBackward>, grid, block, 0, s, gate_up.data<T>(),
                    dy, out.data<T>(), rows, f);
    } else {
      launch_kernel(swiglu_packed_kernel<T, 1, kBackward>, grid, block, 0, s, gate_up.data<T>(),
                    dy, out.data<T>(), rows, f);
    }
  });
  EL_CUDA_CHECK_LAUNCH("swiglu_packed_kernel");
}

}  // namespace

void swiglu_packed_forward(const Tensor& gate_up, Tensor& out) {
  launch_swiglu_packed<false>("swiglu_packed_forward", gate_up, nullptr, out);
}

void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  launch_swiglu_packed<true>("swiglu_packed_backward", gate_up, &dout, dgate_up);
}

void gelu_forward(const Tensor& x, Tensor& out) {
  launch_ew<1, 1>("gelu_forward", {&x}, {&out}, GeluFwdOp{});
}

void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  launch_ew<2, 1>("gelu_backward", {&dout, &x}, {&dx}, GeluBwdOp{});
}

void gelu_exact_forward(const Tensor& x, Tensor& out) {
  launch_ew<1, 1>("gelu_exact_forward", {&x}, {&out}, GeluExactFwdOp{});
}

void gelu_exact_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  launch_ew<2, 1>("gelu_exact_backward", {&dout, &x}, {&dx}, GeluExactBwdOp{});
}

void sigmoid_mul_forward(const Tensor& r, const Tensor& y, Tensor& out) {
  launch_ew<2, 1>("sigmoid_mul_forward", {&r, &y}, {&out}, SigmoidMulFwdOp{});
}

void sigmoid_mul_backward(const Tensor& dout, const Tensor& r, const Tensor& y, Tensor& dr,
                          Tensor& dy) {
  launch_ew<3, 2>("sigmoid_mul_backward", {&dout, &r, &y}, {&dr, &dy}, SigmoidMulBwdOp{});
}

void relu_square_forward(const Tensor& x, Tensor& out) {
  launch_ew<1, 1>("relu_square_forward", {&x}, {&out}, ReluSquareFwdOp{});
}

void relu_square_backward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  launch_ew<2, 1>("relu_square_backward", {&dout, &x}, {&dx}, ReluSquareBwdOp{});
}

double sum_squares(const Tensor& x) {
  expect_cuda_float(x, "sum_squares");
  if (x.numel() == 0) return 0.0;
  const int grid = reduce_grid(x.numel());
  queue_sum_squares(x, grid, false);
  return finish_sum(grid);
}

double sum_squares_many(const std::vector<Tensor>& xs) {
  // Groups of up to kSsqGroup non-empty tensors, one launch each.
  std::vector<SsqTable> tables;
  std::vector<int> counts, chunks;
  for (const Tensor& x : xs) {
    expect_cuda_float(x, "sum_squares_many");
    if (x.numel() == 0) continue;
    const int64_t nc = (x.numel() + kSsqChunk - 1) / kSsqChunk;
    if (tables.empty() || counts.back() == kSsqGroup ||
        int64_t{chunks.back()} + nc > int64_t{INT32_MAX}) {
      tables.emplace_back();
      counts.push_back(0);
      chunks.push_back(0);
    }
    EL_CUDA_ENSURE(nc <= INT32_MAX, "cuda sum_squares_many: {} elements in one tensor",
                   x.numel());
    tables.back().e[counts.back()++] = SsqEntry{x.raw(), x.numel(), chunks.back(), x.dtype()};
    chunks.back() += static_cast<int>(nc);
  }
  if (tables.empty()) return 0.0;
  const auto groups = static_cast<int64_t>(tables.size());
  EL_CUDA_ENSURE(groups <= kReduceSlots, "cuda sum_squares_many: {} tensors too many",
                 xs.size());
  Context& c = ctx();
  // 8 blocks of 256 threads fill an SM; no more blocks than chunks, and the
  // groups' blocks share the kReduceSlots partial slots (in group order).
  const int64_t cap = std::max<int64_t>(
      1, std::min<int64_t>(int64_t{c.sm_count} * 8, kReduceSlots / groups));
  int slots = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int grid = static_cast<int>(std::min<int64_t>(chunks[g], cap));
    sum_squares_many_kernel<<<grid, kReduceThreads, 0, c.stream>>>(
        tables[g], counts[g], chunks[g], c.reduce_scratch + slots);
    EL_CUDA_CHECK_LAUNCH("sum_squares_many_kernel");
    slots += grid;
  }
  return finish_sum(slots);
}

bool all_finite(const Tensor& x) {
  expect_cuda(x, "all_finite");
  const int64_t n = x.numel();
  if (n == 0 || !dtype_is_float(x.dtype())) return true;  // integers are always finite
  Context& c = ctx();
  EL_CUDA_CHECK(cudaMemsetAsync(c.flag, 0, sizeof(int), c.stream));
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    all_finite_kernel<T>
        <<<grid_for(n, kReduceThreads), kReduceThreads, 0, c.stream>>>(x.data<T>(), n, c.flag);
  });
  EL_CUDA_CHECK_LAUNCH("all_finite_kernel");
  EL_CUDA_CHECK(
      cudaMemcpyAsync(c.host_flag, c.flag, sizeof(int), cudaMemcpyDeviceToHost, c.stream));
  check_device_errors();  // waits for the stream
  return *c.host_flag == 0;
}

}  // namespace el::cuda
