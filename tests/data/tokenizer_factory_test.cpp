// tokenizer_factory_test.cpp — load_text_tokenizer on tokenizer.json files,
// SentencePiece models and checkpoint directories, and the SentencePiece
// adapter behind TextTokenizer.
#include "data/tokenizer_factory.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "data/bpe_test_util.h"
#include "data/bpe_tokenizer.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::shared_tokenizer_model;
using testing::TempDir;
using testing::tokenizer_fixture;
using testing::write_text;

TEST(TokenizerFactory, OpensTokenizerJsonFileAndDirectory) {
  EL_SKIP_WITHOUT_BPE();
  for (const std::string& path : {tokenizer_fixture("llama3/tokenizer.json"), tokenizer_fixture("llama3")}) {
    auto tok = load_text_tokenizer(path);
    ASSERT_TRUE(tok.ok()) << tok.error().message();
    EXPECT_NE(dynamic_cast<const BpeTokenizer*>(tok->get()), nullptr);
    EXPECT_EQ((*tok)->source_path(), tokenizer_fixture("llama3/tokenizer.json"));
    EXPECT_EQ((*tok)->eos_id(), 1008);
    EXPECT_EQ((*tok)->decode((*tok)->encode("Hello<|eot_id|>")), "Hello<|eot_id|>");
  }
  // Any file name: JSON is recognised by its first byte.
  TempDir dir;
  std::filesystem::copy_file(tokenizer_fixture("qwen2/tokenizer.json"), dir.file("tok.bin"));
  auto sniffed = load_text_tokenizer(dir.file("tok.bin"));
  ASSERT_TRUE(sniffed.ok()) << sniffed.error().message();
  EXPECT_EQ((*sniffed)->vocab_size(), 1005);
}

TEST(TokenizerFactory, OpensSentencePieceThroughTheInterface) {
  auto tok = load_text_tokenizer(shared_tokenizer_model());
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  const TextTokenizer& t = **tok;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), std::nullopt);  // trained with pad disabled
  EXPECT_EQ(t.token_to_id("</s>"), 2);
  EXPECT_EQ(t.token_to_id("no such piece"), std::nullopt);
  EXPECT_EQ(t.source_path(), shared_tokenizer_model());
  std::vector<int32_t> ids = {1};
  for (int32_t id : t.encode("Hello world")) ids.push_back(id);
  ids.push_back(2);
  ids.push_back(t.vocab_size() + 5);  // no token: dropped
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "Hello world");
  EXPECT_EQ(t.decode(ids), "<s>Hello world</s>");
  // A directory holding tokenizer.model (a SentencePiece checkpoint).
  TempDir dir;
  std::filesystem::copy_file(shared_tokenizer_model(), dir.file("tokenizer.model"));
  auto from_dir = load_text_tokenizer(dir.path());
  ASSERT_TRUE(from_dir.ok()) << from_dir.error().message();
  EXPECT_EQ((*from_dir)->encode("Hello world"), t.encode("Hello world"));
}

TEST(TokenizerFactory, ErrorsNameThePath) {
  TempDir dir;
  expect_error(load_text_tokenizer(dir.path()), {dir.path(), "no tokenizer.json or tokenizer.model"});
  expect_error(load_text_tokenizer(dir.file("nope")), {"nope", "tokenizer not found"});
  write_text(dir.file("junk.model"), "not a model");
  expect_error(load_text_tokenizer(dir.file("junk.model")), {"junk.model", "SentencePiece"});
  EL_SKIP_WITHOUT_BPE();
  auto j = testing::minimal_tokenizer_json();
  j["model"]["type"] = "Unigram";
  write_text(dir.file("tokenizer.json"), j.dump());
  expect_error(load_text_tokenizer(dir.path()), {"tokenizer.json: key 'model.type'", "'Unigram'"});
}

}  // namespace
}  // namespace el::data
