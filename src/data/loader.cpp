// loader.cpp — random and sequential token-window batches.
#include "data/loader.h"


#include <algorithm>
#include <nlohmann/json.hpp>

#include "data/state_json.h"

namespace el::data {
using nlohmann::json;

namespace {
constexpr const char* kStateWhere = "data loader state";
}

// ---- state serialisation

std::string DataLoaderState::to_json() const {
  json r = json::array();
  for (uint64_t w : rng) r.push_back(w);
  const json j = {{"batch_size", batch_size},
                  {"seq_len", seq_len},
                  {"num_tokens", num_tokens},
                  {"rng", r},
                  {"random_batches", random_batches},
                  {"sequential_position", sequential_position}};
  return j.dump();
}

Result<DataLoaderState> DataLoaderState::from_json(std::string_view text) {
  EL_TRY_ASSIGN(const json j, state_json::parse_object(text, kStateWhere));
  DataLoaderState s;
  EL_TRY(state_json::read_int(j, "batch_size", kStateWhere, &s.batch_size));
  EL_TRY(state_json::read_int(j, "seq_len", kStateWhere, &s.seq_len));
  EL_TRY(state_json::read_int(j, "num_tokens", kStateWhere, &s.num_tokens));
  EL_TRY(state_json::read_int(j, "random_batches", kStateWhere, &s.random_batches));
  EL_TRY(state_json::read_int(j, "sequential_position", kStateWhere, &s.sequential_position));
  EL_TRY(state_json::read_rng(j, "rng", kStateWhere, &s.rng));
  return s;
}

// ---- DataLoader

Result<DataLoader> DataLoader::open(const std::vector<std::string>& shard_paths, int max_vocab,
                                    int64_t batch_size, int64_t seq_len, uint64_t seed) {
  if (shard_paths.empty())
    return make_error("no token shards given to the data loader", "",
                      "prepare a dataset first; its manifest lists the shards");
  if (batch_size < 1 || seq_len < 1)
    return make_error(
        fmt::format("batch_size {} and seq_len {} must both be >= 1", batch_size, seq_len));
  DataLoader dl;
  dl.batch_size_ = batch_size;
  dl.seq_len_ = seq_len;
  const int64_t T = seq_len;
  for (const std::string& p : shard_paths) {
    EL_TRY_ASSIGN(TokenShard s, TokenShard::open(p, max_vocab));
    const auto n = static_cast<int64_t>(s.size());
    dl.num_tokens_ += n;
    // random: any start in [0, n-T-1]; sequential: starts 0, T, 2T, ... with
    // the window's T+1 tokens inside the shard.
    dl.rand_windows_ += n >= T + 1 ? n - T : 0;
    dl.seq_windows_ += n >= T + 1 ? (n - 1) / T : 0;
    dl.rand_end_.push_back(dl.rand_windows_);
    dl.seq_end_.push_back(dl.seq_windows_);
    dl.shards_.push_back(std::move(s));
  }
  if (dl.rand_windows_ == 0)
    return make_error(fmt::format("shards hold {} tokens but no shard has the seq_len + 1 = {} "
                                  "tokens one window needs",
                                  dl.num_tokens_, T + 1),
                      shard_paths.size() == 1
                          ? shard_paths[0]
                          : fmt::format("{} (+{} more shards)", shard_paths[0],
                                        shard_paths.size() - 1),
                      "use more data or a shorter seq_len");
  dl.rng_.reseed(seed);
  dl.row_.resize(static_cast<size_t>(T + 1));
  return dl;
}

void DataLoader::locate(const std::vector<int64_t>& ends, int64_t index, size_t* shard,
                        int64_t* local) {
  const auto it = std::upper_bound(ends.begin(), ends.end(), index);
  *shard = static_cast<size_t>(it - ends.begin());
  *local = index - (*shard == 0 ? 0 : ends[*shard - 1]);
}

void DataLoader::copy_window(size_t shard, size_t start, int32_t* inputs, int32_t* targets) {
  shards_[shard].copy_to(start, row_.size(), row_.data());
  std::copy(row_.begin(), row_.end() - 1, inputs);
  std::copy(row_.begin() + 1, row_.end(), targets);
}

void DataLoader::next_random_into(int32_t* inputs, int32_t* targets) {
  for (int64_t b = 0; b < batch_size_; ++b) {
    const auto index = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(rand_windows_)));
    size_t shard = 0;
    int64_t local = 0;
    locate(rand_end_, index, &shard, &local);
    copy_window(shard, static_cast<size_t>(local), inputs + b * seq_len_, targets + b * seq_len_);
  }
  ++random_batches_;
}

bool DataLoader::next_sequential_into(int32_t* inputs, int32_t* targets) {
  if (position_ >= num_sequential_batches()) return false;
  for (int64_t b = 0; b < batch_size_; ++b) {
    size_t shard = 0;
    int64_t local = 0;
    locate(seq_end_, position_ * batch_size_ + b, &shard, &local);
    copy_window(shard, static_cast<size_t>(local * seq_len_), inputs + b * seq_len_,
                targets + b * seq_len_);
  }
  ++position_;
  return true;
}

void DataLoader::next_random(Tensor& inputs, Tensor& targets) {
  Tensor x = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  Tensor y = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  next_random_into(x.data<int32_t>(), y.data<int32_t>());
  inputs = x;
  targets = y;
}

bool DataLoader::next_sequential(Tensor& inputs, Tensor& targets) {
  if (position_ >= num_sequential_batches()) return false;
  Tensor x = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  Tensor y = Tensor::empty({batch_size_, seq_len_}, DType::i32);
  next_sequential_into(x.data<int32_t>(), y.data<int32_t>());
  inputs = x;
  targets = y;
  return true;
}

DataLoaderState DataLoader::snapshot() const {
  DataLoaderState s;
  s.batch_size = batch_size_;
  s.seq_len = seq_len_;
  s.num_tokens = num_tokens_;
  s.rng = rng_.state();
  s.random_batches = random_batches_;
  s.sequential_position = position_;
  return s;
}

Status DataLoader::restore(const DataLoaderState& s) {
  if (s.batch_size != batch_size_ || s.seq_len != seq_len_ || s.num_tokens != num_tokens_)
    return make_error(fmt::format("data loader state is for B={} T={} over {} tokens; this "
                                  "loader has B={} T={} over {} tokens",
                                  s.batch_size, s.seq_len, s.num_tokens, batch_size_, seq_len_,
                                  num_tokens_),
                      kStateWhere, "resume with the same dataset, batch size and seq_len");
  if (s.random_batches < 0 || s.sequential_position < 0 ||
      s.sequential_position > num_sequential_batches())
    return make_error(fmt::format("positions out of range (random_batches {}, "
                                  "sequential_position {} of {} batches)",
                                  s.random_batches, s.sequential_position,
                                  num_sequential_batches()),
                      kStateWhere);
  rng_.set_state(s.rng);
  random_batches_ = s.random_batches;
  position_ = s.sequential_position;
  return Status::Ok();
}

Status DataLoader::set_state(std::string_view state_json) {
  EL_TRY_ASSIGN(const DataLoaderState s, DataLoaderState::from_json(state_json));
  return restore(s);
}

}  // namespace el::data
