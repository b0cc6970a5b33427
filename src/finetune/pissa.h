// pissa.h — PiSSA initialisation for LoRA (peft's init_lora_weights="pissa")
// and the thin SVD it needs.
//
// PiSSA (arXiv 2404.02948) starts the adapter on the principal part of the
// base weight instead of at zero. With W [out, in] = U diag(S) V^T (thin SVD,
// S descending), rank r and the LoRA scaling s (alpha / r, or alpha / sqrt(r)
// with RSLoRA), exactly as peft 0.21 does it (tuners/lora/layer.py, pissa_init):
//   A     = diag(sqrt(S_r / s)) V_r^T     [r, in]
//   B     = U_r diag(sqrt(S_r / s))       [out, r]
//   W_res = W - s B A                     [out, in]   (replaces the base weight)
// so W_res + s B A == W and the adapted model starts equal to the base model;
// the frozen base is the residual and training moves the principal part.
// The singular vectors' signs are not unique (LAPACK and torch may differ
// per rank); we pick the sign that makes the largest-magnitude entry of each
// column of U_r positive. W_res and s B A do not depend on that choice.
//
// The SVD runs on the host in double through LAPACK's dgesdd_ (exported by
// OpenBLAS, which el_core links); the weight is copied from its device and
// dtype to host f32 first, and the residual written back in the weight's
// dtype on its device (only its rows when it is a row block of a stacked
// q/k/v or gate/up buffer). Cost: a full thin SVD per adapted matrix,
// O(out * in * min(out, in)) flops (peft pays the same).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "finetune/lora.h"

namespace el::finetune {

// Thin SVD of a row-major m x n matrix: a = u diag(s) vt with k = min(m, n),
// u [m, k] and vt [k, n] row-major, s [k] descending. dgesdd_ (divide and
// conquer), falling back to dgesvd_ (QR iteration) if it does not converge.
// Errors: a non-finite entry (names `what` and the entry), LAPACK failing.
struct Svd {
  int64_t m = 0, n = 0, k = 0;
  std::vector<double> u, s, vt;
};
Result<Svd> svd_thin(const std::vector<double>& a, int64_t m, int64_t n, const std::string& what = "matrix");

// The PiSSA factors of a row-major weight w [out, in] for rank r and scaling
// s (formulas in the file comment). A and B are rounded to `dtype` (the
// model's), and the residual is computed from the rounded factors, so that
// W_res + s B A reproduces W as closely as that dtype allows (peft keeps f32
// factors; in f32 the two agree). Errors: r < 1 or r > min(out, in) (names
// `what`), and svd_thin's.
struct PissaFactors {
  std::vector<float> a;         // [r, in]
  std::vector<float> b;         // [out, r]
  std::vector<float> residual;  // [out, in], f32 (round it to the model's dtype when writing)
};
Result<PissaFactors> pissa_factors(const std::vector<float>& w, int64_t out, int64_t in, int64_t r,
                                   float scaling, DType dtype = DType::f32,
                                   const std::string& what = "weight");

// What apply_lora checks on every targeted slot before it changes the model
// (so that PiSSA does not fail half-way): r <= min(out, in), a float weight
// (f32 / bf16 / f16), every entry finite. `path` names the slot in errors.
Status check_pissa_target(const std::string& path, const Linear& base, int64_t r);

// Initialises one adapted layer the PiSSA way: its frozen base weight becomes
// W_res (in place, in its dtype, on its device), lora_A / lora_B get the
// factors, and DoRA's magnitude (if any) is recomputed as ||W_res + s B A||
// per row, as peft's DoRA initialisation does after pissa_init (it equals
// ||W|| up to rounding, so DoRA + PiSSA also starts equal to the base).
Status pissa_init(LoraLinear& layer, int64_t r, const std::string& path = "");

// pissa_init for many layers (path, layer), their SVDs in parallel (OpenMP
// threads, a few weights on the host at a time). On a LAPACK failure the
// error names the projection and says how many were already changed.
Status pissa_init_all(const std::vector<std::pair<std::string, LoraLinear*>>& layers, int64_t r);

}  // namespace el::finetune
