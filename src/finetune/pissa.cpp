#include "finetune/pissa.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "core/dtype.h"
#include "ops/backend.h"

// LAPACK (Fortran, column-major) as OpenBLAS exports it. The trailing size_t
// arguments are the hidden lengths gfortran passes for CHARACTER arguments.
extern "C" {
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s,
             double* u, const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork,
             int* iwork, int* info, size_t jobz_len);
void dgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, double* a, const int* lda,
             double* s, double* u, const int* ldu, double* vt, const int* ldvt, double* work,
             const int* lwork, int* info, size_t jobu_len, size_t jobvt_len);
}

namespace el::finetune {
namespace {

// The value `x` takes once stored in `dtype` (round to nearest even).
float round_to(DType dtype, float x) {
  switch (dtype) {
    case DType::bf16: return bf16_to_f32(f32_to_bf16(x));
    case DType::f16: return f16_to_f32(f32_to_f16(x));
    default: return x;
  }
}

// The workspace size a LAPACK query (lwork = -1) returned, as an int.
Result<int> workspace_size(double query, const std::string& what) {
  if (!(query >= 1.0) || query > static_cast<double>(INT_MAX)) {
    return make_error(fmt::format("LAPACK asks for a workspace of {} doubles", query), what,
                      "the matrix is too large for a 32-bit LAPACK");
  }
  return static_cast<int>(std::ceil(query));
}

}  // namespace

Result<Svd> svd_thin(const std::vector<double>& a, int64_t m, int64_t n, const std::string& what) {
  if (m < 1 || n < 1 || static_cast<int64_t>(a.size()) != m * n) {
    return make_error(fmt::format("SVD of a {}x{} matrix given {} values", m, n, a.size()), what);
  }
  if (m > INT_MAX || n > INT_MAX) {
    return make_error(fmt::format("a {}x{} matrix is too large for LAPACK", m, n), what);
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) {
      return make_error(fmt::format("entry ({}, {}) is {}: cannot take its SVD", static_cast<int64_t>(i) / n,
                                    static_cast<int64_t>(i) % n, a[i]),
                        what, "the weights are not finite: is the checkpoint broken?");
    }
  }
  Svd out;
  out.m = m;
  out.n = n;
  out.k = std::min(m, n);
  out.s.resize(static_cast<size_t>(out.k));
  out.u.resize(static_cast<size_t>(m * out.k));
  out.vt.resize(static_cast<size_t>(out.k * n));
  // Row-major a [m, n] is column-major X = a^T [n, m]. X = Ux S VTx gives
  // a = VTx^T S Ux^T, and in memory VTx (column-major [k, m], ldvt = k) is
  // row-major u [m, k], Ux (column-major [n, k], ldu = n) is row-major vt [k, n].
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(out.k);
  const int lda = M, ldu = M, ldvt = K;
  std::vector<double> x = a;  // LAPACK overwrites its input
  int info = 0, lwork = -1;
  double query = 0;
  std::vector<int> iwork(static_cast<size_t>(8) * static_cast<size_t>(K));
  const char jobz = 'S';
  dgesdd_(&jobz, &M, &N, x.data(), &lda, out.s.data(), out.vt.data(), &ldu, out.u.data(), &ldvt, &query,
          &lwork, iwork.data(), &info, 1);
  if (info == 0) {
    EL_TRY_ASSIGN(lwork, workspace_size(query, what));
    std::vector<double> work(static_cast<size_t>(lwork));
    dgesdd_(&jobz, &M, &N, x.data(), &lda, out.s.data(), out.vt.data(), &ldu, out.u.data(), &ldvt,
            work.data(), &lwork, iwork.data(), &info, 1);
  }
  if (info > 0) {
    // Divide and conquer did not converge (rare): QR iteration is slower but
    // more robust.
    x = a;
    const char job = 'S';
    lwork = -1;
    info = 0;
    dgesvd_(&job, &job, &M, &N, x.data(), &lda, out.s.data(), out.vt.data(), &ldu, out.u.data(), &ldvt,
            &query, &lwork, &info, 1, 1);
    if (info == 0) {
      EL_TRY_ASSIGN(lwork, workspace_size(query, what));
      std::vector<double> work(static_cast<size_t>(lwork));
      dgesvd_(&job, &job, &M, &N, x.data(), &lda, out.s.data(), out.vt.data(), &ldu, out.u.data(), &ldvt,
              work.data(), &lwork, &info, 1, 1);
    }
  }
  if (info != 0) {
    return make_error(fmt::format("the SVD of a {}x{} matrix failed (LAPACK info = {})", m, n, info), what,
                      info > 0 ? "it did not converge" : "an argument was rejected (internal error)");
  }
  return out;
}

Result<PissaFactors> pissa_factors(const std::vector<float>& w, int64_t out, int64_t in, int64_t r,
                                   float scaling, DType dtype, const std::string& what) {
  if (r < 1 || r > std::min(out, in)) {
    return make_error(fmt::format("PiSSA rank r = {} for a [{}, {}] weight: r must be in [1, min(out, in) = {}]",
                                  r, out, in, std::min(out, in)),
                      what, "lower r, or leave this projection out of target_modules");
  }
  if (static_cast<int64_t>(w.size()) != out * in) {
    return make_error(fmt::format("{} values for a [{}, {}] weight", w.size(), out, in), what);
  }
  const std::vector<double> wd(w.begin(), w.end());
  EL_TRY_ASSIGN(Svd svd, svd_thin(wd, out, in, what));
  const int64_t k = svd.k;
  PissaFactors f;
  f.a.resize(static_cast<size_t>(r * in));
  f.b.resize(static_cast<size_t>(out * r));
  std::vector<double> ad(f.a.size()), bd(f.b.size());
  for (int64_t j = 0; j < r; ++j) {
    // Sign: the largest-magnitude entry of U's column j is positive.
    int64_t arg = 0;
    for (int64_t i = 1; i < out; ++i) {
      if (std::abs(svd.u[i * k + j]) > std::abs(svd.u[arg * k + j])) arg = i;
    }
    const double sign = svd.u[arg * k + j] < 0 ? -1.0 : 1.0;
    const double root = std::sqrt(std::max(0.0, svd.s[static_cast<size_t>(j)]) / scaling);
    for (int64_t i = 0; i < in; ++i) {
      const float v = round_to(dtype, static_cast<float>(sign * root * svd.vt[j * in + i]));
      f.a[j * in + i] = v;
      ad[j * in + i] = v;
    }
    for (int64_t o = 0; o < out; ++o) {
      const float v = round_to(dtype, static_cast<float>(sign * root * svd.u[o * k + j]));
      f.b[o * r + j] = v;
      bd[o * r + j] = v;
    }
  }
  // W_res = W - s B A (from the rounded factors), in double: [out, r] @ [r, in].
  std::vector<double> res = wd;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out), static_cast<int>(in),
              static_cast<int>(r), -static_cast<double>(scaling), bd.data(), static_cast<int>(r), ad.data(),
              static_cast<int>(in), 1.0, res.data(), static_cast<int>(in));
  f.residual.assign(res.begin(), res.end());
  return f;
}

Status check_pissa_target(const std::string& path, const Linear& base, int64_t r) {
  const Tensor& w = base.weight;
  const int64_t out = w.dim(0), in = w.dim(1);
  if (r > std::min(out, in)) {
    return make_error(fmt::format("PiSSA rank r = {} exceeds min(out, in) = {} of this [{}, {}] weight", r,
                                  std::min(out, in), out, in),
                      path, "lower r, or leave this projection out of target_modules");
  }
  const DType dt = w.dtype();
  if (dt != DType::f32 && dt != DType::bf16 && dt != DType::f16) {
    return make_error(fmt::format("PiSSA needs a f32, bf16 or f16 weight, found {}", dtype_name(dt)), path,
                      "apply PiSSA before quantizing the model");
  }
  // On the weight's own device; the host copy only to name the bad entry.
  if (backend_for(w.device()).all_finite(w)) return {};
  const std::vector<float> host = w.to_floats();
  for (size_t i = 0; i < host.size(); ++i) {
    if (!std::isfinite(host[i])) {
      return make_error(fmt::format("weight entry ({}, {}) is {}: PiSSA cannot take its SVD",
                                    static_cast<int64_t>(i) / in, static_cast<int64_t>(i) % in, host[i]),
                        path, "the weights are not finite: is the checkpoint broken?");
    }
  }
  return {};
}

namespace {

// Writes the factors into the layer: A, B, the residual base weight, and
// DoRA's magnitude recomputed from them.
void write_pissa_factors(LoraLinear& layer, int64_t r, const PissaFactors& f) {
  Tensor w = layer.base().weight;  // a handle: writing through it writes the layer's rows
  const int64_t out = w.dim(0), in = w.dim(1);
  layer.lora_A.copy_from(Tensor::from_floats(f.a, {r, in}));
  layer.lora_B.copy_from(Tensor::from_floats(f.b, {out, r}));
  w.copy_from(Tensor::from_floats(f.residual, {out, in}));
  if (layer.is_dora()) {
    const std::vector<float> inv = layer.weight_inv_norm().to_floats();
    std::vector<float> m(inv.size());
    for (size_t i = 0; i < m.size(); ++i) m[i] = 1.f / inv[i];
    layer.magnitude.copy_from(Tensor::from_floats(m, {out}));
  }
}

}  // namespace

Status pissa_init(LoraLinear& layer, int64_t r, const std::string& path) {
  const Tensor& w = layer.base().weight;
  EL_TRY_ASSIGN(PissaFactors f, pissa_factors(w.to_floats(), w.dim(0), w.dim(1), r, layer.scaling(), w.dtype(),
                                              path.empty() ? "weight" : path));
  write_pissa_factors(layer, r, f);
  return {};
}

Status pissa_init_all(const std::vector<std::pair<std::string, LoraLinear*>>& layers, int64_t r) {
  // The SVDs are independent and LAPACK's are single-threaded here (the CPU
  // backend keeps OpenBLAS at one thread), so they run side by side: a chunk
  // of layers is copied to the host, factorised in parallel, written back.
  // Chunks bound the host memory to a few weights per thread.
  const int threads = std::max(1, omp_get_max_threads());
  const size_t chunk = static_cast<size_t>(2 * threads);
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
  for (size_t begin = 0; begin < layers.size(); begin += chunk) {
    const size_t end = std::min(layers.size(), begin + chunk);
    const int64_t n = static_cast<int64_t>(end - begin);
    std::vector<std::vector<float>> host(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) host[i] = layers[begin + i].second->base().weight.to_floats();
    std::vector<Result<PissaFactors>> factors(static_cast<size_t>(n), Result<PissaFactors>(PissaFactors{}));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      const auto& [path, layer] = layers[begin + i];
      const Tensor& w = layer->base().weight;
      factors[i] = pissa_factors(host[i], w.dim(0), w.dim(1), r, layer->scaling(), w.dtype(),
                                 path.empty() ? "weight" : path);
      host[i].clear();
      host[i].shrink_to_fit();
    }
    for (int64_t i = 0; i < n; ++i) {
      if (!factors[i].ok()) {
        Error e = factors[i].error();
        e.hint = fmt::format("{} of {} projections were already changed to PiSSA residuals: reload the model",
                             begin, layers.size());
        return e;
      }
      write_pissa_factors(*layers[begin + i].second, r, factors[i].value());
    }
  }
  return {};
}

}  // namespace el::finetune
