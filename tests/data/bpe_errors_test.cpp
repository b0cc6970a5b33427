// bpe_errors_test.cpp — tokenizer.json that must be refused, each with a
// message naming the file and the key: unsupported types, malformed JSON,
// merges naming unknown tokens, absurd sizes and ids, inconsistent added
// tokens, bad tokenizer_config.json.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/bpe_test_util.h"
#include "data/bpe_tokenizer.h"

namespace el::data {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::minimal_tokenizer_json;
using testing::TempDir;
using testing::write_text;

Result<BpeTokenizer> from(const json& j) { return BpeTokenizer::from_json(j.dump(), "tok.json"); }

TEST(BpeErrors, MinimalTokenizerLoads) {
  EL_SKIP_WITHOUT_BPE();
  auto tok = from(minimal_tokenizer_json());
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->encode(" the<|eot|>"), (std::vector<int32_t>{258, 259}));
  EXPECT_EQ(tok->decode({258, 259}), " the<|eot|>");
  EXPECT_EQ(tok->decode({258, 259}, true), " the");
}

TEST(BpeErrors, UnsupportedModelTypeIsNamed) {
  EL_SKIP_WITHOUT_BPE();
  for (const char* type : {"Unigram", "WordPiece", "WordLevel"}) {
    json j = minimal_tokenizer_json();
    j["model"]["type"] = type;
    expect_error(from(j), {"tok.json", "model.type", fmt::format("unsupported tokenizer model type '{}'", type),
                           "tokenizer.model"});
  }
  json j = minimal_tokenizer_json();
  j["model"].erase("type");
  expect_error(from(j), {"model.type", "missing"});
}

TEST(BpeErrors, MalformedJsonNamesFileAndKey) {
  EL_SKIP_WITHOUT_BPE();
  const std::string text = minimal_tokenizer_json().dump();
  expect_error(BpeTokenizer::from_json(text.substr(0, text.size() / 2), "half.json"), {"half.json", "malformed JSON"});
  expect_error(BpeTokenizer::from_json("[1, 2]", "arr.json"), {"arr.json", "expected a JSON object"});
  json j = minimal_tokenizer_json();
  j["model"]["vocab"] = json::array();
  expect_error(from(j), {"tok.json: key 'model.vocab'", "not an object"});
  j = minimal_tokenizer_json();
  j["model"]["vocab"]["he"] = "257";
  expect_error(from(j), {"model.vocab[\"he\"]", "expected an integer id"});
  j = minimal_tokenizer_json();
  j["model"].erase("merges");
  expect_error(from(j), {"model.merges", "missing"});
  j = minimal_tokenizer_json();
  j["model"]["merges"][1] = 7;
  expect_error(from(j), {"model.merges[1]", "expected \"a b\""});
  j = minimal_tokenizer_json();
  j["added_tokens"][0]["special"] = "yes";
  expect_error(from(j), {"added_tokens[0].special", "expected true or false"});
  j = minimal_tokenizer_json();
  j["version"] = "2.0";
  expect_error(from(j), {"key 'version'", "unknown tokenizer.json version"});
}

TEST(BpeErrors, MergesMustNameVocabTokens) {
  EL_SKIP_WITHOUT_BPE();
  json j = minimal_tokenizer_json();
  j["model"]["merges"].push_back(json::array({"h", "zz"}));
  expect_error(from(j), {"model.merges[3]", "merge token 'zz' is not in model.vocab"});
  j = minimal_tokenizer_json();
  j["model"]["merges"].push_back(json::array({"a", "b"}));
  expect_error(from(j), {"model.merges[3]", "merged token 'ab' is not in model.vocab"});
  j = minimal_tokenizer_json();
  j["model"]["merges"] = json::array({"h e", "a b c"});
  expect_error(from(j), {"model.merges[1]", "'a b c' is not two tokens"});
  // The string form works as well as the pair form.
  j = minimal_tokenizer_json();
  j["model"]["merges"] = json::array({"#version: 0.2", "\xC4\xA0 t", "h e", "\xC4\xA0t he"});
  auto tok = from(j);
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_EQ(tok->encode(" the"), (std::vector<int32_t>{258}));
}

TEST(BpeErrors, AbsurdSizesAndIds) {
  EL_SKIP_WITHOUT_BPE();
  json j = minimal_tokenizer_json();
  j["model"]["vocab"]["he"] = int64_t{1} << 40;
  expect_error(from(j), {"model.vocab[\"he\"]", "outside [0, 2097151]"});
  j = minimal_tokenizer_json();
  j["model"]["vocab"]["he"] = -3;
  expect_error(from(j), {"outside"});
  j = minimal_tokenizer_json();
  j["model"]["vocab"]["he"] = 0;  // the id of byte 0's character
  expect_error(from(j), {"id 0 is also the id of"});
  j = minimal_tokenizer_json();
  j["model"]["vocab"][std::string(kMaxTokenBytes + 1, 'x')] = 300;
  expect_error(from(j), {"a token of 4097 bytes"});
  // A file larger than the cap is refused before it is read (a sparse file).
  TempDir dir;
  const std::string big = write_text(dir.file("tokenizer.json"), "{}");
  std::filesystem::resize_file(big, static_cast<uintmax_t>(kMaxTokenizerJsonBytes) + 1);
  expect_error(BpeTokenizer::load(big), {big, "more than a tokenizer.json may hold"});
  expect_error(BpeTokenizer::load(dir.file("missing.json")), {"missing.json", "not found"});
}

TEST(BpeErrors, AddedTokensMustAgreeWithHuggingFace) {
  EL_SKIP_WITHOUT_BPE();
  json j = minimal_tokenizer_json();
  j["added_tokens"][0]["id"] = 300;  // HF would give it 259, the next free id
  expect_error(from(j), {"added_tokens[0].id", "has id 300", "would give it id 259"});
  j = minimal_tokenizer_json();
  j["added_tokens"].push_back(j["added_tokens"][0]);
  j["added_tokens"][1]["id"] = 260;
  expect_error(from(j), {"added_tokens[1].content", "listed twice"});
  j = minimal_tokenizer_json();
  j["added_tokens"].push_back({{"id", 257}, {"content", "he"}, {"special", true}});  // a vocab token keeps its id
  auto tok = from(j);
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_TRUE(tok->is_special(257));
  j = minimal_tokenizer_json();
  j["added_tokens"][0].erase("id");
  expect_error(from(j), {"added_tokens[0].id", "missing"});
}

TEST(BpeErrors, UnsupportedComponentsAreNamed) {
  EL_SKIP_WITHOUT_BPE();
  struct Case {
    std::function<void(json&)> edit;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, {"normalizer.type", "'Lowercase'"}},
      {[](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}; },
       {"normalizer.normalizers[0].type", "'NFKC'"}},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, {"pre_tokenizer.type", "'Metaspace'"}},
      {[](json& j) { j["pre_tokenizer"] = nullptr; }, {"pre_tokenizer", "needs the ByteLevel"}},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}},
                                                   {"behavior", "Removed"}, {"invert", false}},
                                                  {{"type", "ByteLevel"}, {"use_regex", false}}}}};
       },
       {"pre_tokenizer.pretokenizers[0].behavior", "\"Removed\""}},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "[\\S]"}}},
                                                   {"behavior", "Isolated"}, {"invert", false}},
                                                  {{"type", "ByteLevel"}, {"use_regex", false}}}}};
       },
       {"pre_tokenizer.pretokenizers[0].pattern", "\\S inside a character class"}},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Digits"}}}}};
       },
       {"pre_tokenizer.pretokenizers[0].type", "'ByteLevel' here"}},
      {[](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, {"decoder.type", "'Metaspace'"}},
      {[](json& j) { j["model"]["byte_fallback"] = true; }, {"model.byte_fallback", "not supported"}},
      {[](json& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout", "not supported"}},
      {[](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, {"model.continuing_subword_prefix"}},
      {[](json& j) { j["model"]["unk_token"] = "<unk>"; }, {"model.unk_token", "'<unk>' is not in model.vocab"}},
  };
  for (const Case& c : cases) {
    json j = minimal_tokenizer_json();
    c.edit(j);
    std::vector<std::string> frags = c.fragments;
    frags.push_back("tok.json");
    const auto r = from(j);
    EXPECT_FALSE(r.ok());
    if (r.ok()) continue;
    for (const auto& f : frags) EXPECT_NE(r.error().message().find(f), std::string::npos) << f << " not in "
                                                                                           << r.error().message();
  }
}

TEST(BpeErrors, BadTokenizerConfig) {
  EL_SKIP_WITHOUT_BPE();
  TempDir dir;
  write_text(dir.file("tokenizer.json"), minimal_tokenizer_json().dump());
  write_text(dir.file("tokenizer_config.json"), R"({"eos_token": "</s>"})");
  expect_error(BpeTokenizer::load(dir.file("tokenizer.json")),
               {"tokenizer_config.json: key 'eos_token'", "'</s>' is not a token"});
  write_text(dir.file("tokenizer_config.json"), R"({"eos_token": 5})");
  expect_error(BpeTokenizer::load(dir.file("tokenizer.json")), {"eos_token", "expected a token string"});
  write_text(dir.file("tokenizer_config.json"), R"({"eos_token": )");
  expect_error(BpeTokenizer::load(dir.file("tokenizer.json")), {"tokenizer_config.json", "malformed JSON"});
  write_text(dir.file("tokenizer_config.json"), R"({"eos_token": {"content": "<|eot|>"}, "bos_token": null})");
  auto tok = BpeTokenizer::load(dir.file("tokenizer.json"));
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_EQ(tok->eos_id(), 259);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
}

}  // namespace
}  // namespace el::data
