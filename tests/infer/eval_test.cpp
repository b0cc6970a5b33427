// Quality evaluation (infer/eval.h): perplexity against model.loss on the
// same windows, multiple-choice scores against a brute-force per-choice
// computation, lm-eval's tokenisation at the context/continuation boundary,
// and the error paths.
#include "infer/eval.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/tape.h"
#include "common/data_fake_tokenizer.h"
#include "common/test_cards.h"
#include "data/data_test_util.h"
#include "data/loader.h"
#include "data/shard.h"

namespace el::infer {
namespace {

using data::testing::FakeTokenizer;
using data::testing::TempDir;

const std::string kFixtures = std::string(EL_TEST_DATA_DIR) + "/eval";

// The tests' tiny Llama-layout model, with a vocabulary holding the fake
// tokenizer's 256 bytes + specials + merges.
std::unique_ptr<DecoderLM> tiny_model(int vocab = 300, int max_seq_len = 64,
                                      DType dtype = DType::f32) {
  ModelCard card =
      parse_model_card(test::small_card_yaml("eval", 48, vocab, max_seq_len), "eval.yaml").value();
  return DecoderLM::create(card, Device::cpu(), 11, dtype).value();
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return t;
}

template <class R>
void expect_error(const R& r, const std::vector<std::string>& parts) {
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << parts.front() << "'";
  const std::string msg = r.error().message();
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

// ---- perplexity -------------------------------------------------------------

TEST(EvalPerplexity, EqualsExpOfMeanModelLossOnTheSameWindows) {
  auto model = tiny_model();
  const int64_t T = 16;
  const std::vector<int32_t> tokens = random_tokens(7 * T + 5, 300, 1);  // 7 windows + a tail
  double sum = 0;
  {
    NoGrad ng;
    for (int64_t w = 0; w < 7; ++w) {
      std::vector<int32_t> in(tokens.begin() + w * T, tokens.begin() + w * T + T);
      std::vector<int32_t> tg(tokens.begin() + w * T + 1, tokens.begin() + w * T + T + 1);
      sum += model->loss(Tensor::from_ints(in, {1, T}), Tensor::from_ints(tg, {1, T})).item();
    }
  }
  const double expected = sum / 7;
  for (const int64_t B : {1, 3, 8}) {  // 3: a partial last batch
    auto r = evaluate_perplexity(*model, tokens, EvalOptions{T, 0, B});
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->windows, 7);
    EXPECT_EQ(r->tokens, 7 * T);
    EXPECT_EQ(r->seq_len, T);
    EXPECT_NEAR(r->mean_nll, expected, 1e-5 * expected) << "B=" << B;
    EXPECT_NEAR(r->perplexity, std::exp(expected), 1e-5 * std::exp(expected));
    EXPECT_GT(r->seconds, 0);
    // A random model is near uniform over its 300 ids.
    EXPECT_NEAR(r->mean_nll, std::log(300.0), 0.2);
  }
  // max_tokens: the first max_tokens / T windows.
  auto two = evaluate_perplexity(*model, tokens, EvalOptions{T, 2 * T + 3, 8});
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->windows, 2);
  // seq_len 0: the card's max_seq_len (64): (117 - 1) / 64 = 1 window.
  auto full = evaluate_perplexity(*model, tokens, EvalOptions{0, 0, 8});
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->seq_len, 64);
  EXPECT_EQ(full->windows, 1);
}

// Shards: the trainer's validation windows (DataLoader's sequential walk).
TEST(EvalPerplexity, ShardsGiveTheTrainersValidationLoss) {
  TempDir dir;
  const int64_t T = 8, B = 2;
  std::vector<std::string> paths = {dir.file("val_000000.bin"), dir.file("val_000001.bin")};
  auto to_u32 = [](const std::vector<int32_t>& v) { return std::vector<uint32_t>(v.begin(), v.end()); };
  data::write_shard(paths[0], to_u32(random_tokens(5 * T + 3, 300, 2)), 300).check();
  data::write_shard(paths[1], to_u32(random_tokens(3 * T + 1, 300, 3)), 300).check();
  auto model = tiny_model();
  // The trainer's evaluate(): mean of per-batch model.loss over full batches.
  auto loader = data::DataLoader::open(paths, 300, B, T, 0).value();
  double sum = 0;
  int64_t batches = 0;
  {
    NoGrad ng;
    Tensor ids, targets;
    while (loader.next_sequential(ids, targets)) {
      sum += model->loss(ids, targets).item();
      ++batches;
    }
  }
  ASSERT_EQ(batches, 4);  // 8 windows
  auto r = evaluate_perplexity(*model, paths, EvalOptions{T, batches * B * T, 3});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->windows, 8);
  EXPECT_NEAR(r->mean_nll, sum / static_cast<double>(batches), 1e-5 * r->mean_nll);
}

TEST(EvalPerplexity, Bf16ModelMatchesItsOwnLoss) {
  auto model = tiny_model(300, 64, DType::bf16);
  const int64_t T = 16;
  const std::vector<int32_t> tokens = random_tokens(4 * T + 1, 300, 4);
  double sum = 0;
  {
    NoGrad ng;
    for (int64_t w = 0; w < 4; ++w) {
      std::vector<int32_t> in(tokens.begin() + w * T, tokens.begin() + w * T + T);
      std::vector<int32_t> tg(tokens.begin() + w * T + 1, tokens.begin() + w * T + T + 1);
      sum += model->loss(Tensor::from_ints(in, {1, T}), Tensor::from_ints(tg, {1, T})).item();
    }
  }
  auto r = evaluate_perplexity(*model, tokens, EvalOptions{T, 0, 4});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_NEAR(r->mean_nll, sum / 4, 1e-4 * r->mean_nll);
}

TEST(EvalPerplexity, Errors) {
  auto model = tiny_model();
  const std::vector<int32_t> tokens = random_tokens(100, 300, 5);
  expect_error(evaluate_perplexity(*model, tokens, EvalOptions{16, 0, 0}), {"batch_size (0)"});
  expect_error(evaluate_perplexity(*model, tokens, EvalOptions{16, -1, 1}), {"max_tokens (-1)"});
  expect_error(evaluate_perplexity(*model, tokens, EvalOptions{128, 0, 1}), {"128", "max_seq_len"});
  expect_error(evaluate_perplexity(*model, tokens, EvalOptions{16, 10, 1}),
               {"max_tokens 10 is smaller than one window of seq_len 16"});
  expect_error(evaluate_perplexity(*model, std::vector<int32_t>(10, 1), EvalOptions{16, 0, 1}),
               {"10 tokens hold no window of seq_len + 1 = 17"});
  std::vector<int32_t> bad = tokens;
  bad[42] = 300;
  expect_error(evaluate_perplexity(*model, bad, EvalOptions{16, 0, 1}),
               {"token 300 at index 42", "[0, 300)"});
  TempDir dir;
  expect_error(evaluate_perplexity(*model, std::vector<std::string>{dir.file("nope.bin")},
                                   EvalOptions{16, 0, 1}),
               {dir.file("nope.bin")});
  expect_error(evaluate_perplexity(*model, std::vector<std::string>{}, EvalOptions{16, 0, 1}),
               {"no token shards"});
}

// ---- tokenisation at the boundary ------------------------------------------

TEST(EvalEncodePair, LmEvalBoundaryRules) {
  FakeTokenizer::Options o;
  o.merges = {"a ", "bc"};
  FakeTokenizer tok(o);
  const int32_t merge_a_space = 256 + static_cast<int32_t>(o.specials.size());
  const int32_t merge_bc = merge_a_space + 1;
  // Trailing whitespace of the context moves to the continuation.
  auto p = encode_pair(tok, "xy ", "z").value();
  EXPECT_EQ(p.context, (std::vector<int32_t>{'x', 'y'}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{' ', 'z'}));
  // The continuation is the tail of encode(context + continuation): here a
  // merge across the boundary ("a ") moves the space into the context's
  // last token, and the continuation keeps only what follows.
  p = encode_pair(tok, "ba", " c").value();
  EXPECT_EQ(p.context, (std::vector<int32_t>{'b', 'a'}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{'c'}));
  // A merge that swallows the whole continuation ("b" + "c" -> "bc") would
  // leave no tail: the continuation is then encoded on its own.
  p = encode_pair(tok, "ab", "c").value();
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{'a', merge_bc}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{'c'}));
  // An empty context becomes the prefix token: BOS, else EOS.
  p = encode_pair(tok, "", "q").value();
  EXPECT_EQ(p.context, (std::vector<int32_t>{*tok.bos_id()}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{'q'}));
  p = encode_pair(tok, "", "q", tok.id("<pad>")).value();  // a caller's prefix token
  EXPECT_EQ(p.context, (std::vector<int32_t>{tok.id("<pad>")}));
  FakeTokenizer::Options eos_only;
  eos_only.bos = "";
  p = encode_pair(FakeTokenizer(eos_only), " ", "q").value();
  EXPECT_EQ(p.context, (std::vector<int32_t>{*FakeTokenizer(eos_only).eos_id()}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{' ', 'q'}));
  FakeTokenizer::Options none;
  none.bos = "";
  none.eos = "";
  expect_error(encode_pair(FakeTokenizer(none), "", "q"), {"neither BOS nor EOS"});
}

// ---- multiple choice --------------------------------------------------------

// log p(cont | prefix) by one forward of [prefix + cont] (minus its last
// token), log-softmax on the host in f64.
double brute_logprob(const DecoderLM& model, const std::vector<int32_t>& seq, size_t cont_len) {
  NoGrad ng;
  const int64_t V = model.card().vocab_size;
  std::vector<int32_t> input(seq.begin(), seq.end() - 1);
  const auto L = static_cast<int64_t>(input.size());
  const std::vector<float> logits = model.forward(Tensor::from_ints(input, {1, L})).to_floats();
  double lp = 0;
  for (size_t k = 0; k < cont_len; ++k) {
    const size_t pos = input.size() - cont_len + k;
    const int32_t target = seq[pos + 1];
    const float* row = logits.data() + pos * static_cast<size_t>(V);
    double mx = row[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
    lp += static_cast<double>(row[target]) - mx - std::log(z);
  }
  return lp;
}

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

int first_argmax(const std::vector<double>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(EvalChoice, ScoresEqualBruteForceAndAccNormUsesBytes) {
  auto model = tiny_model();
  FakeTokenizer tok;  // one id per byte: the expected tokens are the bytes
  auto task = data::read_choice_task(kFixtures + "/generic.jsonl").value();
  ChoiceOptions o;
  o.batch_size = 3;  // batches mix items and choices of different lengths
  o.keep_records = true;
  auto r = evaluate_choice(*model, tok, task, o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->items, 4);
  ASSERT_EQ(r->records.size(), 4u);
  EXPECT_EQ(r->sequences, 9);
  EXPECT_EQ(r->truncated_items, 0);
  EXPECT_EQ(r->max_seq_len, 64);
  EXPECT_FALSE(to_json(*r).contains("acc_mutual_info"));
  int64_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < task.items.size(); ++i) {
    const data::ChoiceItem& item = task.items[i];
    const ChoiceRecord& rec = r->records[i];
    EXPECT_EQ(rec.source, item.source);
    EXPECT_EQ(rec.gold, item.gold);
    std::vector<double> lp, norm;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      const std::string cont = item.target_delimiter + item.choices[c];
      std::vector<int32_t> seq = bytes_of(item.context);
      const std::vector<int32_t> cont_ids = bytes_of(cont);
      seq.insert(seq.end(), cont_ids.begin(), cont_ids.end());
      lp.push_back(brute_logprob(*model, seq, cont_ids.size()));
      norm.push_back(lp.back() / static_cast<double>(item.choices[c].size()));
      EXPECT_NEAR(rec.logprob[c], lp.back(), 1e-4 * std::abs(lp.back())) << item.source << " choice " << c;
      EXPECT_EQ(rec.tokens[c], static_cast<int64_t>(cont_ids.size()));
      EXPECT_EQ(rec.bytes[c], static_cast<int64_t>(item.choices[c].size()));
    }
    EXPECT_EQ(rec.pred, first_argmax(lp));
    EXPECT_EQ(rec.pred_norm, first_argmax(norm));
    correct += rec.pred == item.gold;
    correct_norm += rec.pred_norm == item.gold;
  }
  // "crème fraîche": 15 UTF-8 bytes, 13 characters; the delimiter is not counted.
  EXPECT_EQ(r->records[3].bytes, (std::vector<int64_t>{4, 15}));
  EXPECT_EQ(r->correct, correct);
  EXPECT_EQ(r->correct_norm, correct_norm);
  EXPECT_DOUBLE_EQ(r->acc, static_cast<double>(correct) / 4);
  EXPECT_DOUBLE_EQ(r->acc_norm, static_cast<double>(correct_norm) / 4);
  const double p = r->acc;
  EXPECT_NEAR(r->acc_stderr, std::sqrt(p * (1 - p) / 3), 1e-12);
  // Batch size changes nothing but rounding.
  o.batch_size = 1;
  auto one = evaluate_choice(*model, tok, task, o).value();
  for (size_t i = 0; i < 4; ++i)
    for (size_t c = 0; c < one.records[i].logprob.size(); ++c)
      EXPECT_NEAR(one.records[i].logprob[c], r->records[i].logprob[c], 1e-4);
  const nlohmann::json j = to_json(*r);
  EXPECT_EQ(j["items"], 4);
  EXPECT_EQ(j["records"].size(), 4u);
  EXPECT_EQ(j["records"][3]["bytes"][1], 15);
  o.keep_records = false;
  o.max_items = 2;
  auto two = evaluate_choice(*model, tok, task, o).value();
  EXPECT_EQ(two.items, 2);
  EXPECT_TRUE(two.records.empty());
  EXPECT_FALSE(to_json(two).contains("records"));
}

TEST(EvalChoice, MutualInfoSubtractsTheUnconditionalScore) {
  auto model = tiny_model();
  FakeTokenizer tok;
  auto task = data::read_choice_task(kFixtures + "/generic.jsonl").value();
  ChoiceOptions o;
  o.batch_size = 4;
  o.keep_records = true;
  o.mutual_info = true;
  for (const std::optional<int32_t> prefix : {std::optional<int32_t>(), std::optional<int32_t>(tok.id("</s>"))}) {
    o.prefix_token = prefix;
    auto r = evaluate_choice(*model, tok, task, o);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->sequences, 18);
    int64_t correct = 0;
    for (size_t i = 0; i < task.items.size(); ++i) {
      const data::ChoiceItem& item = task.items[i];
      const ChoiceRecord& rec = r->records[i];
      ASSERT_EQ(rec.logprob_unconditional.size(), item.choices.size());
      std::vector<double> mi;
      for (size_t c = 0; c < item.choices.size(); ++c) {
        // lm-eval's ("", choice): the prefix token, then the choice without delimiter.
        std::vector<int32_t> seq = {prefix ? *prefix : *tok.bos_id()};
        const std::vector<int32_t> ids = bytes_of(item.choices[c]);
        seq.insert(seq.end(), ids.begin(), ids.end());
        const double u = brute_logprob(*model, seq, ids.size());
        EXPECT_NEAR(rec.logprob_unconditional[c], u, 1e-4 * std::abs(u));
        mi.push_back(rec.logprob[c] - u);
      }
      EXPECT_EQ(rec.pred_mutual_info, first_argmax(mi));
      correct += rec.pred_mutual_info == item.gold;
    }
    EXPECT_EQ(r->correct_mutual_info, correct);
    EXPECT_DOUBLE_EQ(r->acc_mutual_info, static_cast<double>(correct) / 4);
    const nlohmann::json j = to_json(*r);
    EXPECT_TRUE(j.contains("acc_mutual_info"));
    EXPECT_EQ(j["records"][0]["logprob_unconditional"].size(), 3u);
  }
}

TEST(EvalChoice, LongContextsAreTruncatedFromTheLeft) {
  auto model = tiny_model();
  FakeTokenizer tok;
  data::ChoiceTask task;
  task.name = "long";
  task.items.push_back({std::string(30, 'k') + "end of the context", {"yes", "no way"}, 1, " ", "x:1"});
  ChoiceOptions o;
  o.max_seq_len = 12;
  o.keep_records = true;
  auto r = evaluate_choice(*model, tok, task, o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->truncated_items, 1);
  EXPECT_TRUE(r->records[0].truncated);
  for (size_t c = 0; c < 2; ++c) {
    std::vector<int32_t> seq = bytes_of(task.items[0].context + " " + task.items[0].choices[c]);
    seq.erase(seq.begin(), seq.end() - 13);  // max_seq_len + 1 tokens, the last only a target
    const size_t cont = task.items[0].choices[c].size() + 1;
    EXPECT_NEAR(r->records[0].logprob[c], brute_logprob(*model, seq, cont), 1e-4 * 20);
  }
}

TEST(EvalChoice, Errors) {
  auto model = tiny_model(100);  // bytes >= 100 are outside its vocabulary
  FakeTokenizer tok;
  data::ChoiceTask task;
  task.name = "t";
  task.items.push_back({"ABC", {"DE", "FG"}, 0, " ", "t.jsonl:1"});
  ChoiceOptions o;
  o.batch_size = 0;
  expect_error(evaluate_choice(*model, tok, task, o), {"batch_size (0)"});
  o = ChoiceOptions{};
  o.max_seq_len = 65;
  expect_error(evaluate_choice(*model, tok, task, o), {"65", "max_seq_len"});
  o = ChoiceOptions{};
  o.max_seq_len = 2;
  expect_error(evaluate_choice(*model, tok, task, o),
               {"t.jsonl:1", "choice 0 is 3 tokens long, more than max_seq_len 2"});
  data::ChoiceTask lower = task;
  lower.items[0].choices[1] = "fg";  // 'f' = 102
  expect_error(evaluate_choice(*model, tok, lower, ChoiceOptions{}),
               {"t.jsonl:1", "id 102 (choice 1)", "[0, 100)"});
  data::ChoiceTask empty;
  empty.name = "empty.jsonl";
  expect_error(evaluate_choice(*model, tok, empty, ChoiceOptions{}), {"empty.jsonl", "no items"});
  data::ChoiceTask bad_gold = task;
  bad_gold.items[0].gold = 2;
  expect_error(evaluate_choice(*model, tok, bad_gold, ChoiceOptions{}), {"t.jsonl:1", "gold 2"});
}

}  // namespace
}  // namespace el::infer
