// sft.cpp — SFT datasets (format, truncate, split) and the batcher.
#include "data/sft.h"


#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "data/state_json.h"
#include "data/dataset.h"

namespace el::data {
using nlohmann::json;

// ---- SftDataset

std::span<const int32_t> SftDataset::ids(int64_t i) const {
  EL_ENSURE(i >= 0 && i < size(), "sample {} out of range [0, {})", i, size());
  return {ids_.data() + offsets_[i], static_cast<size_t>(length(i))};
}

std::span<const uint8_t> SftDataset::loss_mask(int64_t i) const {
  EL_ENSURE(i >= 0 && i < size(), "sample {} out of range [0, {})", i, size());
  return {mask_.data() + offsets_[i], static_cast<size_t>(length(i))};
}

void SftDataset::add(const TokenizedSample& s, int64_t record_index) {
  EL_ENSURE(!s.ids.empty() && s.ids.size() == s.loss_mask.size(),
            "sample of {} ids and {} mask entries", s.ids.size(), s.loss_mask.size());
  ids_.insert(ids_.end(), s.ids.begin(), s.ids.end());
  mask_.insert(mask_.end(), s.loss_mask.begin(), s.loss_mask.end());
  offsets_.push_back(static_cast<int64_t>(ids_.size()));
  records_.push_back(record_index);
  const auto n = static_cast<int64_t>(s.ids.size());
  loss_tokens_ += s.loss_tokens();
  max_length_ = std::max(max_length_, n);
  for (uint64_t v : {static_cast<uint64_t>(n), static_cast<uint64_t>(record_index)})
    for (int b = 0; b < 8; ++b) {
      fingerprint_ ^= (v >> (8 * b)) & 0xff;
      fingerprint_ *= 1099511628211ull;  // FNV-1a prime
    }
}

// ---- truncation

TruncateOutcome truncate_sample(TokenizedSample& s, int64_t cutoff_len) {
  EL_ENSURE(cutoff_len >= 1, "cutoff_len {} < 1", cutoff_len);
  const auto cutoff = static_cast<size_t>(cutoff_len);
  if (s.ids.size() <= cutoff) return TruncateOutcome::kept;
  s.ids.resize(cutoff);
  s.loss_mask.resize(cutoff);
  // A response token at position 0 has no previous position to predict it
  // from, so it does not count as training signal.
  for (size_t t = 1; t < cutoff; ++t)
    if (s.loss_mask[t] != 0) return TruncateOutcome::truncated;
  return TruncateOutcome::dropped;
}

// ---- load

Result<SftData> load_sft_data(const SftOptions& o, const TextTokenizer& tokenizer) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.cutoff_len < 2)
    return make_error(fmt::format("cutoff_len {} must be >= 2 (a prompt token and a response "
                                  "token)", o.cutoff_len), "--cutoff-len");
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    return make_error(fmt::format("val_fraction {} must be in [0, 1)", o.val_fraction),
                      "--val-fraction");
  EL_TRY_ASSIGN(ChatTemplate tmpl, chat_template_by_name(o.template_name));
  EL_TRY_ASSIGN(SftFormatter formatter, SftFormatter::create(tmpl, tokenizer, o.system_prompt));

  SftData d;
  d.template_name = tmpl.name;
  d.cutoff_len = o.cutoff_len;
  auto train = std::make_shared<SftDataset>();
  auto val = std::make_shared<SftDataset>();
  SftStats& st = d.stats;
  EL_TRY(for_each_sft_record(
      o.inputs, o.read,
      [&](SftRecord&& r) -> Status {
        auto sample = formatter.format(r.conversation);
        if (!sample.ok()) {
          Error e = sample.error();
          e.where = fmt::format("{}:{}: {}", o.inputs[r.file_index], r.line, e.where);
          return e;
        }
        switch (truncate_sample(sample.value(), o.cutoff_len)) {
          case TruncateOutcome::dropped: ++st.dropped; return Status::Ok();
          case TruncateOutcome::truncated: ++st.truncated; break;
          case TruncateOutcome::kept: break;
        }
        SftDataset& split =
            is_validation_document(r.index, o.seed, o.val_fraction) ? *val : *train;
        split.add(sample.value(), r.index);
        return Status::Ok();
      },
      &d.read));
  st.records = d.read.records;
  st.bad_records = d.read.bad_records;
  st.train_samples = train->size();
  st.val_samples = val->size();
  st.train_tokens = train->num_tokens();
  st.val_tokens = val->num_tokens();
  st.train_loss_tokens = train->num_loss_tokens();
  st.val_loss_tokens = val->num_loss_tokens();
  st.max_length = std::max(train->max_length(), val->max_length());
  if (train->empty())
    return make_error(
        fmt::format("no training samples: {} good record(s), {} dropped (prompt fills "
                    "cutoff_len {}), {} for validation",
                    st.records, st.dropped, o.cutoff_len, st.val_samples),
        o.inputs.empty() ? std::string() : o.inputs.front(),
        st.dropped > 0 ? "raise cutoff_len" : "add records or lower val_fraction");
  if (o.val_fraction > 0.0 && val->empty())
    return make_error(fmt::format("no validation samples: val_fraction {} of {} sample(s) with "
                                  "seed {} picked none",
                                  o.val_fraction, st.train_samples, o.seed),
                      "--val-fraction", "raise val_fraction, or use 0 for no validation split");
  d.train = std::move(train);
  d.val = std::move(val);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return d;
}

std::string describe(const SftData& d) {
  std::string formats;
  for (size_t i = 0; i < d.read.files.size(); ++i) {
    if (i == 4) {
      formats += fmt::format(", ... ({} files)", d.read.files.size());
      break;
    }
    formats += fmt::format("{}{} ({})", i == 0 ? "" : ", ", d.read.files[i],
                           i < d.read.formats.size() ? sft_format_name(d.read.formats[i]) : "?");
  }
  const SftStats& s = d.stats;
  std::string out = fmt::format("SFT data: {}\n", formats);
  out += fmt::format("  template {}, cutoff_len {}\n", d.template_name, d.cutoff_len);
  out += fmt::format("  records: {} good, {} bad skipped, {} truncated, {} dropped (response "
                     "fully cut)\n",
                     s.records, s.bad_records, s.truncated, s.dropped);
  if (s.bad_records > 0) out += "  " + d.read.bad_summary() + "\n";
  out += fmt::format("  train: {} samples, {} tokens ({} in the loss)\n", s.train_samples,
                     s.train_tokens, s.train_loss_tokens);
  out += fmt::format("  val:   {} samples, {} tokens ({} in the loss)\n", s.val_samples,
                     s.val_tokens, s.val_loss_tokens);
  out += fmt::format("  longest sample {} tokens, {:.2f} s", s.max_length, s.seconds);
  return out;
}

// ---- batcher state

namespace {
constexpr const char* kStateWhere = "SFT batcher state";
}

std::string SftBatcherState::to_json() const {
  json r = json::array();
  for (uint64_t w : epoch_rng) r.push_back(w);
  const json j = {{"batch_size", batch_size}, {"seq_len", seq_len},
                  {"num_samples", num_samples}, {"fingerprint", fingerprint},
                  {"epoch_rng", r},           {"epoch", epoch},
                  {"position", position},     {"batches", batches}};
  return j.dump();
}

Result<SftBatcherState> SftBatcherState::from_json(std::string_view text) {
  EL_TRY_ASSIGN(const json j, state_json::parse_object(text, kStateWhere));
  SftBatcherState s;
  EL_TRY(state_json::read_int(j, "batch_size", kStateWhere, &s.batch_size));
  EL_TRY(state_json::read_int(j, "seq_len", kStateWhere, &s.seq_len));
  EL_TRY(state_json::read_int(j, "num_samples", kStateWhere, &s.num_samples));
  EL_TRY(state_json::read_int(j, "epoch", kStateWhere, &s.epoch));
  EL_TRY(state_json::read_int(j, "position", kStateWhere, &s.position));
  EL_TRY(state_json::read_int(j, "batches", kStateWhere, &s.batches));
  if (!j.contains("fingerprint") || !j["fingerprint"].is_number_unsigned())
    return make_error("missing or not an unsigned integer",
                      fmt::format("{}: key 'fingerprint'", kStateWhere));
  s.fingerprint = j["fingerprint"].get<uint64_t>();
  EL_TRY(state_json::read_rng(j, "epoch_rng", kStateWhere, &s.epoch_rng));
  return s;
}

// ---- SftBatcher

Result<SftBatcher> SftBatcher::create(std::shared_ptr<const SftDataset> data,
                                      const SftBatchOptions& o) {
  if (!data || data->empty())
    return make_error("the SFT dataset has no samples", "", "check the split and cutoff_len");
  if (o.batch_size < 1 || o.seq_len < 0 || o.pad_to_multiple < 1)
    return make_error(fmt::format("batch_size {} and pad_to_multiple {} must be >= 1 and seq_len {} >= 0 "
                                  "(0 = pad to the longest sample of each batch)",
                                  o.batch_size, o.pad_to_multiple, o.seq_len));
  if (o.seq_len > 0 && data->max_length() > o.seq_len)
    return make_error(fmt::format("seq_len {} is shorter than the longest sample ({} tokens)",
                                  o.seq_len, data->max_length()),
                      "", "set cutoff_len <= seq_len, or seq_len 0 to pad per batch");
  if (o.drop_last && data->size() < o.batch_size)
    return make_error(fmt::format("drop_last with {} sample(s) and batch_size {} leaves no batch",
                                  data->size(), o.batch_size),
                      "", "lower batch_size or turn drop_last off");
  SftBatcher b;
  b.data_ = std::move(data);
  b.options_ = o;
  b.rng_.reseed(o.seed);
  b.shuffle_epoch();
  return b;
}

void SftBatcher::shuffle_epoch() {
  epoch_rng_ = rng_.state();
  const int64_t n = data_->size();
  order_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order_[i] = i;
  if (!options_.shuffle) return;
  for (int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(order_[i], order_[rng_.below(static_cast<uint64_t>(i + 1))]);
}

int64_t SftBatcher::batches_per_epoch() const {
  const int64_t n = data_->size(), B = options_.batch_size;
  return options_.drop_last ? n / B : (n + B - 1) / B;
}

namespace {
int64_t round_up(int64_t v, int64_t m) { return m > 1 ? (v + m - 1) / m * m : v; }
}  // namespace

int64_t SftBatcher::max_seq_len() const {
  return options_.seq_len > 0 ? options_.seq_len : round_up(data_->max_length(), options_.pad_to_multiple);
}

void SftBatcher::next_epoch() {
  ++epoch_;
  position_ = 0;
  shuffle_epoch();
}

bool SftBatcher::next_shape(int64_t* rows, int64_t* T) const {
  const int64_t n = data_->size(), B = options_.batch_size;
  *rows = std::min(B, n - position_);
  if (*rows <= 0 || (options_.drop_last && *rows < B)) return false;
  *T = options_.seq_len;
  if (*T == 0) {
    for (int64_t r = 0; r < *rows; ++r) *T = std::max(*T, data_->length(order_[position_ + r]));
    *T = round_up(*T, options_.pad_to_multiple);
  }
  return true;
}

bool SftBatcher::next_into(int32_t* ids, int32_t* targets, SftBatchInfo* info) {
  const int64_t B = options_.batch_size;
  int64_t rows = 0, T = 0;
  if (!next_shape(&rows, &T)) return false;
  SftBatchInfo bi;
  bi.seq_len = T;
  bi.samples = rows;
  bi.epoch = epoch_;
  for (int64_t r = 0; r < B; ++r) {
    int32_t* row_ids = ids + r * T;
    int32_t* row_tgt = targets + r * T;
    int64_t len = 0;
    if (r < rows) {
      const int64_t s = order_[position_ + r];
      const auto sid = data_->ids(s);
      const auto mask = data_->loss_mask(s);
      len = static_cast<int64_t>(sid.size());
      for (int64_t t = 0; t < len; ++t) {
        row_ids[t] = sid[t];
        const bool counted = t + 1 < len && mask[t + 1] != 0;
        row_tgt[t] = counted ? sid[t + 1] : -1;
        bi.loss_tokens += counted ? 1 : 0;
      }
      bi.tokens += len;
    }
    std::fill(row_ids + len, row_ids + T, options_.pad_id);
    std::fill(row_tgt + len, row_tgt + T, -1);
  }
  position_ += rows;
  ++batches_;
  if (info != nullptr) *info = bi;
  return true;
}

bool SftBatcher::next(SftBatch& out) {
  const int64_t B = options_.batch_size;
  int64_t rows = 0, T = 0;
  if (!next_shape(&rows, &T)) return false;
  Tensor ids = Tensor::empty({B, T}, DType::i32);
  Tensor targets = Tensor::empty({B, T}, DType::i32);
  SftBatchInfo info;
  const bool ok = next_into(ids.data<int32_t>(), targets.data<int32_t>(), &info);
  EL_ENSURE(ok && info.seq_len == T, "batch of T {} expected, got {}", T, info.seq_len);
  out.ids = std::move(ids);
  out.targets = std::move(targets);
  out.info = info;
  return true;
}

SftBatcherState SftBatcher::snapshot() const {
  SftBatcherState s;
  s.batch_size = options_.batch_size;
  s.seq_len = options_.seq_len;
  s.num_samples = data_->size();
  s.fingerprint = data_->fingerprint();
  s.epoch_rng = epoch_rng_;
  s.epoch = epoch_;
  s.position = position_;
  s.batches = batches_;
  return s;
}

Status SftBatcher::restore(const SftBatcherState& s) {
  if (s.batch_size != options_.batch_size || s.seq_len != options_.seq_len ||
      s.num_samples != data_->size() || s.fingerprint != data_->fingerprint())
    return make_error(
        fmt::format("the state belongs to another batcher: batch_size {}, seq_len {}, {} samples, "
                    "data hash {:016x}; this one has {}, {}, {}, {:016x}",
                    s.batch_size, s.seq_len, s.num_samples, s.fingerprint, options_.batch_size,
                    options_.seq_len, data_->size(), data_->fingerprint()),
        kStateWhere, "resume with the same data, template, cutoff_len, split and batch shape");
  if (s.epoch < 0 || s.position < 0 || s.position > data_->size() || s.batches < 0)
    return make_error(fmt::format("epoch {}, position {} or batches {} out of range", s.epoch,
                                  s.position, s.batches),
                      kStateWhere);
  rng_.set_state(s.epoch_rng);
  shuffle_epoch();  // recomputes this epoch's order and leaves rng_ after it
  epoch_ = s.epoch;
  position_ = s.position;
  batches_ = s.batches;
  return Status::Ok();
}

Status SftBatcher::set_state(std::string_view state_json) {
  EL_TRY_ASSIGN(SftBatcherState s, SftBatcherState::from_json(state_json));
  return restore(s);
}

}  // namespace el::data
