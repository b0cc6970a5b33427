// Model card fields of attention: nsa (nn/model_card.h): defaults, the YAML
// round trip (written only with nsa, so other cards keep their text), and
// every validation error naming its field.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "common/test_cards.h"
#include "nn/model_card.h"

namespace el {
namespace {

#ifndef EXPECT_HAS
#define EXPECT_HAS(text, part)                    \
  EXPECT_NE((text).find(part), std::string::npos) \
      << "expected \"" << (part) << "\" in \"" << (text) << "\""
#endif

std::string nsa_yaml(const std::string& fields, int max_seq_len = 64) {
  return test::small_card_yaml("nsa", 48, 61, max_seq_len, "attention: nsa\n" + fields);
}

std::string error_of(const std::string& yaml) {
  auto r = parse_model_card(yaml, "nsa.yaml");
  EXPECT_FALSE(r.ok()) << yaml;
  return r.ok() ? std::string() : r.error().message();
}

// "LINE" of `key` in the YAML text, or "" when the key is absent (a
// defaulted field: the error names the card without a line).
std::string line_of(const std::string& yaml, const std::string& key) {
  const size_t at = yaml.find("\n" + key + ":");
  if (at == std::string::npos) return "";
  return std::to_string(1 + std::count(yaml.begin(), yaml.begin() + static_cast<long>(at) + 1, '\n'));
}

TEST(ModelCardNsa, DefaultsAreTheAuthorsCode) {
  auto r = parse_model_card(nsa_yaml("", 4096), "nsa.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.attention, ModelCard::Attention::nsa);
  EXPECT_EQ(c.nsa_window, 128);
  EXPECT_EQ(c.nsa_compress_block, 64);
  EXPECT_EQ(c.nsa_compress_stride, 64);
  EXPECT_EQ(c.nsa_select_block, 64);
  EXPECT_EQ(c.nsa_select_count, 4);
}

TEST(ModelCardNsa, ParsesFieldsAndRoundTrips) {
  auto r = parse_model_card(nsa_yaml("nsa_window: 16\nnsa_compress_block: 8\n"
                                     "nsa_compress_stride: 4\nnsa_select_block: 16\n"
                                     "nsa_select_count: 2\n"),
                            "nsa.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_EQ(c.nsa_window, 16);
  EXPECT_EQ(c.nsa_compress_block, 8);
  EXPECT_EQ(c.nsa_compress_stride, 4);
  EXPECT_EQ(c.nsa_select_block, 16);
  EXPECT_EQ(c.nsa_select_count, 2);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "attention: nsa\n");
  EXPECT_HAS(yaml, "nsa_compress_stride: 4\n");
  auto back = parse_model_card(yaml, "nsa.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back.value(), c);
}

TEST(ModelCardNsa, OtherCardsKeepTheirText) {
  const std::string yaml = model_card_to_yaml(test::small_card());
  EXPECT_EQ(yaml.find("nsa_"), std::string::npos) << yaml;
}

TEST(ModelCardNsa, ErrorsNameTheField) {
  struct Case {
    std::string yaml, key, what;
  };
  const Case cases[] = {
      {nsa_yaml("nsa_window: 0\n"), "nsa_window", "nsa_window must be positive"},
      {nsa_yaml("nsa_compress_block: 8\nnsa_compress_stride: 0\n"), "nsa_compress_stride",
       "nsa_compress_stride must be positive"},
      {nsa_yaml("nsa_select_count: -1\nnsa_window: 8\nnsa_compress_block: 8\n"
                "nsa_compress_stride: 8\nnsa_select_block: 8\n"),
       "nsa_select_count", "nsa_select_count must be positive"},
      {nsa_yaml("nsa_window: 8\nnsa_compress_block: 12\nnsa_compress_stride: 8\n"
                "nsa_select_block: 16\n"),
       "nsa_compress_block", "nsa_compress_block (12) must be a multiple of nsa_compress_stride (8)"},
      {nsa_yaml("nsa_window: 8\nnsa_compress_block: 8\nnsa_compress_stride: 4\n"
                "nsa_select_block: 18\n"),
       "nsa_select_block", "nsa_select_block (18) must be a multiple of nsa_compress_stride (4)"},
      {nsa_yaml("nsa_window: 8\nnsa_compress_block: 16\nnsa_compress_stride: 8\n"
                "nsa_select_block: 8\n"),
       "nsa_select_block", "nsa_select_block (8) must be >= nsa_compress_block (16)"},
      {test::small_card_yaml("nsa", 48, 61, 4096,
                             "attention: nsa\nnsa_select_block: 8192\n"),
       "nsa_select_block", "nsa_select_block 8192 exceeds max_seq_len 4096"},
      {nsa_yaml("nsa_compress_block: 128\nnsa_select_block: 128\nnsa_compress_stride: 64\n"
                "nsa_window: 8\n"),
       "nsa_compress_block", "nsa_compress_block 128 exceeds max_seq_len 64"},
      {nsa_yaml("nsa_compress_block: 8\nnsa_select_block: 8\nnsa_compress_stride: 8\n"), "nsa_window",
       "nsa_window 128 exceeds max_seq_len 64"},
      {test::small_card_yaml("t", 48, 61, 16, "nsa_window: 8\n"), "nsa_window",
       "nsa_window is set but attention is standard; it is an NSA parameter"},
      {test::small_card_yaml("t", 48, 61, 16, "attention: standard\nnsa_select_count: 4\n"),
       "nsa_select_count", "nsa_select_count is set but attention is standard"},
      {nsa_yaml("nsa_compress_block: 8\nnsa_select_block: 8\nnsa_compress_stride: 8\n"
                "nsa_window: 8\nsliding_window: 32\n"),
       "sliding_window", "sliding_window (32) is not used with attention: nsa"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of(c.yaml);
    EXPECT_HAS(msg, c.what);
    EXPECT_HAS(msg, "nsa.yaml:" + line_of(c.yaml, c.key));
  }
  // alibi (pos_encoding is written before attention, so its line is named).
  std::string alibi = nsa_yaml("nsa_compress_block: 8\nnsa_select_block: 8\n"
                               "nsa_compress_stride: 8\nnsa_window: 8\n");
  alibi.replace(alibi.find("pos_encoding: rope"), 18, "pos_encoding: alibi");
  const std::string msg = error_of(alibi);
  EXPECT_HAS(msg, "pos_encoding alibi is not supported with attention: nsa");
  EXPECT_HAS(msg, "nsa.yaml:" + line_of(alibi, "pos_encoding"));
  // Built in code: a non-default nsa field on a standard card.
  ModelCard c = test::small_card();
  c.nsa_select_count = 7;
  const Status st = validate_model_card(c);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "nsa_select_count is set (7) but attention is standard");
  EXPECT_HAS(st.error().message(), "key 'nsa_select_count'");
}

}  // namespace
}  // namespace el
