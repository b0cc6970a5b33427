// cuda_check.cpp — status codes to el::Error (see cuda_check.h).
#include "cuda/cuda_check.h"

#include <fmt/format.h>

namespace el::cuda {

Error cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  return make_error(fmt::format("{} failed: {} ({}): {}", call, cudaGetErrorName(code),
                                static_cast<int>(code), cudaGetErrorString(code)),
                    fmt::format("{}:{}", file, line));
}

const char* cublas_status_name(cublasStatus_t code) {
  switch (code) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
    default:
      return "CUBLAS_STATUS_UNKNOWN";
  }
}

Error cublas_error(cublasStatus_t code, const char* call, const char* file, int line) {
  return make_error(
      fmt::format("{} failed: {} ({})", call, cublas_status_name(code), static_cast<int>(code)),
      fmt::format("{}:{}", file, line));
}

void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  throw Exception(cuda_error(code, call, file, line));
}

void throw_cublas_error(cublasStatus_t code, const char* call, const char* file, int line) {
  throw Exception(cublas_error(code, call, file, line));
}

}  // namespace el::cuda
