// cuda_columns.cu — Backend::sum_columns (ops::gather_columns and its
// backward): out[n, m] = sum of x[n, idx[k]], k in [offsets[m], offsets[m + 1]).
//
// One thread per output element, consecutive threads on consecutive columns
// of a row: the writes are coalesced, and the reads of a gather map that
// keeps runs of columns (slices, concatenations) are too. The map is a few
// hundred i32 entries read through L1. Sums in f32, in index order
// (deterministic; no atomics: the backward of a column fed to several
// outputs is a sum over the transposed map, not a scatter).
#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

template <class T>
__global__ void sum_columns_kernel(const T* __restrict__ x, const int32_t* __restrict__ offsets,
                                   const int32_t* __restrict__ idx, T* __restrict__ out,
                                   int64_t rows, int64_t c, int64_t m) {
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < rows * m; i += stride) {
    const int64_t row = i / m, col = i - row * m;
    const T* xr = x + row * c;
    float s = 0.f;
    for (int32_t k = __ldg(offsets + col), e = __ldg(offsets + col + 1); k < e; ++k)
      s += to_f<T>(xr[__ldg(idx + k)]);
    out[i] = from_f<T>(s);
  }
}

}  // namespace

void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx, Tensor& out) {
  expect_cuda_float(x, "sum_columns (x)");
  expect_cuda_float(out, "sum_columns (out)");
  expect_cuda_dtype(offsets, DType::i32, "sum_columns (offsets)");
  expect_cuda_dtype(idx, DType::i32, "sum_columns (idx)");
  EL_CUDA_ENSURE(x.dtype() == out.dtype() && x.ndim() >= 1 && out.ndim() >= 1 &&
                     offsets.numel() == out.dim(-1) + 1,
                 "cuda sum_columns: x {} {} / out {} {} / offsets [{}] do not match (expected one "
                 "dtype and offsets [out columns + 1])",
                 dtype_name(x.dtype()), shape_str(x.shape()), dtype_name(out.dtype()),
                 shape_str(out.shape()), offsets.numel());
  const int64_t c = x.dim(-1), m = out.dim(-1);
  const int64_t rows = c > 0 ? x.numel() / c : 0;
  EL_CUDA_ENSURE(m == 0 || out.numel() / m == rows,
                 "cuda sum_columns: x {} and out {} differ in rows", shape_str(x.shape()),
                 shape_str(out.shape()));
  if (rows == 0 || m == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(x.dtype(), T, {
    launch_kernel(sum_columns_kernel<T>, grid_for(rows * m, 256), 256, 0, cx.stream, x.data<T>(),
                  offsets.data<int32_t>(), idx.data<int32_t>(), out.data<T>(), rows, c, m);
  });
  EL_CUDA_CHECK_LAUNCH("sum_columns_kernel");
}

}  // namespace el::cuda
