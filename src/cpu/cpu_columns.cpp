// cpu_columns.cpp — the reference Backend::sum_columns (ops::gather_columns
// and its backward): out[n, m] = sum of x[n, idx[k]] for k in [offsets[m],
// offsets[m + 1]), f32 (the backend widens bf16/f16 around it).
#include "core/error.h"
#include "cpu/cpu_kernels.h"

namespace el::cpu {

void sum_columns(const Tensor& x, const Tensor& offsets, const Tensor& idx, Tensor& out) {
  const int64_t c = x.dim(-1), m = out.dim(-1);
  const int64_t rows = c > 0 ? x.numel() / c : 0;
  EL_ENSURE(offsets.numel() == m + 1 && (m == 0 || out.numel() / m == rows),
            "cpu sum_columns: x {} / out {} / offsets [{}] do not match", shape_str(x.shape()),
            shape_str(out.shape()), offsets.numel());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  const int32_t* off = offsets.data<int32_t>();
  const int32_t* ip = idx.data<int32_t>();
  for (int64_t k = 0; k < offsets.numel() - 1; ++k) {
    EL_ENSURE(off[k] <= off[k + 1] && off[k + 1] <= idx.numel(),
              "cpu sum_columns: offsets not ascending within [0, {}]", idx.numel());
  }
  for (int64_t k = 0; k < idx.numel(); ++k) {
    EL_ENSURE(ip[k] >= 0 && ip[k] < c, "cpu sum_columns: idx[{}] = {} outside [0, {})", k, ip[k],
              c);
  }
#pragma omp parallel for schedule(static) if (rows * m > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    float* orow = op + r * m;
    for (int64_t j = 0; j < m; ++j) {
      float s = 0.f;
      for (int32_t k = off[j]; k < off[j + 1]; ++k) s += xr[ip[k]];
      orow[j] = s;
    }
  }
}

}  // namespace el::cpu
