// bpe_tokenizer_test.cpp — tokenizer.json byte-level BPE against Hugging Face
// tokenizers: the ids, tokens and decodes of tests/fixtures/tokenizers/*/cases.json
// (tools/make_tokenizer_fixtures.py; transformers agreed on the same ids),
// special ids, invalid UTF-8 input, out-of-range ids and thread safety.
#include "data/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <thread>

#include "core/rng.h"

#include "data/bpe_test_util.h"

namespace el::data {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::read_json;
using testing::tokenizer_fixture;

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += fmt::format("{} ", id);
  return s;
}

// Every case of one fixture: ids, the token strings of model tokens, decode
// with and without special tokens.
void check_fixture(const std::string& name) {
  auto tok = BpeTokenizer::load(tokenizer_fixture(name + "/tokenizer.json"));
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  const json expected = read_json(tokenizer_fixture(name + "/cases.json"));
  EXPECT_EQ(tok->vocab_size(), expected["vocab_size"].get<int>());
  int checked = 0;
  for (const json& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(text);
    EXPECT_EQ(ids_text(got), ids_text(want)) << name << ": text " << json(text).dump();
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    // Model tokens spelled as in the vocabulary (HF reports an added token as
    // the text it matched, stripped spaces included, so those are skipped).
    for (size_t i = 0; i < want.size() && i < tokens.size(); ++i) {
      if (want[i] < expected["model_vocab_entries"].get<int>()) {
        EXPECT_EQ(tok->id_to_token(want[i]).value_or("?"), tokens[i]) << name << " id " << want[i];
      }
    }
    EXPECT_EQ(tok->decode(want), c["decode"].get<std::string>()) << name << ": " << json(text).dump();
    EXPECT_EQ(tok->decode(want, /*skip_special=*/true), c["decode_skip_special"].get<std::string>())
        << name << ": " << json(text).dump();
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

TEST(BpeTokenizer, Llama3MatchesHuggingFace) {
  EL_SKIP_WITHOUT_BPE();
  check_fixture("llama3");
}

TEST(BpeTokenizer, Qwen2MatchesHuggingFace) {
  EL_SKIP_WITHOUT_BPE();
  check_fixture("qwen2");
}

TEST(BpeTokenizer, EdgeFlagsAndLegacyMergesMatchHuggingFace) {
  EL_SKIP_WITHOUT_BPE();
  check_fixture("edge");
}

TEST(BpeTokenizer, SpecialIdsFromTokenizerConfig) {
  EL_SKIP_WITHOUT_BPE();
  for (const std::string& name : {std::string("llama3"), std::string("qwen2")}) {
    auto tok = BpeTokenizer::load(tokenizer_fixture(name + "/tokenizer.json"));
    ASSERT_TRUE(tok.ok()) << tok.error().message();
    const json want = read_json(tokenizer_fixture(name + "/cases.json"))["special_ids"];  // transformers'
    auto as_json = [](std::optional<int32_t> id) { return id ? json(*id) : json(nullptr); };
    EXPECT_EQ(as_json(tok->bos_id()), want["bos_id"]) << name;
    EXPECT_EQ(as_json(tok->eos_id()), want["eos_id"]) << name;
    EXPECT_EQ(as_json(tok->pad_id()), want["pad_id"]) << name;
  }
  auto llama = BpeTokenizer::load(tokenizer_fixture("llama3/tokenizer.json")).value();
  EXPECT_EQ(llama.token_to_id("<|eot_id|>"), 1008);
  EXPECT_EQ(llama.token_to_id("<|begin_of_text|>"), 1000);
  EXPECT_TRUE(llama.is_special(1000));
  EXPECT_FALSE(llama.is_special(5));
  EXPECT_EQ(llama.token_to_id("no such token"), std::nullopt);
  EXPECT_NE(llama.describe().find("ignore_merges"), std::string::npos) << llama.describe();
  EXPECT_NE(llama.describe().find("Split+ByteLevel"), std::string::npos) << llama.describe();
  auto qwen = BpeTokenizer::load(tokenizer_fixture("qwen2/tokenizer.json")).value();
  EXPECT_FALSE(qwen.is_special(*qwen.token_to_id("<tool_call>")));  // added, not special
}

TEST(BpeTokenizer, SpecialIdsGuessedWithoutConfig) {
  EL_SKIP_WITHOUT_BPE();
  // edge/ has no tokenizer_config.json: eos is guessed from "<|endoftext|>".
  auto tok = BpeTokenizer::load(tokenizer_fixture("edge/tokenizer.json")).value();
  EXPECT_EQ(tok.eos_id(), tok.token_to_id("<|endoftext|>"));
  EXPECT_EQ(tok.bos_id(), std::nullopt);
  EXPECT_EQ(tok.pad_id(), std::nullopt);
  // The same JSON with a config naming other tokens.
  const std::string text = testing::read_bytes(tokenizer_fixture("edge/tokenizer.json"));
  auto with_cfg = BpeTokenizer::from_json(text, "edge", R"({"bos_token": {"content": "<mask>"}, "eos_token": null})",
                                          "cfg.json");
  ASSERT_TRUE(with_cfg.ok()) << with_cfg.error().message();
  EXPECT_EQ(with_cfg->bos_id(), with_cfg->token_to_id("<mask>"));
  EXPECT_EQ(with_cfg->eos_id(), std::nullopt);
}

TEST(BpeTokenizer, ByteLevelRoundTripIsLossless) {
  EL_SKIP_WITHOUT_BPE();
  // Llama 3 has no normalizer: decode(encode(s)) == s for every well-formed s.
  auto tok = BpeTokenizer::load(tokenizer_fixture("llama3/tokenizer.json")).value();
  const std::string prose = testing::read_bytes(std::string(EL_TEST_DATA_DIR) + "/data/prose.txt");
  for (const std::string& s : {prose, std::string("\t\t x\r\n\n\n  y \xF0\x9F\x98\x80\xE2\x80\x8D"),
                               std::string("a\0b", 3), std::string("<|eot_id|>inside<|eot_id")}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  EXPECT_LT(tok.encode(prose).size(), prose.size() / 3);  // BPE trained on it compresses it
}

TEST(BpeTokenizer, RandomBytesRoundTrip) {
  EL_SKIP_WITHOUT_BPE();
  // Without a normalizer, decode(encode(s)) is s with ill-formed UTF-8
  // repaired, for any bytes, special tokens included.
  auto tok = BpeTokenizer::load(tokenizer_fixture("llama3/tokenizer.json")).value();
  Rng rng(7);
  const std::vector<std::string> parts = {"<|eot_id|>", "<|begin_of_text|>", " ", "\n", "'s", "12345",
                                          "\xC3\xA9", "\xF0\x9F\x98\x80", "the"};
  for (int n = 0; n < 300; ++n) {
    std::string s;
    const int len = static_cast<int>(rng.below(40));
    for (int i = 0; i < len; ++i) {
      if (rng.below(4) == 0) {
        s += parts[rng.below(parts.size())];
      } else {
        s += static_cast<char>(rng.below(256));
      }
    }
    const auto ids = tok.encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    EXPECT_EQ(tok.decode(ids), bpe::repair_utf8(s)) << json(bpe::repair_utf8(s)).dump();
  }
}

TEST(BpeTokenizer, InvalidUtf8InputIsRepairedFirst) {
  EL_SKIP_WITHOUT_BPE();
  auto tok = BpeTokenizer::load(tokenizer_fixture("qwen2/tokenizer.json")).value();
  // Each maximal ill-formed subpart becomes one U+FFFD before tokenizing.
  const std::string bad = "ab\xFF" "cd\xE2\x82" "e\xED\xA0\x80" "f\xC0\xAF";
  const std::string repaired = bpe::repair_utf8(bad);
  EXPECT_EQ(repaired, "ab\xEF\xBF\xBD" "cd\xEF\xBF\xBD" "e\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                      "f\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.encode(bad), tok.encode(repaired));
  EXPECT_EQ(tok.decode(tok.encode(bad)), repaired);
  // A token holding half a character decodes to U+FFFD, never to bad UTF-8.
  const auto ids = tok.encode("\xC3\xA9");  // "é": two byte tokens here
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(tok.decode({ids[0]}), "\xEF\xBF\xBD");
}

TEST(BpeTokenizer, IdsWithoutTokensDecodeToNothing) {
  EL_SKIP_WITHOUT_BPE();
  auto tok = BpeTokenizer::load(tokenizer_fixture("llama3/tokenizer.json")).value();
  const auto hi = tok.encode("Hi");
  std::vector<int32_t> ids = {-1, tok.vocab_size(), 1 << 30};
  ids.insert(ids.end(), hi.begin(), hi.end());
  EXPECT_EQ(tok.decode(ids), "Hi");
  EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
  EXPECT_EQ(tok.id_to_token(tok.vocab_size()), std::nullopt);
}

TEST(BpeTokenizer, EncodeIsThreadSafe) {
  EL_SKIP_WITHOUT_BPE();
  auto tok = BpeTokenizer::load(tokenizer_fixture("qwen2/tokenizer.json")).value();
  const std::string prose = testing::read_bytes(std::string(EL_TEST_DATA_DIR) + "/data/prose.txt");
  const auto want = tok.encode(prose);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = tok.encode(prose); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

}  // namespace
}  // namespace el::data
