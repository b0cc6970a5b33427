// ops_tolerance.h — the named tolerances of the op tests, scaled by dtype.
//
// A value passes when |actual - expected| <= abs + rel * |expected|. Forward
// references are computed in f64, so the budget is the kernel's own rounding:
// f32 kernels accumulate in f32 (~1e-7 per op, sums of up to a few thousand
// terms), bf16 keeps 8 mantissa bits (2^-8 = 3.9e-3 per input, errors add up
// over a K-long dot product), f16 keeps 11 (2^-11 = 4.9e-4).
#pragma once

#include "core/dtype.h"

namespace el::test {

struct Tolerance {
  double abs;
  double rel;
};

// Forward outputs computed from inputs stored in `t` (accumulation in f32).
inline Tolerance tolerance_for(DType t) {
  switch (t) {
    case DType::bf16:
      return {2e-2, 2e-2};
    case DType::f16:
      return {3e-3, 3e-3};
    default:
      return {2e-5, 2e-4};
  }
}

// Finite-difference gradient checks: central differences in f32 with step
// kFiniteDiffEps have truncation error ~eps^2 and round-off ~1e-7 |L| / eps,
// so analytic and numeric gradients agree to a few 1e-4 of their scale; the
// budget below still catches a 1% error in any gradient term.
inline constexpr double kFiniteDiffEps = 1e-2;
inline constexpr Tolerance kFiniteDiffTolerance{1e-3, 5e-3};

}  // namespace el::test
