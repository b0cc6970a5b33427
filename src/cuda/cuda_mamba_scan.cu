// cuda_mamba_scan.cu — the entry points of the fused Mamba-1 selective scan of
// the CUDA backend, forward and backward (contracts in ops/backend.h
// "Mamba-1"): they check every argument, then hand over to the kernels of
// cuda_mamba_scan_v2.cu (forward), cuda_mamba_scan_v2_bwd.cu (backward) and
// cuda_mamba_scan_seg.cu (segments over T), whose design
// cuda_mamba_scan_v2.cuh describes. No [B, T, I, N] tensor exists: the
// forward writes the state every mamba_scan_chunk() steps when a backward
// will follow, and the backward recomputes from those checkpoints.
#include <fmt/format.h>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/cuda_mamba.cuh"

namespace el::cuda {
namespace {

// B, T, I, N of u[B, T, I] and A_log[I, N], checked.
struct ScanShape {
  int64_t Bn, T, I, N;
};

ScanShape scan_shape(const Tensor& u, const Tensor& A_log, const Tensor& D, const Tensor& bias,
                     const char* what) {
  EL_CUDA_ENSURE(u.ndim() == 3 && A_log.ndim() == 2 && A_log.dim(0) == u.dim(2) &&
                     A_log.dim(1) >= 1 && A_log.dim(1) <= 256 && u.dim(1) < (int64_t{1} << 31) &&
                     u.dim(2) < (int64_t{1} << 31),
                 "{}: u {} and A_log {} (expected u[B, T, I], A_log[I, N], N <= 256)", what,
                 shape_str(u.shape()), shape_str(A_log.shape()));
  for (const Tensor* t : TensorPtrs{&A_log, &D, &bias}) expect_cuda_float(*t, what);
  return ScanShape{u.dim(0), u.dim(1), u.dim(2), A_log.dim(1)};
}

void zero(Tensor& t) {
  if (t.defined() && t.numel() > 0) {
    EL_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), ctx().stream));
  }
}

}  // namespace

int64_t mamba_scan_chunk() { return mamba::scan_v2_chunk(); }

void mamba_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A_log, const Tensor& B,
                        const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                        const Tensor& last, Tensor& state, Tensor& y, Tensor& checkpoints) {
  const char* what = "cuda mamba_scan_forward";
  expect_cuda_float(u, what);
  for (const Tensor* t : TensorPtrs{&delta, &B, &C, &z, &y}) expect_cuda_dtype(*t, u.dtype(), what);
  const ScanShape s = scan_shape(u, A_log, D, delta_bias, what);
  EL_CUDA_ENSURE(delta.shape() == u.shape() && z.shape() == u.shape() && y.shape() == u.shape() &&
                     B.numel() == s.Bn * s.T * s.N && C.numel() == B.numel() && D.numel() == s.I &&
                     delta_bias.numel() == s.I,
                 "{}: shapes do not match u {}", what, shape_str(u.shape()));
  if (state.defined()) {
    expect_cuda_dtype(state, DType::f32, what);
    EL_CUDA_ENSURE(state.numel() == s.Bn * s.I * s.N, "{}: state {}", what, shape_str(state.shape()));
  }
  if (checkpoints.defined()) {
    expect_cuda_dtype(checkpoints, DType::f32, what);
    const int64_t L = mamba_scan_chunk();
    EL_CUDA_ENSURE(checkpoints.numel() == s.Bn * s.I * ((s.T + L - 1) / L) * s.N,
                   "{}: checkpoints {}", what, shape_str(checkpoints.shape()));
  }
  if (last.defined()) expect_positions(last, s.Bn, what);
  if (u.numel() == 0) return;
  mamba::scan_v2_forward(u, delta, A_log, B, C, D, z, delta_bias, last, state, y, checkpoints);
}

void mamba_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                         const Tensor& A_log, const Tensor& B, const Tensor& C, const Tensor& D,
                         const Tensor& z, const Tensor& delta_bias, const Tensor& checkpoints,
                         Tensor& du, Tensor& ddelta, Tensor& dA_log, Tensor& dB, Tensor& dC,
                         Tensor& dD, Tensor& dz, Tensor& ddelta_bias) {
  const char* what = "cuda mamba_scan_backward";
  expect_cuda_float(u, what);
  for (const Tensor* t : TensorPtrs{&dy, &delta, &B, &C, &z, &du, &ddelta, &dz})
    expect_cuda_dtype(*t, u.dtype(), what);
  for (const Tensor* t : TensorPtrs{&dA_log, &dB, &dC, &dD, &ddelta_bias, &checkpoints})
    expect_cuda_dtype(*t, DType::f32, what);
  const ScanShape s = scan_shape(u, A_log, D, delta_bias, what);
  const int64_t L = mamba_scan_chunk();
  EL_CUDA_ENSURE(dy.shape() == u.shape() && du.shape() == u.shape() &&
                     ddelta.shape() == u.shape() && dz.shape() == u.shape() &&
                     dA_log.numel() == s.I * s.N && dB.numel() == s.Bn * s.T * s.N &&
                     dC.numel() == dB.numel() && dD.numel() == s.I &&
                     ddelta_bias.numel() == s.I &&
                     checkpoints.numel() == s.Bn * s.I * ((s.T + L - 1) / L) * s.N,
                 "{}: shapes do not match u {} (checkpoints {})", what, shape_str(u.shape()),
                 shape_str(checkpoints.shape()));
  // The kernels add into the f32 sums (atomics over channels and blocks).
  for (Tensor* t : {&dA_log, &dB, &dC, &dD, &ddelta_bias}) zero(*t);
  if (u.numel() == 0) return;
  mamba::scan_v2_backward(dy, u, delta, A_log, B, C, D, z, delta_bias, checkpoints, du, ddelta,
                          dA_log, dB, dC, dD, dz, ddelta_bias);
}

}  // namespace el::cuda
