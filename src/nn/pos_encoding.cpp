#include "nn/pos_encoding.h"

#include <cmath>

#include "ops/ops.h"

namespace el {

std::vector<float> sinusoidal_table_values(int64_t n_pos, int64_t dim) {
  EL_ENSURE(n_pos >= 0 && dim > 0, "sinusoidal_table_values: n_pos {} / dim {}", n_pos, dim);
  std::vector<float> out(static_cast<size_t>(n_pos * dim));
  for (int64_t i = 0; i < dim; i += 2) {
    // 1 / 10000^(2i' / dim) for the pair (i, i + 1), i = 2i'.
    const double inv_freq = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(dim));
    for (int64_t p = 0; p < n_pos; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      out[static_cast<size_t>(p * dim + i)] = static_cast<float>(std::sin(angle));
      if (i + 1 < dim) out[static_cast<size_t>(p * dim + i + 1)] = static_cast<float>(std::cos(angle));
    }
  }
  return out;
}

Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype, Device device, float amplitude) {
  std::vector<float> values = sinusoidal_table_values(n_pos, dim);
  if (amplitude != 1.0f) {
    for (float& v : values) v *= amplitude;
  }
  const Tensor host = Tensor::from_floats(values, {n_pos, dim});
  if (dtype == DType::f32 && device.is_cpu()) return host;
  Tensor out = Tensor::empty({n_pos, dim}, dtype, device);
  out.copy_from(host);  // rounds to dtype
  return out;
}

float sinusoidal_amplitude(float init_std) { return init_std * std::sqrt(2.0f); }

Tensor position_ids(const std::vector<int32_t>& start, int64_t T, Device device) {
  const int64_t B = static_cast<int64_t>(start.size());
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      ids[static_cast<size_t>(b * T + t)] = start[static_cast<size_t>(b)] + static_cast<int32_t>(t);
    }
  }
  Tensor host = Tensor::from_ints(ids, {B, T});
  return device.is_cpu() ? host : host.to(device);
}

Tensor add_position_embedding(const Tensor& x, const Tensor& table, const Tensor& ids) {
  EL_ENSURE(x.ndim() == 3 && ids.ndim() == 2 && ids.dim(0) == x.dim(0) && ids.dim(1) == x.dim(1) &&
                table.ndim() == 2 && table.dim(1) == x.dim(2),
            "add_position_embedding: x {} / ids {} / table {} (expected [B, T, C], [B, T], [P, C])",
            shape_str(x.shape()), shape_str(ids.shape()), shape_str(table.shape()));
  return ops::add(x, ops::embedding(ids, table));  // [B, T, C]
}

}  // namespace el
