// precision.h — the training precision policy: f32, bf16 or f16.
//
//   f32   reference runs: parameters, activations and gradients in f32.
//   bf16  parameters, activations and gradients stored as bf16; AdamW keeps
//         an f32 master copy of every parameter (and f32 m, v) and writes the
//         rounded master back each step. bf16 has f32's exponent range, so no
//         loss scaling.
//   f16   as bf16 with f16 storage, plus dynamic loss scaling (LossScaler,
//         train/loss_scaler.h): f16's range ends at 65504 and its smallest
//         normal is 6e-5, so gradients are computed for scale * loss and the
//         scale is divided out in the optimizer.
// Kernels accumulate in f32 in every mode; statistics (rstd, lse) and the
// loss are f32 (ops/ops.h). The model's dtype is set once, when it is built
// (DecoderLM::create's param_dtype); activations follow the embedding's.
#pragma once

#include <string_view>

#include "core/dtype.h"
#include "core/error.h"

namespace el {

enum class Precision { f32, bf16, f16 };

const char* precision_name(Precision p);  // "f32", "bf16", "f16"
// Accepts exactly "f32", "bf16", "f16"; the error names `where` (a flag or
// config key) and lists the choices.
Result<Precision> parse_precision(std::string_view text, std::string_view where = "precision");
// The storage dtype of parameters, activations and gradients.
DType precision_dtype(Precision p);
// Whether the trainer scales the loss (f16 only).
inline bool precision_uses_loss_scaling(Precision p) { return p == Precision::f16; }

}  // namespace el
