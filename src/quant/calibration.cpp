#include "quant/calibration.h"

#include <algorithm>
#include <filesystem>

#include "core/rng.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data/tokenizer_factory.h"

namespace el::quant {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxWindowsPerFile = 4;

Result<CalibrationData> from_builtin(const CalibrationOptions& o) {
  if (o.tokenizer.empty()) {
    return make_error("the built-in calibration text needs the model's tokenizer", "--calib builtin",
                      "give --tokenizer (a tokenizer.json / .model, or the directory holding it)");
  }
  EL_TRY_ASSIGN(std::unique_ptr<data::TextTokenizer> tok, data::load_text_tokenizer(o.tokenizer));
  if (o.vocab_size > 0 && tok->vocab_size() > o.vocab_size) {
    return make_error(fmt::format("the tokenizer has {} ids but the model's vocab_size is {}", tok->vocab_size(),
                                  o.vocab_size),
                      o.tokenizer, "use the tokenizer the model was trained with");
  }
  EL_TRY_ASSIGN(std::vector<std::string> files, data::builtin_corpus_files(o.doc_root));
  // A seeded shuffle (Fisher-Yates) of the files.
  Rng rng(o.seed);
  for (size_t i = files.size(); i > 1; --i) std::swap(files[i - 1], files[rng.below(i)]);
  const int64_t need = o.samples * o.seq_len, per_file = kMaxWindowsPerFile * o.seq_len;
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(need));
  int64_t used_files = 0;
  for (const std::string& f : files) {
    if (static_cast<int64_t>(ids.size()) >= need) break;
    std::vector<int32_t> doc;
    EL_TRY(data::for_each_document({f}, "text", [&](data::Document&& d) -> Status {
      const std::vector<int32_t> t = tok->encode(d.text);
      doc.insert(doc.end(), t.begin(), t.end());
      if (auto eos = tok->eos_id()) doc.push_back(*eos);
      return {};
    }));
    const int64_t take = std::min<int64_t>({static_cast<int64_t>(doc.size()), per_file,
                                            need - static_cast<int64_t>(ids.size())});
    if (take <= 0) continue;
    ids.insert(ids.end(), doc.begin(), doc.begin() + take);
    ++used_files;
  }
  if (static_cast<int64_t>(ids.size()) < need) {
    return make_error(fmt::format("the built-in corpus gave {} tokens, {} samples x {} need {}", ids.size(),
                                  o.samples, o.seq_len, need),
                      "--calib builtin", "use fewer --calib-samples or a shorter --calib-seq-len");
  }
  for (int32_t id : ids) {
    if (o.vocab_size > 0 && (id < 0 || id >= o.vocab_size)) {
      return make_error(fmt::format("the tokenizer produced id {} outside the model's vocabulary", id),
                        o.tokenizer, "use the tokenizer the model was trained with");
    }
  }
  CalibrationData out;
  out.ids = Tensor::from_ints(ids, {o.samples, o.seq_len});
  out.description = {{"source", "builtin"}, {"tokenizer", o.tokenizer}, {"files", used_files},
                     {"samples", o.samples}, {"seq_len", o.seq_len},   {"tokens", need},
                     {"seed", o.seed}};
  return out;
}

Result<CalibrationData> from_shards(const CalibrationOptions& o) {
  std::vector<std::string> paths;
  for (const std::string& s : o.sources) {
    std::error_code ec;
    if (fs::is_directory(s, ec)) {
      EL_TRY_ASSIGN(data::Dataset ds, data::load_dataset_manifest(s));
      paths.insert(paths.end(), ds.train_shards.begin(), ds.train_shards.end());
    } else {
      paths.push_back(s);
    }
  }
  std::vector<data::TokenShard> shards;
  std::vector<int64_t> starts;  // windows each shard can start: size - seq_len + 1
  int64_t total = 0, longest = 0;
  for (const std::string& p : paths) {
    EL_TRY_ASSIGN(data::TokenShard shard, data::TokenShard::open(p, o.vocab_size));
    const auto size = static_cast<int64_t>(shard.size());
    longest = std::max(longest, size);
    starts.push_back(std::max<int64_t>(0, size - o.seq_len + 1));
    total += starts.back();
    shards.push_back(std::move(shard));
  }
  if (total == 0) {
    return make_error(fmt::format("the calibration shards hold at most {} tokens each, fewer than "
                                  "--calib-seq-len {}",
                                  longest, o.seq_len),
                      "--calib", "use a shorter --calib-seq-len or larger shards");
  }
  Rng rng(o.seed);
  std::vector<int32_t> ids(static_cast<size_t>(o.samples * o.seq_len));
  for (int64_t i = 0; i < o.samples; ++i) {
    // A start uniform over all windows of all shards (shards weighted by length).
    int64_t at = static_cast<int64_t>(rng.below(static_cast<uint64_t>(total)));
    size_t s = 0;
    while (at >= starts[s]) at -= starts[s++];
    shards[s].copy_to(static_cast<size_t>(at), static_cast<size_t>(o.seq_len), ids.data() + i * o.seq_len);
  }
  CalibrationData out;
  out.ids = Tensor::from_ints(ids, {o.samples, o.seq_len});
  out.description = {{"source", "shards"}, {"shards", paths},         {"samples", o.samples},
                     {"seq_len", o.seq_len}, {"tokens", o.samples * o.seq_len}, {"seed", o.seed}};
  return out;
}

}  // namespace

Result<CalibrationData> load_calibration(const CalibrationOptions& o) {
  if (o.samples < 1 || o.seq_len < 1) {
    return make_error(fmt::format("{} samples of {} tokens: both must be positive", o.samples, o.seq_len),
                      "--calib-samples / --calib-seq-len");
  }
  if (o.sources.empty()) {
    return make_error("no calibration data", "--calib", "use --calib builtin or token shards");
  }
  const bool builtin = std::find(o.sources.begin(), o.sources.end(), "builtin") != o.sources.end();
  if (builtin && o.sources.size() > 1) {
    return make_error("`builtin` cannot be combined with files", "--calib",
                      "use either --calib builtin or a list of token shards");
  }
  return builtin ? from_builtin(o) : from_shards(o);
}

}  // namespace el::quant
