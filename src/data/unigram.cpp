// unigram.cpp — add-one smoothed unigram perplexity.
#include "data/unigram.h"

#include <cmath>
#include <limits>

#include "data/shard.h"

namespace el::data {
namespace {

// exp of the mean negative log-probability of `val` under the smoothed counts.
double perplexity_from_counts(const std::vector<int64_t>& counts, int64_t n_train,
                              const std::vector<int64_t>& val_counts, int64_t n_val) {
  if (n_val == 0) return std::numeric_limits<double>::quiet_NaN();
  const double denom = std::log(static_cast<double>(n_train) + static_cast<double>(counts.size()));
  double nll = 0.0;  // summed per vocab entry: exact and O(V) instead of O(N_val)
  for (size_t v = 0; v < counts.size(); ++v)
    if (val_counts[v] > 0)
      nll += static_cast<double>(val_counts[v]) *
             (denom - std::log(static_cast<double>(counts[v]) + 1.0));
  return std::exp(nll / static_cast<double>(n_val));
}

}  // namespace

double unigram_perplexity(const std::vector<uint32_t>& train, const std::vector<uint32_t>& val,
                          int vocab_size) {
  EL_ENSURE(vocab_size >= 1, "vocab_size {} must be >= 1", vocab_size);
  std::vector<int64_t> counts(static_cast<size_t>(vocab_size), 0), val_counts(counts);
  for (uint32_t t : train) {
    EL_ENSURE(t < static_cast<uint32_t>(vocab_size), "token {} outside vocab {}", t, vocab_size);
    ++counts[t];
  }
  for (uint32_t t : val) {
    EL_ENSURE(t < static_cast<uint32_t>(vocab_size), "token {} outside vocab {}", t, vocab_size);
    ++val_counts[t];
  }
  return perplexity_from_counts(counts, static_cast<int64_t>(train.size()), val_counts,
                                static_cast<int64_t>(val.size()));
}

Result<double> unigram_perplexity(const std::vector<std::string>& train_shards,
                                  const std::vector<std::string>& val_shards, int vocab_size) {
  if (vocab_size < 1) return make_error(fmt::format("vocab_size {} must be >= 1", vocab_size));
  std::vector<int64_t> counts(static_cast<size_t>(vocab_size), 0), val_counts(counts);
  auto count = [&](const std::vector<std::string>& paths, std::vector<int64_t>& into,
                   int64_t* n) -> Status {
    for (const std::string& p : paths) {
      EL_TRY_ASSIGN(const TokenShard s, TokenShard::open(p, vocab_size));
      for (size_t i = 0; i < s.size(); ++i) ++into[s[i]];  // ids validated by open()
      *n += static_cast<int64_t>(s.size());
    }
    return Status::Ok();
  };
  int64_t n_train = 0, n_val = 0;
  EL_TRY(count(train_shards, counts, &n_train));
  EL_TRY(count(val_shards, val_counts, &n_val));
  if (n_val == 0)
    return make_error("the validation shards hold no tokens",
                      val_shards.empty() ? std::string() : val_shards.front());
  return perplexity_from_counts(counts, n_train, val_counts, n_val);
}

Result<double> unigram_perplexity(const Dataset& dataset) {
  return unigram_perplexity(dataset.train_shards, dataset.val_shards, dataset.vocab_size);
}

}  // namespace el::data
