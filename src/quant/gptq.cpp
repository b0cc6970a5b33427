#include "quant/gptq.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/backend.h"

// LAPACK from OpenBLAS (Debian ships no lapacke.h by default; finetune/pissa.cpp
// declares its SVDs the same way). Column-major; the hidden trailing argument
// is the length of the character argument (gfortran's calling convention).
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info,
             size_t uplo_len, size_t diag_len);
}

namespace el::quant {
namespace {

// Rows per OpenMP task of the lazy update GEMM; OpenBLAS runs one thread per
// call (as in cpu/cpu_gemm.cpp: its pool and libgomp's starve each other).
constexpr int64_t kRowChunk = 64;

// OpenBLAS on every core for the O(K^3) factorisations (seconds at K = 5632,
// nothing else runs meanwhile), back on one thread afterwards: the CPU
// backend's GEMMs and this file's row loops thread with OpenMP instead.
class BlasThreads {
 public:
  BlasThreads() { openblas_set_num_threads(std::max(1, omp_get_max_threads())); }
  ~BlasThreads() { openblas_set_num_threads(1); }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;
};

// U (row-major f32, upper triangular) with H^-1 = U^T U, from H (row-major
// symmetric f64 [k * k], overwritten); LAPACK's info (0 = success).
// With J the reversal permutation, the Cholesky factor L of J H J (lower,
// J H J = L L^T) gives H = R R^T with R = J L J upper triangular, so
// U = R^-1 = J L^-1 J: one factorisation and one triangular inverse
// (2/3 K^3 flops, against 5/3 K^3 for the reference's cholesky, cholesky_inverse,
// cholesky). A row-major symmetric buffer reads the same column-major, and
// reversing the flat array is J H J.
int upper_inverse_cholesky(std::vector<double>& h, int64_t k, std::vector<float>& u) {
  std::reverse(h.begin(), h.end());
  const int n = static_cast<int>(k);
  int info = 0;
  {
    BlasThreads threads;
    dpotrf_("L", &n, h.data(), &n, &info, 1);  // column-major lower L
    if (info == 0) dtrtri_("L", "N", &n, h.data(), &n, &info, 1, 1);  // L^-1, in place
  }
  if (info != 0) return info;
  // U[a][c] = L^-1[k-1-a][k-1-c], stored column-major at (k-1-a) + (k-1-c) * k.
  u.assign(static_cast<size_t>(k * k), 0.f);
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t c = a; c < k; ++c) {
      u[static_cast<size_t>(a * k + c)] = static_cast<float>(h[static_cast<size_t>((k - 1 - a) + (k - 1 - c) * k)]);
    }
  }
  return 0;
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t in_features, Device device)
    : k_(in_features), xtx_(Tensor::zeros({in_features, in_features}, DType::f32, device)) {}

void HessianAccumulator::add(const Tensor& x) {
  EL_ENSURE(x.dim(-1) == k_, "HessianAccumulator: input {} has {} features, expected {}",
            shape_str(x.shape()), x.dim(-1), k_);
  const int64_t rows = x.numel() / k_;
  if (rows == 0) return;
  const Tensor flat = (x.is_contiguous() ? x : x.clone()).view({rows, k_});
  backend_for(xtx_.device()).gemm(flat, true, flat, false, xtx_, 1.f, 1.f);  // [K, K] += X^T X
  rows_ += rows;
}

std::vector<double> HessianAccumulator::hessian() const {
  const std::vector<float> a = xtx_.to_floats();
  std::vector<double> h(a.size(), 0.0);
  if (rows_ == 0) return h;
  const double s = 2.0 / static_cast<double>(rows_);
  for (size_t i = 0; i < a.size(); ++i) h[i] = s * static_cast<double>(a[i]);
  return h;
}

Result<HostQuantized> gptq_quantize_host(const float* w_in, int64_t n, int64_t k,
                                         const std::vector<double>& h_in, const QuantSpec& spec,
                                         const GptqOptions& options, const std::string& name) {
  EL_TRY(check_quantizable(name, n, k, spec));
  if (static_cast<int64_t>(h_in.size()) != k * k) {
    return make_error(fmt::format("Hessian has {} entries, expected {} x {}", h_in.size(), k, k), name);
  }
  if (!(options.damp >= 0.0) || options.block_size <= 0) {
    return make_error(fmt::format("damp {} must be >= 0 and block size {} positive", options.damp,
                                  options.block_size),
                      name);
  }
  if (k > 46340) {  // LAPACK's int indexing of a k x k matrix
    return make_error(fmt::format("in_features {} is too large for GPTQ's dense Hessian", k), name,
                      "use --method rtn");
  }
  std::vector<float> w(w_in, w_in + n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    if (!std::isfinite(w[static_cast<size_t>(i)])) {
      return make_error(fmt::format("weight [{}, {}] is not finite", i / k, i % k), name,
                        "the weights must be finite");
    }
  }
  std::vector<double> h = h_in;
  for (double v : h) {
    if (!std::isfinite(v)) {
      return make_error("the calibration Hessian is not finite", name,
                        "the calibration activations overflowed: check the model in f32");
    }
  }
  // Dead inputs (never active in the calibration data): nothing to correct
  // them with; H_ii = 1 keeps the factorisation defined, the weight is zeroed
  // (it never contributed to the calibration outputs).
  double diag_sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    double& d = h[static_cast<size_t>(i * k + i)];
    if (d == 0.0) {
      d = 1.0;
      for (int64_t r = 0; r < n; ++r) w[static_cast<size_t>(r * k + i)] = 0.f;
    }
    diag_sum += d;
  }
  const double damp = options.damp * diag_sum / static_cast<double>(k);
  for (int64_t i = 0; i < k; ++i) h[static_cast<size_t>(i * k + i)] += damp;

  // U: the upper Cholesky factor of H^-1 (H^-1 = U^T U), row-major.
  std::vector<float> u;
  const int info = upper_inverse_cholesky(h, k, u);
  if (info != 0) {
    return make_error(fmt::format("the calibration Hessian plus damping is not positive definite "
                                  "(LAPACK info {})",
                                  info),
                      name, "raise --damp (e.g. 0.1), or use more calibration samples");
  }
  h.clear();
  h.shrink_to_fit();

  const int64_t g = spec.group_for(k), groups = k / g, bs = options.block_size;
  const int maxq = (1 << spec.bits) - 1;
  HostQuantized q;
  q.resize(spec.bits, g, spec.symmetric, n, k);
  std::vector<GroupParams> current(static_cast<size_t>(n));
  std::vector<float> err(static_cast<size_t>(n * bs));
  bool failed = false;
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
  for (int64_t i1 = 0; i1 < k; i1 += bs) {
    const int64_t i2 = std::min(i1 + bs, k), count = i2 - i1;
    // Column by column inside the block, each row on its own (rows are
    // independent given H): quantize, then spread the error on the block's
    // later columns.
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      float* wr = w.data() + r * k;
      uint8_t* qr = q.qweight.data() + r * q.row_bytes();
      float* er = err.data() + r * bs;
      GroupParams& p = current[static_cast<size_t>(r)];
      for (int64_t i = i1; i < i2; ++i) {
        if (i % g == 0) {
          auto gp = choose_group_params(wr + i, g, spec.bits, spec.symmetric);
          if (!gp.ok()) {
#pragma omp atomic write
            failed = true;
            break;
          }
          p = gp.value();
          q.scales[static_cast<size_t>(r * groups + i / g)] = p.scale_bits;
          if (!spec.symmetric) q.zeros[static_cast<size_t>(r * groups + i / g)] = static_cast<uint8_t>(p.zero);
        }
        const int code = quantize_value(wr[i], p, maxq);
        set_code(qr, i, code, spec.bits);
        const float* ui = u.data() + i * k;
        const float e = (wr[i] - dequantize_value(code, p)) / ui[i];
        er[i - i1] = e;
        for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
      }
    }
    if (failed) {
      return make_error("a GPTQ-corrected weight grew beyond f16's scale range or became non-finite",
                        name, "raise --damp, or use --method rtn");
    }
    if (i2 == k) break;
    // Lazy batch update: W[:, i2:] -= Err[:, :count] @ U[i1:i2, i2:].
    const int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
#pragma omp parallel for schedule(dynamic)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = c * kRowChunk, rows = std::min(kRowChunk, n - r0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(k - i2), static_cast<int>(count), -1.f, err.data() + r0 * bs,
                  static_cast<int>(bs), u.data() + i1 * k + i2, static_cast<int>(k), 1.f,
                  w.data() + r0 * k + i2, static_cast<int>(k));
    }
  }
  return q;
}

std::vector<float> dequantize_host(const HostQuantized& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  const int64_t g = q.group_size, groups = q.groups();
  const int sym_zero = 1 << (q.bits - 1);
  for (int64_t r = 0; r < q.rows; ++r) {
    const uint8_t* qr = q.qweight.data() + r * q.row_bytes();
    for (int64_t c = 0; c < q.cols; ++c) {
      const size_t gi = static_cast<size_t>(r * groups + c / g);
      GroupParams p;
      p.scale = f16_to_f32(q.scales[gi]);
      p.zero = q.symmetric ? sym_zero : q.zeros[gi];
      out[static_cast<size_t>(r * q.cols + c)] = dequantize_value(get_code(qr, c, q.bits), p);
    }
  }
  return out;
}

RowErrors output_errors(const std::vector<float>& w, const std::vector<float>& dq, int64_t n, int64_t k,
                        const Tensor& xtx) {
  // [W; W - DQ] @ A in one GEMM on A's device, then the row dots on the host.
  std::vector<float> stacked(static_cast<size_t>(2 * n * k));
  std::copy(w.begin(), w.end(), stacked.begin());
  for (size_t i = 0; i < w.size(); ++i) stacked[w.size() + i] = w[i] - dq[i];
  const Device device = xtx.device();
  const Tensor a = Tensor::from_floats(stacked, {2 * n, k}).to(device);
  Tensor p = Tensor::empty({2 * n, k}, DType::f32, device);
  backend_for(device).gemm(a, false, xtx, false, p, 1.f, 0.f);
  const std::vector<float> ph = p.to_floats();
  RowErrors out;
  out.err.resize(static_cast<size_t>(n));
  out.energy.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    double e = 0, b = 0;
    for (int64_t c = 0; c < k; ++c) {
      const size_t i = static_cast<size_t>(r * k + c), j = static_cast<size_t>((n + r) * k + c);
      b += static_cast<double>(stacked[i]) * ph[i];
      e += static_cast<double>(stacked[j]) * ph[j];
    }
    out.energy[static_cast<size_t>(r)] = b;
    out.err[static_cast<size_t>(r)] = e;
  }
  return out;
}

}  // namespace el::quant
