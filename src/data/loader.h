// loader.h — batches of token windows from shards, for training and validation.
//
// One DataLoader over a list of shards serves two walks:
//   next_random()     (training) — each row of a batch is a window of T+1
//                     consecutive tokens at a position drawn uniformly from
//                     all valid positions of all shards (a window never
//                     crosses a shard boundary), with the loader's own seeded
//                     el::Rng: same seed, same batches (nanoGPT-style sampling
//                     with replacement). state()/set_state() capture the Rng,
//                     so a resumed run continues with exactly the batches it
//                     would have seen.
//   next_sequential() (validation) — the shards are cut into fixed
//                     non-overlapping windows: window w of a shard holds
//                     tokens [w*T, w*T + T]; batch b takes windows
//                     b*B .. b*B+B-1 in shard order. A shard's tail shorter
//                     than a window and the last incomplete batch are dropped,
//                     so each pass yields the same num_sequential_batches()
//                     batches and validation loss is deterministic. It returns
//                     false after the last batch; reset() starts a new pass.
// In both walks targets[b][t] = inputs[b][t+1] of the same window, and the
// tensors are fresh [B, T] i32 CPU tensors (never overwritten later, so a
// caller or the autograd tape may keep them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "data/shard.h"

namespace el::data {

// What state() serialises: the Rng and both walk positions, plus a
// fingerprint (B, T, total tokens) so a state is only restored into a loader
// over the same data with the same batch shape.
struct DataLoaderState {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  int64_t num_tokens = 0;
  Rng::State rng{};
  int64_t random_batches = 0;       // next_random() calls so far (informational)
  int64_t sequential_position = 0;  // index of the next sequential batch

  // One-line JSON object; from_json errors name the key.
  std::string to_json() const;
  static Result<DataLoaderState> from_json(std::string_view text);
  bool operator==(const DataLoaderState&) const = default;
};

class DataLoader {
 public:
  // Opens and validates every shard with TokenShard::open(path, max_vocab)
  // (max_vocab = the model's vocab; 0 checks only the shard headers).
  // Errors: no shards, batch_size or seq_len < 1, a bad shard (its own
  // message), no shard holding the seq_len + 1 tokens of one window.
  static Result<DataLoader> open(const std::vector<std::string>& shard_paths, int max_vocab,
                                 int64_t batch_size, int64_t seq_len, uint64_t seed);

  // Training batch: inputs, targets = new [B, T] i32 CPU tensors.
  void next_random(Tensor& inputs, Tensor& targets);
  // Validation batch of the current pass; false (tensors untouched) once the
  // pass has produced num_sequential_batches() batches.
  bool next_sequential(Tensor& inputs, Tensor& targets);
  // The same into caller-owned host buffers of B*T int32 each (pinned
  // staging memory for a GPU, ...).
  void next_random_into(int32_t* inputs, int32_t* targets);
  bool next_sequential_into(int32_t* inputs, int32_t* targets);
  // Rewinds the sequential walk to batch 0 (the random stream is untouched).
  void reset() { position_ = 0; }

  // Full sequential batches per pass (0 when the data holds fewer than B
  // windows: lower B or T, or prepare more validation text).
  int64_t num_sequential_batches() const { return seq_windows_ / batch_size_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t batch_size() const { return batch_size_; }
  int64_t seq_len() const { return seq_len_; }
  const std::vector<TokenShard>& shards() const { return shards_; }

  DataLoaderState snapshot() const;
  Status restore(const DataLoaderState& state);
  // snapshot()/restore() as a JSON string (what checkpoints store).
  std::string state() const { return snapshot().to_json(); }
  Status set_state(std::string_view state_json);

 private:
  // Global window index -> (shard, first token) for a walk's prefix sums.
  static void locate(const std::vector<int64_t>& ends, int64_t index, size_t* shard,
                     int64_t* local);
  void copy_window(size_t shard, size_t start, int32_t* inputs, int32_t* targets);

  std::vector<TokenShard> shards_;
  int64_t batch_size_ = 0, seq_len_ = 0;
  std::vector<int64_t> rand_end_, seq_end_;  // prefix sums of windows per shard
  int64_t rand_windows_ = 0, seq_windows_ = 0;
  int64_t num_tokens_ = 0;
  Rng rng_;
  int64_t random_batches_ = 0;
  int64_t position_ = 0;
  std::vector<int32_t> row_;  // T+1 scratch
};

}  // namespace el::data
