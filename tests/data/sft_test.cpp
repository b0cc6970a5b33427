// sft_test.cpp — SFT datasets (truncation, split, the load pipeline) and the
// batcher (shapes, padding, targets, shuffling, resumable state).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/data_fake_tokenizer.h"
#include "data/dataset.h"
#include "data/sft.h"
#include "data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::FakeTokenizer;
using testing::TempDir;
using testing::write_text;

std::string fixture(const std::string& name) {
  return std::string(EL_TEST_DATA_DIR) + "/sft/" + name;
}

TokenizedSample sample(int prompt, int response, int32_t first_id = 0) {
  TokenizedSample s;
  for (int i = 0; i < prompt + response; ++i) {
    s.ids.push_back(first_id + i);
    s.loss_mask.push_back(i >= prompt ? 1 : 0);
  }
  return s;
}

// n alpaca records "q<i>" -> "a<i>" in a temp file; record `bad` (if >= 0) lacks its output.
std::string alpaca_file(const TempDir& dir, const std::string& name, int n, int bad = -1) {
  std::string text;
  for (int i = 0; i < n; ++i)
    text += i == bad ? fmt::format("{{\"instruction\": \"q{}\", \"input\": \"\"}}\n", i)
                     : fmt::format("{{\"instruction\": \"q{}\", \"input\": \"\", \"output\": "
                                   "\"a{}\"}}\n", i, i);
  return write_text(dir.file(name), text);
}

std::vector<int64_t> records_of(const SftDataset& d) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < d.size(); ++i) out.push_back(d.record_index(i));
  return out;
}

// ---- truncation

TEST(SftTruncate, KeepsPromptStartAndCutsResponseEnd) {
  TokenizedSample s = sample(5, 5);
  EXPECT_EQ(truncate_sample(s, 10), TruncateOutcome::kept);
  EXPECT_EQ(s.ids.size(), 10u);
  EXPECT_EQ(truncate_sample(s, 7), TruncateOutcome::truncated);
  EXPECT_EQ(s.ids, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(s.loss_mask, (std::vector<uint8_t>{0, 0, 0, 0, 0, 1, 1}));
  TokenizedSample one = sample(5, 5);
  EXPECT_EQ(truncate_sample(one, 6), TruncateOutcome::truncated);  // one response token left
  TokenizedSample none = sample(5, 5);
  EXPECT_EQ(truncate_sample(none, 5), TruncateOutcome::dropped);  // the prompt fills the cutoff
  TokenizedSample longer = sample(8, 2);
  EXPECT_EQ(truncate_sample(longer, 4), TruncateOutcome::dropped);
  EXPECT_EQ(longer.ids.size(), 4u);  // the prompt start
}

// ---- load

TEST(SftLoad, AllFormatsWithChatml) {
  FakeTokenizer tok;
  SftOptions o;
  o.inputs = {fixture("alpaca.jsonl"), fixture("messages.jsonl"), fixture("openo1.jsonl"),
              fixture("medical_o1.json")};
  o.template_name = "chatml";
  o.cutoff_len = 4096;
  auto r = load_sft_data(o, tok);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const SftData& d = r.value();
  EXPECT_EQ(d.stats.records, 11);
  EXPECT_EQ(d.stats.train_samples, 11);
  EXPECT_EQ(d.stats.val_samples, 0);
  EXPECT_EQ(d.stats.truncated, 0);
  EXPECT_EQ(d.read.formats, (std::vector<SftFormat>{SftFormat::alpaca, SftFormat::messages,
                                                    SftFormat::openo1, SftFormat::medical_o1}));
  // Sample 4 is messages' first record: its loss tokens are "Hello.<|im_end|>".
  const SftDataset& tr = *d.train;
  std::vector<int32_t> loss;
  for (int64_t t = 0; t < tr.length(4); ++t)
    if (tr.loss_mask(4)[t]) loss.push_back(tr.ids(4)[t]);
  EXPECT_EQ(tok.decode(loss), "Hello.<|im_end|>");
  EXPECT_EQ(d.stats.train_tokens, tr.num_tokens());
  EXPECT_EQ(d.stats.train_loss_tokens, tr.num_loss_tokens());
  const std::string text = describe(d);
  for (const char* part : {"alpaca.jsonl (alpaca)", "medical_o1.json (medical-o1)",
                           "template chatml, cutoff_len 4096", "11 good, 0 bad skipped",
                           "train: 11 samples"})
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in:\n" << text;
}

TEST(SftLoad, TruncatedAndDroppedAreCounted) {
  FakeTokenizer tok;
  TempDir dir;
  const std::string path = write_text(dir.file("t.jsonl"),
                                      "{\"instruction\": \"abcd\", \"output\": \"xyz\"}\n"
                                      "{\"instruction\": \"abcdefgh\", \"output\": \"xyz\"}\n"
                                      "{\"instruction\": \"ab\", \"output\": \"x\"}\n");
  SftOptions o;
  o.inputs = {path};
  o.template_name = "chatml";
  o.system_prompt = "";
  // chatml prompt "<|im_start|>user\n" + q + "<|im_end|>\n<|im_start|>assistant\n":
  // 1 + 5 + |q| + 1 + 1 + 1 + 10 = 19 + |q| tokens; response |a| + 1; then "\n".
  o.cutoff_len = 25;
  const SftData d = load_sft_data(o, tok).value();
  EXPECT_EQ(d.stats.records, 3);
  EXPECT_EQ(d.stats.truncated, 1);  // 23 + 4 + 1 = 28 > 25
  EXPECT_EQ(d.stats.dropped, 1);    // the prompt alone is 27
  EXPECT_EQ(d.stats.train_samples, 2);
  EXPECT_EQ(d.train->length(0), 25);
  EXPECT_EQ(d.train->max_length(), 25);
  EXPECT_EQ(records_of(*d.train), (std::vector<int64_t>{0, 2}));
  EXPECT_NE(describe(d).find("1 truncated, 1 dropped"), std::string::npos);
  // Every record dropped: an error with a hint.
  o.cutoff_len = 20;
  expect_error(load_sft_data(o, tok),
               {"no training samples: 3 good record(s), 3 dropped", "raise cutoff_len"});
}

TEST(SftLoad, SplitIsDeterministicAndFollowsRecordIndexes) {
  FakeTokenizer tok;
  TempDir dir;
  SftOptions o;
  o.inputs = {alpaca_file(dir, "a.jsonl", 200)};
  o.val_fraction = 0.2;
  o.seed = 7;
  const SftData a = load_sft_data(o, tok).value();
  const SftData b = load_sft_data(o, tok).value();
  EXPECT_EQ(records_of(*a.val), records_of(*b.val));
  EXPECT_EQ(a.stats.train_samples + a.stats.val_samples, 200);
  EXPECT_GT(a.stats.val_samples, 20);
  EXPECT_LT(a.stats.val_samples, 60);
  for (int64_t r : records_of(*a.val)) EXPECT_TRUE(is_validation_document(r, 7, 0.2));
  for (int64_t r : records_of(*a.train)) EXPECT_FALSE(is_validation_document(r, 7, 0.2));
  // Another seed, another split.
  o.seed = 8;
  EXPECT_NE(records_of(*load_sft_data(o, tok).value().val), records_of(*a.val));
  // A skipped bad record does not move the others between splits.
  o.seed = 7;
  o.inputs = {alpaca_file(dir, "b.jsonl", 200, /*bad=*/3)};
  o.read.on_bad_record = BadRecordPolicy::skip;
  const SftData c = load_sft_data(o, tok).value();
  EXPECT_EQ(c.stats.bad_records, 1);
  std::vector<int64_t> expected = records_of(*a.val), got = records_of(*c.val);
  expected.erase(std::remove(expected.begin(), expected.end(), 3), expected.end());
  EXPECT_EQ(got, expected);
}

TEST(SftLoad, OptionErrors) {
  FakeTokenizer tok;
  SftOptions o;
  o.inputs = {fixture("alpaca.jsonl")};
  o.cutoff_len = 1;
  expect_error(load_sft_data(o, tok), {"--cutoff-len", "cutoff_len 1 must be >= 2"});
  o.cutoff_len = 1024;
  o.val_fraction = 1.0;
  expect_error(load_sft_data(o, tok), {"--val-fraction", "val_fraction 1 must be in [0, 1)"});
  o.val_fraction = 0.001;
  expect_error(load_sft_data(o, tok), {"no validation samples", "raise val_fraction"});
  o.val_fraction = 0.0;
  o.template_name = "zephyr";
  expect_error(load_sft_data(o, tok), {"unknown chat template 'zephyr'"});
  o.template_name = "alpaca";
  o.inputs = {fixture("bad.jsonl")};
  expect_error(load_sft_data(o, tok), {"bad.jsonl:2", "missing key 'output'"});
  o.read.on_bad_record = BadRecordPolicy::skip;
  const SftData d = load_sft_data(o, tok).value();
  EXPECT_EQ(d.stats.bad_records, 6);
  EXPECT_NE(describe(d).find("6 bad record(s) skipped; first: "), std::string::npos);
}

// ---- batcher

// Three samples: lengths 3 (prompt 1), 5 (prompt 2), 2 (prompt 1); ids start
// at 10, 20, 30.
std::shared_ptr<const SftDataset> small_dataset() {
  auto d = std::make_shared<SftDataset>();
  d->add(sample(1, 2, 10), 0);
  d->add(sample(2, 3, 20), 1);
  d->add(sample(1, 1, 30), 2);
  return d;
}

std::vector<int32_t> values(const Tensor& t) {
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

TEST(SftBatcher, PadsToLongestAndShiftsTargets) {
  SftBatchOptions o;
  o.batch_size = 2;
  o.shuffle = false;
  o.pad_id = 99;
  SftBatcher b = SftBatcher::create(small_dataset(), o).value();
  EXPECT_EQ(b.batches_per_epoch(), 2);
  EXPECT_EQ(b.max_seq_len(), 5);
  SftBatch batch;
  ASSERT_TRUE(b.next(batch));
  EXPECT_EQ(batch.ids.shape(), (Shape{2, 5}));
  EXPECT_EQ(batch.targets.shape(), (Shape{2, 5}));
  EXPECT_EQ(batch.ids.dtype(), DType::i32);
  EXPECT_EQ(values(batch.ids), (std::vector<int32_t>{10, 11, 12, 99, 99,  //
                                                     20, 21, 22, 23, 24}));
  // Target at t = the next id when that id is a response token.
  EXPECT_EQ(values(batch.targets), (std::vector<int32_t>{11, 12, -1, -1, -1,  //
                                                         -1, 22, 23, 24, -1}));
  EXPECT_EQ(batch.info.seq_len, 5);
  EXPECT_EQ(batch.info.samples, 2);
  EXPECT_EQ(batch.info.tokens, 8);
  EXPECT_EQ(batch.info.loss_tokens, 5);
  // The last batch: one sample and an empty padding row.
  ASSERT_TRUE(b.next(batch));
  EXPECT_EQ(batch.ids.shape(), (Shape{2, 2}));
  EXPECT_EQ(values(batch.ids), (std::vector<int32_t>{30, 31, 99, 99}));
  EXPECT_EQ(values(batch.targets), (std::vector<int32_t>{31, -1, -1, -1}));
  EXPECT_EQ(batch.info.samples, 1);
  EXPECT_FALSE(b.next(batch));
  EXPECT_EQ(batch.info.samples, 1);  // untouched
  // reset() replays the epoch; next_epoch() starts another.
  b.reset();
  ASSERT_TRUE(b.next(batch));
  EXPECT_EQ(values(batch.ids)[0], 10);
  b.next_epoch();
  EXPECT_EQ(b.epoch(), 1);
  ASSERT_TRUE(b.next(batch));
  EXPECT_EQ(batch.info.epoch, 1);
}

TEST(SftBatcher, FixedSeqLenAndDropLast) {
  SftBatchOptions o;
  o.batch_size = 2;
  o.shuffle = false;
  o.seq_len = 8;
  o.drop_last = true;
  SftBatcher b = SftBatcher::create(small_dataset(), o).value();
  EXPECT_EQ(b.batches_per_epoch(), 1);
  SftBatch batch;
  ASSERT_TRUE(b.next(batch));
  EXPECT_EQ(batch.ids.shape(), (Shape{2, 8}));
  EXPECT_EQ(values(batch.targets)[8 + 5], -1);
  EXPECT_FALSE(b.next(batch));  // the incomplete batch is dropped
  // next_into fills caller buffers with the same layout.
  b.reset();
  std::vector<int32_t> ids(2 * 8), tg(2 * 8);
  SftBatchInfo info;
  ASSERT_TRUE(b.next_into(ids.data(), tg.data(), &info));
  EXPECT_EQ(ids, values(batch.ids));
  EXPECT_EQ(tg, values(batch.targets));
  EXPECT_EQ(info.seq_len, 8);
}

TEST(SftBatcher, ShuffleIsSeededAndCoversEverySampleEachEpoch) {
  auto d = std::make_shared<SftDataset>();
  for (int i = 0; i < 20; ++i) d->add(sample(1, 1, 100 * i), i);
  SftBatchOptions o;
  o.batch_size = 3;
  o.seed = 5;
  auto epoch_order = [](SftBatcher& b) {
    std::vector<int32_t> firsts;
    SftBatch batch;
    while (b.next(batch))
      for (int64_t r = 0; r < batch.info.samples; ++r)
        firsts.push_back(batch.ids.data<int32_t>()[r * batch.info.seq_len]);
    return firsts;
  };
  SftBatcher a = SftBatcher::create(d, o).value();
  SftBatcher b = SftBatcher::create(d, o).value();
  const auto e0 = epoch_order(a);
  EXPECT_EQ(e0, epoch_order(b));
  EXPECT_EQ(std::set<int32_t>(e0.begin(), e0.end()).size(), 20u);
  std::vector<int32_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(e0, sorted);
  a.next_epoch();
  const auto e1 = epoch_order(a);
  EXPECT_EQ(std::set<int32_t>(e1.begin(), e1.end()).size(), 20u);
  EXPECT_NE(e0, e1);
  o.seed = 6;
  SftBatcher c = SftBatcher::create(d, o).value();
  EXPECT_NE(epoch_order(c), e0);
}

TEST(SftBatcher, StateResumesExactly) {
  auto d = std::make_shared<SftDataset>();
  for (int i = 0; i < 7; ++i) d->add(sample(1, 1 + i % 3, 10 * i), i);
  SftBatchOptions o;
  o.batch_size = 2;
  o.seed = 11;
  SftBatcher a = SftBatcher::create(d, o).value();
  SftBatch batch;
  auto step = [&](SftBatcher& b) {
    if (!b.next(batch)) {
      b.next_epoch();
      EXPECT_TRUE(b.next(batch));
    }
    return values(batch.ids);
  };
  for (int i = 0; i < 5; ++i) step(a);  // into the second epoch
  const std::string state = a.state();
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 6; ++i) expected.push_back(step(a));
  SftBatcher r = SftBatcher::create(d, o).value();
  ASSERT_TRUE(r.set_state(state).ok());
  EXPECT_EQ(r.epoch(), 1);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(step(r), expected[i]) << "batch " << i;
  EXPECT_EQ(SftBatcherState::from_json(state).value().to_json(), state);
}

TEST(SftBatcher, StateErrors) {
  SftBatchOptions o;
  o.batch_size = 2;
  SftBatcher a = SftBatcher::create(small_dataset(), o).value();
  const SftBatcherState s = a.snapshot();
  o.batch_size = 3;
  SftBatcher other = SftBatcher::create(small_dataset(), o).value();
  expect_error(other.restore(s), {"SFT batcher state", "belongs to another batcher",
                                  "batch_size 2", "same data, template, cutoff_len"});
  auto d = std::make_shared<SftDataset>();
  d->add(sample(1, 2, 10), 0);
  d->add(sample(2, 3, 20), 1);
  d->add(sample(1, 1, 30), 5);  // same lengths, another record: another hash
  o.batch_size = 2;
  SftBatcher moved = SftBatcher::create(d, o).value();
  expect_error(moved.restore(s), {"belongs to another batcher"});
  SftBatcherState bad = s;
  bad.position = 4;
  expect_error(a.restore(bad), {"position 4", "out of range"});
  expect_error(SftBatcherState::from_json("{"), {"SFT batcher state", "malformed JSON"});
  expect_error(SftBatcherState::from_json("[]"), {"expected a JSON object"});
  expect_error(SftBatcherState::from_json(R"({"batch_size": 2})"),
               {"SFT batcher state: key 'seq_len'", "missing or not an integer"});
  std::string no_rng = s.to_json();
  no_rng.replace(no_rng.find("\"epoch_rng\""), 11, "\"rng_xx\"");
  expect_error(SftBatcherState::from_json(no_rng), {"key 'epoch_rng'", "expected an array of 5"});
}

TEST(SftBatcher, CreateErrors) {
  SftBatchOptions o;
  expect_error(SftBatcher::create(std::make_shared<SftDataset>(), o),
               {"the SFT dataset has no samples"});
  o.batch_size = 0;
  expect_error(SftBatcher::create(small_dataset(), o), {"batch_size 0 and pad_to_multiple 1 must be >= 1"});
  o.batch_size = 2;
  o.pad_to_multiple = 0;
  expect_error(SftBatcher::create(small_dataset(), o), {"pad_to_multiple 0 must be >= 1"});
  o.pad_to_multiple = 1;
  o.seq_len = 4;
  expect_error(SftBatcher::create(small_dataset(), o),
               {"seq_len 4 is shorter than the longest sample (5 tokens)", "cutoff_len <= seq_len"});
  o.seq_len = 0;
  o.batch_size = 4;
  o.drop_last = true;
  expect_error(SftBatcher::create(small_dataset(), o),
               {"drop_last with 3 sample(s) and batch_size 4 leaves no batch"});
}

// pad_to_multiple rounds each batch's length up (few shapes for the GPU's
// per-shape GEMM plans); the extra positions are padding with no loss.
TEST(SftBatcher, PadToMultipleRoundsTheBatchLength) {
  SftBatchOptions o;
  o.batch_size = 3;
  o.shuffle = false;
  o.pad_to_multiple = 4;
  auto b = SftBatcher::create(small_dataset(), o);
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->max_seq_len(), 8);  // longest sample 5 -> 8
  SftBatch batch;
  ASSERT_TRUE(b->next(batch));
  EXPECT_EQ(batch.info.seq_len, 8);
  EXPECT_EQ(batch.ids.dim(1), 8);
  const int32_t* t = batch.targets.data<int32_t>();
  for (int64_t r = 0; r < 3; ++r) EXPECT_EQ(t[r * 8 + 7], -1) << "row " << r;
  o.seq_len = 6;  // a fixed length is kept as it is
  auto fixed = SftBatcher::create(small_dataset(), o);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->max_seq_len(), 6);
}

TEST(SftBatcher, EndToEndTargetsAreTheResponse) {
  FakeTokenizer tok;
  SftOptions so;
  so.inputs = {fixture("alpaca.jsonl")};
  so.template_name = "llama3";
  const SftData d = load_sft_data(so, tok).value();
  SftBatchOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.pad_id = *tok.pad_id();
  SftBatcher b = SftBatcher::create(d.train, o).value();
  SftBatch batch;
  ASSERT_TRUE(b.next(batch));
  const int64_t T = batch.info.seq_len;
  const std::vector<std::string> outputs = {"1. Eat well.\n2. Exercise.\n3. Sleep.", "Bonjour",
                                            "Red", "5"};
  int64_t loss = 0;
  for (int r = 0; r < 4; ++r) {
    std::vector<int32_t> tg;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t v = batch.targets.data<int32_t>()[r * T + t];
      if (v >= 0) tg.push_back(v);
    }
    loss += static_cast<int64_t>(tg.size());
    EXPECT_EQ(tok.decode(tg), outputs[r] + "<|eot_id|>");
  }
  EXPECT_EQ(loss, batch.info.loss_tokens);
  EXPECT_EQ(loss, d.train->num_loss_tokens());
}

}  // namespace
}  // namespace el::data
