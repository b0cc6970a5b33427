// sft.h — supervised fine-tuning data: records -> formatted samples -> batches.
//
// load_sft_data() runs the whole pipeline in one streaming pass:
//   JSON records (sft_records.h: alpaca, messages, OpenO1-SFT,
//   medical-o1-reasoning-SFT; bad records skipped or fatal)
//   -> ids + loss mask with a named chat template (sft_format.h)
//   -> truncation to cutoff_len (truncate_sample below)
//   -> train or validation by a hash of the record index
//      (is_validation_document, the pretraining dataset's split function)
//   -> two in-memory SftDatasets.
// SftBatcher turns a dataset into [B, T] batches for training (shuffled per
// epoch) or validation (in order). docs/FINETUNING.md shows the templates,
// the masks and the batch layout with examples.
//
// Truncation: a sample longer than cutoff_len keeps its first cutoff_len
// tokens: the prompt start is kept and the response end is cut (its
// end-of-turn token included, so a truncated answer does not learn to stop).
// A sample left without response tokens (the prompt alone fills cutoff_len)
// is dropped and counted.
//
// Batch layout (right padding): row b holds sample s of n <= T tokens:
//   ids[b][t]     = s.ids[t] for t < n, pad_id after
//   targets[b][t] = s.ids[t+1] if t+1 < n and loss_mask[t+1] == 1, else -1
// so the model at position t is trained to predict the next token only when
// that token belongs to a response; padding and prompt positions carry -1,
// which ops::cross_entropy ignores. This is Hugging Face's labels layout
// (labels = ids with -100 on the prompt, shifted inside the model) with the
// shift done here. Right padding needs no attention mask under causal
// attention: no real position attends to a later padding position.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "data/sft_format.h"
#include "data/sft_records.h"
#include "data/text_tokenizer.h"

namespace el::data {

// ---- datasets

// Samples packed back to back (ids + mask), immutable once built.
class SftDataset {
 public:
  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  bool empty() const { return records_.empty(); }
  std::span<const int32_t> ids(int64_t i) const;        // [length(i)]
  std::span<const uint8_t> loss_mask(int64_t i) const;  // [length(i)]
  int64_t length(int64_t i) const { return offsets_[i + 1] - offsets_[i]; }
  int64_t record_index(int64_t i) const { return records_[i]; }  // SftRecord::index
  int64_t num_tokens() const { return offsets_.back(); }
  int64_t num_loss_tokens() const { return loss_tokens_; }
  int64_t max_length() const { return max_length_; }
  // Hash of every sample's length and record index: a batcher state is only
  // restored into a batcher over the same samples.
  uint64_t fingerprint() const { return fingerprint_; }

  // Appends a sample (ids and mask of the same, non-zero length).
  void add(const TokenizedSample& s, int64_t record_index);

 private:
  std::vector<int32_t> ids_;
  std::vector<uint8_t> mask_;
  std::vector<int64_t> offsets_{0};  // sample i = [offsets_[i], offsets_[i+1])
  std::vector<int64_t> records_;
  int64_t loss_tokens_ = 0, max_length_ = 0;
  uint64_t fingerprint_ = 1469598103934665603ull;  // FNV-1a offset basis
};

enum class TruncateOutcome { kept, truncated, dropped };
// Applies the truncation rule (file comment) in place. `dropped` leaves the
// sample cut but without response tokens; the caller discards it.
TruncateOutcome truncate_sample(TokenizedSample& s, int64_t cutoff_len);

struct SftOptions {
  std::vector<std::string> inputs;   // JSON Lines / JSON array files, read in order
  SftReadOptions read;               // format, bad-record policy, record size cap
  std::string template_name = "alpaca";
  std::optional<std::string> system_prompt;  // replaces the template's default system prompt
  int64_t cutoff_len = 1024;         // max tokens per sample (specials included), >= 2
  double val_fraction = 0.0;         // share of records for validation, in [0, 1)
  uint64_t seed = 0;                 // picks which records are validation
};

struct SftStats {
  int64_t records = 0;      // good records read
  int64_t bad_records = 0;  // skipped bad records (policy skip)
  int64_t truncated = 0;    // cut to cutoff_len, kept
  int64_t dropped = 0;      // no response token left after truncation
  int64_t train_samples = 0, val_samples = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_loss_tokens = 0, val_loss_tokens = 0;
  int64_t max_length = 0;   // longest sample after truncation
  double seconds = 0.0;
};

struct SftData {
  std::shared_ptr<const SftDataset> train, val;  // val is empty when val_fraction = 0
  SftReadReport read;   // files, formats found, bad-record report
  SftStats stats;
  std::string template_name;
  int64_t cutoff_len = 0;
};

// The pipeline (file comment). Errors: cutoff_len < 2, val_fraction outside
// [0, 1), an unknown template or one the tokenizer cannot serve, reading
// errors (sft_records.h), no training sample left (hint: raise cutoff_len or
// lower val_fraction), val_fraction > 0 with no validation sample.
Result<SftData> load_sft_data(const SftOptions& options, const TextTokenizer& tokenizer);

// A few human-readable lines: files and formats, template, counts (good,
// bad with the first locations, truncated, dropped), samples/tokens per split.
std::string describe(const SftData& d);

// ---- batches

struct SftBatchOptions {
  int64_t batch_size = 8;
  // 0: T = the longest sample of each batch; > 0: every batch is
  // [B, seq_len] (fixed shapes; must be >= the dataset's longest sample).
  int64_t seq_len = 0;
  // seq_len 0: T is rounded up to a multiple of this (HF's pad_to_multiple_of),
  // so a run sees a few batch shapes rather than one per length (a GPU plans
  // and tunes its GEMMs per shape).
  int64_t pad_to_multiple = 1;
  bool shuffle = true;      // a new seeded permutation each epoch (validation: false)
  bool drop_last = false;   // drop an epoch's last incomplete batch; else pad it with empty rows
  uint64_t seed = 0;
  int32_t pad_id = 0;       // written into padding ids (their targets are -1 anyway)
};

struct SftBatchInfo {
  int64_t seq_len = 0;      // T of this batch
  int64_t samples = 0;      // real rows; rows samples..B-1 are empty padding (last batch only)
  int64_t tokens = 0;       // non-padding ids
  int64_t loss_tokens = 0;  // targets >= 0
  int64_t epoch = 0;
};

struct SftBatch {
  Tensor ids;      // [B, T] i32 CPU
  Tensor targets;  // [B, T] i32 CPU, -1 = no loss
  SftBatchInfo info;
};

// What state() serialises: the epoch, the position in it and the Rng as it
// was before this epoch's shuffle (the permutation is recomputed on
// restore), plus a fingerprint (B, seq_len, samples, dataset hash).
struct SftBatcherState {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  int64_t num_samples = 0;
  uint64_t fingerprint = 0;
  Rng::State epoch_rng{};
  int64_t epoch = 0;
  int64_t position = 0;  // next sample of this epoch's order
  int64_t batches = 0;   // batches produced so far, all epochs (informational)

  std::string to_json() const;  // one line; from_json errors name the key
  static Result<SftBatcherState> from_json(std::string_view text);
  bool operator==(const SftBatcherState&) const = default;
};

class SftBatcher {
 public:
  // Errors: an empty dataset, batch_size < 1, seq_len < 0, seq_len smaller
  // than the longest sample (hint: cutoff_len <= seq_len), drop_last with
  // fewer samples than batch_size (no batch at all).
  static Result<SftBatcher> create(std::shared_ptr<const SftDataset> data,
                                   const SftBatchOptions& options);

  // Next batch of the current epoch into new tensors; false (out untouched)
  // once the epoch is exhausted: call next_epoch() to go on.
  bool next(SftBatch& out);
  // The same into caller-owned buffers of batch_size() * max_seq_len() ints
  // each (pinned staging memory), rows of info->seq_len ints back to back.
  bool next_into(int32_t* ids, int32_t* targets, SftBatchInfo* info);
  // Starts the next epoch (a new permutation when shuffling).
  void next_epoch();
  // Restarts the current epoch in the same order (a validation pass).
  void reset() { position_ = 0; }

  int64_t batches_per_epoch() const;
  int64_t batch_size() const { return options_.batch_size; }
  // The widest batch next() can return: seq_len, or the longest sample.
  int64_t max_seq_len() const;
  int64_t epoch() const { return epoch_; }
  const SftDataset& dataset() const { return *data_; }

  SftBatcherState snapshot() const;
  Status restore(const SftBatcherState& state);
  std::string state() const { return snapshot().to_json(); }
  Status set_state(std::string_view state_json);

 private:
  SftBatcher() = default;  // create() builds a valid one
  void shuffle_epoch();  // order_ for the current epoch from rng_ (saved first)
  // Rows and T of the next batch; false when the epoch has no batch left.
  bool next_shape(int64_t* rows, int64_t* T) const;

  std::shared_ptr<const SftDataset> data_;
  SftBatchOptions options_;
  std::vector<int64_t> order_;
  Rng rng_;
  Rng::State epoch_rng_{};
  int64_t epoch_ = 0, position_ = 0, batches_ = 0;
};

}  // namespace el::data
