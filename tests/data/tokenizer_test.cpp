// tokenizer_test.cpp — SentencePiece training, lossless round trips, determinism,
// and load errors.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <sstream>

#include "data/data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::read_bytes;
using testing::shared_tokenizer_model;
using testing::small_corpus_files;
using testing::small_tokenizer_options;
using testing::TempDir;
using testing::write_text;

TEST(Tokenizer, TrainedModelHasSpecialIdsAndVocab) {
  auto tok = Tokenizer::load(shared_tokenizer_model());
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_GT(tok->vocab_size(), 259);
  EXPECT_LE(tok->vocab_size(), 1024);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->id_to_piece(3), "<0x00>");  // byte fallback pieces follow the specials
  // The .vocab listing has one line per piece.
  const std::string vocab_path =
      shared_tokenizer_model().substr(0, shared_tokenizer_model().size() - 6) + ".vocab";
  std::istringstream vocab(read_bytes(vocab_path));
  int lines = 0;
  for (std::string l; std::getline(vocab, l);) ++lines;
  EXPECT_EQ(lines, tok->vocab_size());
}

TEST(Tokenizer, RoundTripIsLossless) {
  auto tok = Tokenizer::load(shared_tokenizer_model()).value();
  const std::vector<std::string> texts = {
      "Hello, world. This is a simple sentence.",
      "  leading spaces,\ttabs\tand\n\nblank lines\n    def f(x):\n        return x  \n",
      "Unicode: caf\xc3\xa9, na\xc3\xafve, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e, "
      "\xf0\x9f\x98\x80 emoji, \xce\xbb-calculus",
      "",
      "\r\nWindows line ending\r\n",
      "trailing space ",
  };
  for (const auto& t : texts) {
    const auto ids = tok.encode(t);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok.vocab_size());
    }
    EXPECT_EQ(tok.decode(ids), t);
  }
  // Every training document round-trips too.
  for (const auto& f : small_corpus_files()) {
    const std::string text = read_bytes(f);
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << f;
  }
  // BPE compresses real prose: well under one token per byte.
  const std::string prose = read_bytes(small_corpus_files().front());
  EXPECT_LT(static_cast<double>(tok.encode(prose).size()), 0.5 * static_cast<double>(prose.size()));
}

TEST(Tokenizer, DecodeSkipsSpecials) {
  auto tok = Tokenizer::load(shared_tokenizer_model()).value();
  std::vector<int32_t> ids = tok.encode("one");
  ids.push_back(tok.eos_id());
  const auto two = tok.encode("two");
  ids.insert(ids.end(), two.begin(), two.end());
  const std::string text = tok.decode(ids);
  EXPECT_NE(text.find("one"), std::string::npos);
  EXPECT_NE(text.find("two"), std::string::npos);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  TempDir dir;
  auto opt = small_tokenizer_options(dir.file("a"));
  opt.input_sentence_size = 60;  // force the reservoir sampling path (fixture has ~100 lines)
  opt.vocab_size = 600;
  TokenizerTrainStats stats;
  ASSERT_TRUE(train_tokenizer(opt, &stats).ok());
  EXPECT_EQ(stats.lines_used, 60);
  EXPECT_GT(stats.lines_seen, 60);
  opt.model_prefix = dir.file("b");
  ASSERT_TRUE(train_tokenizer(opt).ok());
  EXPECT_EQ(read_bytes(dir.file("a.model")), read_bytes(dir.file("b.model")));
  auto ta = Tokenizer::load(dir.file("a.model")).value();
  auto tb = Tokenizer::load(dir.file("b.model")).value();
  const std::string text = read_bytes(small_corpus_files().front());
  EXPECT_EQ(ta.encode(text), tb.encode(text));
  // Another seed samples other lines (the model may differ; it must still work).
  opt.model_prefix = dir.file("c");
  opt.seed = 99;
  ASSERT_TRUE(train_tokenizer(opt).ok());
  auto tc = Tokenizer::load(dir.file("c.model")).value();
  EXPECT_EQ(tc.decode(tc.encode(text)), text);
}

TEST(Tokenizer, TrainsFromJsonLines) {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 50; ++i)
    jsonl += "{\"text\": \"Document number " + std::to_string(i) +
             " talks about lighthouses, keepers and the sea.\"}\n";
  TokenizerTrainOptions o;
  o.input_files = {write_text(dir.file("d.jsonl"), jsonl)};
  o.model_prefix = dir.file("sub/dir/j");  // parent directories are created
  o.vocab_size = 300;
  ASSERT_TRUE(train_tokenizer(o).ok());
  auto tok = Tokenizer::load(dir.file("sub/dir/j.model"));
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_EQ(tok->decode(tok->encode("lighthouse keepers")), "lighthouse keepers");
}

TEST(TokenizerErrors, LoadMissingAndCorrupt) {
  TempDir dir;
  expect_error(Tokenizer::load(dir.file("none.model")),
               {"none.model", "tokenizer model file not found"});
  const std::string bad = write_text(dir.file("bad.model"), "this is not a protobuf \xff\xfe\x01");
  expect_error(Tokenizer::load(bad), {"bad.model", "not a valid SentencePiece model"});
  // A truncated real model is corrupt too.
  const std::string good = read_bytes(shared_tokenizer_model());
  const std::string cut = write_text(dir.file("cut.model"), good.substr(0, good.size() / 2));
  expect_error(Tokenizer::load(cut), {"cut.model", "not a valid SentencePiece model"});
}

TEST(TokenizerErrors, TrainingErrors) {
  TempDir dir;
  TokenizerTrainOptions o;
  o.model_prefix = dir.file("m");
  expect_error(train_tokenizer(o), {"no input files"});
  o.input_files = {write_text(dir.file("empty.txt"), "")};
  expect_error(train_tokenizer(o), {"empty corpus"});
  o.input_files = {write_text(dir.file("bad.jsonl"), "{\"text\": \"a\"}\nnot json\n")};
  expect_error(train_tokenizer(o), {"bad.jsonl:2", "malformed JSON line"});
  o.input_files = small_corpus_files();
  o.vocab_size = 100;
  expect_error(train_tokenizer(o), {"vocab_size 100 is too small"});
  o.vocab_size = 512;
  o.model_type = "wordpiece";
  expect_error(train_tokenizer(o), {"unknown tokenizer model_type 'wordpiece'"});
}

}  // namespace
}  // namespace el::data
