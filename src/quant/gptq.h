// gptq.h — GPTQ (Frantar et al. 2022, arXiv 2210.17323): weight-only
// quantization that corrects each column's rounding error on the columns
// not yet quantized, weighted by the inverse Hessian of the layer's
// reconstruction loss ||X W^T - X Q^T||^2, H = 2 X^T X / n.
//
// As the reference implementation (act-order off): dead inputs (H_ii = 0)
// get H_ii = 1 and a zero weight column; H += damp * mean(diag H) * I; the
// upper Cholesky factor U of H^-1 (H^-1 = U^T U; f64 LAPACK, one
// factorisation and one triangular inverse); columns in blocks of
// `block_size` with lazy batch updates (the columns after a block get its
// errors in one GEMM); group parameters
// (rtn.h's scale and zero rules) computed from the row's current, already
// corrected weights when a group starts. Rows are independent given H, so
// several projections of one input (q/k/v) run as one matrix.
//
// X^T X is accumulated by HessianAccumulator on the device the inputs live
// on (a GEMM per calibration batch, f32), and copied to the host once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "quant/rtn.h"

namespace el::quant {

struct GptqOptions {
  double damp = 0.01;        // fraction of the mean diagonal added to H's diagonal
  int64_t block_size = 128;  // columns per lazy batch update
};

// Sum of x^T x over the rows of every x[..., K] added, in f32 on the device.
class HessianAccumulator {
 public:
  HessianAccumulator(int64_t in_features, Device device);
  // x[..., K] of any float dtype on the accumulator's device.
  void add(const Tensor& x);
  int64_t in_features() const { return k_; }
  int64_t rows() const { return rows_; }
  const Tensor& xtx() const { return xtx_; }  // f32 [K, K] on the device
  // H = 2 X^T X / rows on the host, row-major f64 [K * K] (zeros before any add).
  std::vector<double> hessian() const;

 private:
  int64_t k_;
  int64_t rows_ = 0;
  Tensor xtx_;
};

// GPTQ of w[n, k] (row-major f32 on the host) under the Hessian h[k * k]
// (row-major f64, e.g. HessianAccumulator::hessian()). `name` goes into
// errors. Errors: check_quantizable, a Hessian of the wrong size, non-finite
// weights or Hessian, H + damp not positive definite (hint: raise the damp).
Result<HostQuantized> gptq_quantize_host(const float* w, int64_t n, int64_t k,
                                         const std::vector<double>& h, const QuantSpec& spec,
                                         const GptqOptions& options, const std::string& name);

// Per row r of a weight w[n, k] and its dequantized approximation dq[n, k]
// (row-major f32, host): err[r] = (w_r - dq_r)^T A (w_r - dq_r) and
// energy[r] = w_r^T A w_r with A = X^T X (f32 [K, K] on any device; the GEMM
// runs there). Summed over a layer's rows, err / energy is the relative
// output error ||X W^T - X Q^T||^2 / ||X W^T||^2 on the calibration inputs.
struct RowErrors {
  std::vector<double> err, energy;
};
RowErrors output_errors(const std::vector<float>& w, const std::vector<float>& dq, int64_t n, int64_t k,
                        const Tensor& xtx);

// Dequantized f32 [rows * cols] of a host-quantized matrix (row-major).
std::vector<float> dequantize_host(const HostQuantized& q);

}  // namespace el::quant
