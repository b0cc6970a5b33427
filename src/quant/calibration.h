// calibration.h — the token ids GPTQ calibrates on: windows of the built-in
// corpus tokenized with the model's tokenizer, or of token shards written by
// `efficientllm data` (data/shard.h).
//
//   builtin   the built-in corpus's files (data/corpus.h) in an order drawn
//             from `seed`, each tokenized whole (EOS after each file when the
//             tokenizer has one), at most 4 windows from one file so the
//             samples cover many documents; consecutive windows of seq_len.
//   shards    .bin token shards, or dataset directories (their train
//             shards, as GPTQ calibrates on training text): each window a
//             random (seed) shard, weighted by its length, at a random offset.
// Deterministic for a given seed and inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tensor.h"

namespace el::quant {

struct CalibrationOptions {
  // {"builtin"}, or shard files / dataset directories.
  std::vector<std::string> sources = {"builtin"};
  int64_t samples = 128;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  std::string tokenizer;  // builtin: a tokenizer file or a directory holding one
  int vocab_size = 0;     // the model's; every id must be below it
  std::string doc_root = "/usr/share/doc";  // builtin corpus root (EL_DOC_ROOT overrides)
};

struct CalibrationData {
  Tensor ids;                  // i32 [samples, seq_len] on the host
  nlohmann::json description;  // source, samples, seq_len, tokens, files/shards, seed
};

// Errors: samples or seq_len < 1, builtin without a tokenizer or with one
// larger than the model's vocabulary, too little text, a shard that fails
// TokenShard::open (ids checked against vocab_size), shards all shorter than
// seq_len (the longest is named), mixing builtin with files.
Result<CalibrationData> load_calibration(const CalibrationOptions& options);

}  // namespace el::quant
