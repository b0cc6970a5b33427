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
// The same times `amplitude`, as a tensor [n_pos, dim] of `dtype` on
// `device` (no gradient).
Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype, Device device,
                        float amplitude = 1.0f);

// The amplitude DecoderLM gives its sinusoidal table: init_std * sqrt(2), so
// a table row has the RMS of a freshly initialised token embedding row
// (init_std; a sin/cos pair's mean square is 1/2). At amplitude 1 the table
// is ~100x the embeddings at the paper's init std 0.008, and in bf16 (8
// mantissa bits) adding a value of ~0.008 to one of ~1 rounds it away: the
// tokens vanish from the model's input. On gpu-lite (bf16, 1000 steps) the
// unscaled table trained to the unigram baseline (PPL 801 against 790.9) and
// never left it. Vaswani et al. scale the embeddings up by sqrt(d_model)
// instead; scaling the fixed table keeps the embedding (and a tied lm_head)
// the same as in every other variant of the comparison.
float sinusoidal_amplitude(float init_std);

// Position ids i32 [B, T] on `device`: row b holds start[b] + t, t < T.
Tensor position_ids(const std::vector<int32_t>& start, int64_t T, Device device);

// x[B, T, C] + table[ids[b, t], :] (ids i32 [B, T], table [P, C] of x's
// dtype); differentiable in x and in the table (a learned one).
Tensor add_position_embedding(const Tensor& x, const Tensor& table, const Tensor& ids);

}  // namespace el
