// cpu_gemm.cpp — GEMM through OpenBLAS cblas_sgemm, threaded by OpenMP.
//
// Why OpenBLAS runs single-threaded here: the Debian OpenBLAS has its own
// pthread pool, and libgomp's idle workers spin-wait after every parallel
// region, so on 2 cores the two pools starve each other. Measured on an idle
// 2-core slice, a 512^3 sgemm after an OpenMP elementwise pass ran at 30
// GFLOP/s with OpenBLAS's threads and 59 with this scheme (60 alone). So the
// backend owns all threading: OpenBLAS is pinned to one thread and OpenMP
// threads each call sgemm on blocks of rows (or of columns when M is small,
// as in decode). The extra packing of the shared operand per block is O(KN)
// against O(MNK / blocks) of work.
//
// bf16/f16 operands are widened into an f32 scratch tensor (from the caching
// allocator, so a training step re-uses the same block) before the call:
// OpenBLAS has no mixed-precision sgemm, and widening costs O(MK) against the
// O(MNK) product.
#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

// An f32 view of a (possibly bf16/f16) operand: the tensor itself when f32,
// else a converted copy kept alive by the returned handle.
Tensor as_f32(const Tensor& t) {
  if (t.dtype() == DType::f32) return t;
  Tensor f = Tensor::empty(t.shape(), DType::f32, Device::cpu());
  copy(t, f);
  return f;
}

// GEMMs below this many multiply-adds run on one thread (a 64^3 product
// takes ~10 us on one core, comparable to an OpenMP fork/join).
constexpr int64_t kGemmParallelMinWork = int64_t{1} << 19;

// Work is split in multiples of this many rows/columns (OpenBLAS's register
// tiles are 16 or 32 wide, so a ragged split wastes a partial tile per thread).
constexpr int64_t kSplitAlign = 32;

// Blocks per thread of the dynamic split (see gemm): more balance under
// contention, at the cost of re-packing the shared operand once per block.
// Measured on 2 cores: 2 is as fast as 1 on an idle machine (medians within
// noise at 512^3 / 1024^3), while 4 lost 10-20% to the extra packing.
constexpr int kBlocksPerThread = 2;

// Keeps OpenBLAS on the calling thread (see file comment); cheap when already 1.
void pin_openblas_to_one_thread() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

}  // namespace

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  EL_ENSURE(a.ndim() == 2 && b.ndim() == 2 && c.ndim() == 2,
            "cpu gemm: expected 2-D a, b, c, got {}, {}, {}", shape_str(a.shape()),
            shape_str(b.shape()), shape_str(c.shape()));
  EL_ENSURE(dtype_is_float(a.dtype()) && dtype_is_float(b.dtype()),
            "cpu gemm: a and b must be f32/bf16/f16, got {} and {}", dtype_name(a.dtype()),
            dtype_name(b.dtype()));
  expect_f32(c, "gemm (c)");
  EL_ENSURE(a.device().is_cpu() && b.device().is_cpu() && a.is_contiguous() && b.is_contiguous(),
            "cpu gemm: a and b must be contiguous CPU tensors");
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  EL_ENSURE(k == kb && c.dim(0) == m && c.dim(1) == n,
            "cpu gemm: op(a) {}{} @ op(b) {}{} does not give c {}", shape_str(a.shape()),
            trans_a ? "^T" : "", shape_str(b.shape()), trans_b ? "^T" : "", shape_str(c.shape()));
  if (m == 0 || n == 0) return;
  float* cp = c.data<float>();
  if (k == 0) {  // c = beta * c; BLAS implementations disagree on this edge case
    const int64_t total = m * n;
    for (int64_t i = 0; i < total; ++i) cp[i] = beta == 0.f ? 0.f : beta * cp[i];
    return;
  }
  const Tensor af = as_f32(a);
  const Tensor bf = as_f32(b);
  const int64_t lda = std::max<int64_t>(1, af.dim(1));
  const int64_t ldb = std::max<int64_t>(1, bf.dim(1));
  const float* ap = af.data<float>();
  const float* bp = bf.data<float>();
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  pin_openblas_to_one_thread();
  const int max_threads = m * n * k >= kGemmParallelMinWork ? omp_get_max_threads() : 1;
  // Split the larger of M and N into blocks of whole kSplitAlign tiles, a few
  // per thread, handed out dynamically: on a shared machine one thread may be
  // descheduled and the other then takes its blocks instead of waiting at the
  // barrier. Each block is an independent sgemm, so the result does not depend
  // on which thread computed what.
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t tiles = std::max<int64_t>(1, (extent + kSplitAlign - 1) / kSplitAlign);
  const int nt = static_cast<int>(std::min<int64_t>(max_threads, tiles));
  if (nt <= 1) {
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), alpha, ap, static_cast<int>(lda), bp, static_cast<int>(ldb),
                beta, cp, static_cast<int>(n));
    return;
  }
  const int64_t blocks = std::min<int64_t>(tiles, int64_t{kBlocksPerThread} * nt);
  const int64_t per = (tiles + blocks - 1) / blocks * kSplitAlign;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t lo = std::min(extent, blk * per);
    const int64_t hi = std::min(extent, lo + per);
    if (hi <= lo) continue;
    if (split_rows) {
      // Rows lo..hi of op(a): row offset of a, or column offset when a is [K, M].
      const float* a_blk = trans_a ? ap + lo : ap + lo * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(hi - lo), static_cast<int>(n),
                  static_cast<int>(k), alpha, a_blk, static_cast<int>(lda), bp,
                  static_cast<int>(ldb), beta, cp + lo * n, static_cast<int>(n));
    } else {
      // Columns lo..hi of op(b): column offset of b, or row offset when b is [N, K].
      const float* b_blk = trans_b ? bp + lo * ldb : bp + lo;
      cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(hi - lo),
                  static_cast<int>(k), alpha, ap, static_cast<int>(lda), b_blk,
                  static_cast<int>(ldb), beta, cp + lo, static_cast<int>(n));
    }
  }
}

}  // namespace el::cpu
