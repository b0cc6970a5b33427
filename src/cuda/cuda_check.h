// cuda_check.h — turning CUDA runtime and cuBLAS(Lt) status codes into el::Error.
//
// Every CUDA call in src/cuda goes through one of these macros, so a failure
// names the call, the code and the source line instead of surfacing later as a
// wrong number:
//   EL_CUDA_CHECK(cudaMemcpyAsync(...));    throws el::Exception (a broken
//                                           invariant: kernels never fail on
//                                           valid input)
//   EL_CUDA_CHECK_LAUNCH("rmsnorm_forward") checks cudaGetLastError() after a
//                                           kernel launch
//   EL_CUBLAS_CHECK(cublasLtMatmul(...));   same for cublasStatus_t
//   EL_CUDA_TRY(cudaGetDeviceCount(&n));    returns the Error from a function
//                                           that returns Status / Result<T>
//   EL_CUDA_ENSURE(cond, "fmt", args...)    EL_ENSURE for .cu files: nvcc's
//                                           front end cannot evaluate fmt's
//                                           consteval format-string check, so
//                                           the format is checked at run time
// The message is "<call> failed: <cudaErrorName> (<code>): <description>",
// where = "<file>:<line>".
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/error.h"

namespace el::cuda {

// "cudaMalloc(&p, n) failed: cudaErrorMemoryAllocation (2): out of memory"
Error cuda_error(cudaError_t code, const char* call, const char* file, int line);
Error cublas_error(cublasStatus_t code, const char* call, const char* file, int line);
// "CUBLAS_STATUS_NOT_SUPPORTED" etc.; "CUBLAS_STATUS_<n>" for unknown codes.
const char* cublas_status_name(cublasStatus_t code);

[[noreturn]] void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t code, const char* call, const char* file,
                                     int line);

}  // namespace el::cuda

#define EL_CUDA_CHECK(call)                                                 \
  do {                                                                      \
    const cudaError_t el_cuda_rc_ = (call);                                 \
    if (el_cuda_rc_ != cudaSuccess)                                         \
      ::el::cuda::throw_cuda_error(el_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

#define EL_CUDA_CHECK_LAUNCH(kernel_name)                                                      \
  do {                                                                                         \
    const cudaError_t el_cuda_rc_ = cudaGetLastError();                                        \
    if (el_cuda_rc_ != cudaSuccess)                                                            \
      ::el::cuda::throw_cuda_error(el_cuda_rc_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

#define EL_CUBLAS_CHECK(call)                                                   \
  do {                                                                          \
    const cublasStatus_t el_cublas_rc_ = (call);                                \
    if (el_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                 \
      ::el::cuda::throw_cublas_error(el_cublas_rc_, #call, __FILE__, __LINE__); \
  } while (0)

#define EL_CUDA_TRY(call)                                                    \
  do {                                                                       \
    const cudaError_t el_cuda_rc_ = (call);                                  \
    if (el_cuda_rc_ != cudaSuccess)                                          \
      return ::el::cuda::cuda_error(el_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

#define EL_CUDA_ENSURE(cond, fmtstr, ...)                                            \
  do {                                                                               \
    if (!(cond))                                                                     \
      throw ::el::Exception(                                                         \
          ::el::make_error(fmt::format(fmt::runtime(fmtstr), ##__VA_ARGS__),         \
                           fmt::format(fmt::runtime("{}:{}"), __FILE__, __LINE__))); \
  } while (0)
