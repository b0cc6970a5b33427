// pos_encoding.h — the absolute positional encodings added to the token
// embedding (model card pos_encoding: sinusoidal | learned).
//
// Both are a table [P, C] read at each token's absolute position and added to
// its embedding before the first block: sinusoidal is a fixed table (no
// parameter), learned a trained one (model.embed_positions.weight, owned by
// models/decoder_lm). rope and alibi act inside attention instead
// (ops::rope, ops::attention's alibi_slopes); none adds nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace el {

// Vaswani et al. (2017) section 3.5, row-major [n_pos, dim]:
//   pe[p, 2i]     = sin(p / 10000^(2i / dim))
//   pe[p, 2i + 1] = cos(p / 10000^(2i / dim))
// computed in double and rounded to f32 (an odd dim ends with a sin column).
std::vector<float> sinusoidal_table_values(int64_t n_pos, int64_t dim);
// The same as a tensor [n_pos, dim] of `dtype` on `device` (no gradient).
Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype, Device device);

// Position ids i32 [B, T] on `device`: row b holds start[b] + t, t < T.
Tensor position_ids(const std::vector<int32_t>& start, int64_t T, Device device);

// x[B, T, C] + table[ids[b, t], :] (ids i32 [B, T], table [P, C] of x's
// dtype); differentiable in x and in the table (a learned one).
Tensor add_position_embedding(const Tensor& x, const Tensor& table, const Tensor& ids);

}  // namespace el
