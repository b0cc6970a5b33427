// unigram.h — the unigram perplexity baseline of a tokenized corpus.
//
// A model that ignores context and predicts every token with its training
// frequency reaches this perplexity on the validation split; an LM that
// learned anything must beat it (and one that learned nothing sits near it,
// or near vocab_size if it learned even less). The bench prints it beside the
// models' perplexities so readers can see how far training got.
//   p(v) = (count_train(v) + 1) / (N_train + V)      (add-one smoothing)
//   PPL  = exp(-(1/N_val) * sum_{t in val} ln p(t))
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"

namespace el::data {

// From token streams in memory. vocab_size >= 1; every id must be < vocab_size
// (EL_ENSURE: callers pass validated shards); an empty `val` gives NaN.
double unigram_perplexity(const std::vector<uint32_t>& train, const std::vector<uint32_t>& val,
                          int vocab_size);

// From shard files (e.g. a manifest's splits). Shards are opened with
// TokenShard::open(path, vocab_size), so a bad shard is an Error; so is a
// validation split without tokens.
Result<double> unigram_perplexity(const std::vector<std::string>& train_shards,
                                  const std::vector<std::string>& val_shards, int vocab_size);

// A prepared dataset's baseline: its train shards against its val shards.
Result<double> unigram_perplexity(const Dataset& dataset);

}  // namespace el::data
