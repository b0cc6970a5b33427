// bpe_pretokenizer_test.cpp — the pieces under BpeTokenizer: PCRE2 splits
// against Oniguruma's (through tokenizers' Split pre-tokenizer, recorded in
// tests/fixtures/tokenizers/pretokenize.json for the Llama 3, Qwen2 and GPT-2
// patterns on seeded random text), NFC against tokenizers' NFC, the pattern
// rewrite, UTF-8 repair and the byte alphabet.
#include "data/bpe_pretokenizer.h"

#include <gtest/gtest.h>

#include "data/bpe_test_util.h"

namespace el::data::bpe {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::read_json;
using testing::tokenizer_fixture;

std::vector<std::string> split_all(const Regex& re, std::string_view text) {
  std::vector<std::string_view> pieces;
  re.split(text, pieces);
  return {pieces.begin(), pieces.end()};
}

TEST(BpePretokenizer, RegexSplitsMatchOniguruma) {
  EL_SKIP_WITHOUT_BPE();
  const json fx = read_json(tokenizer_fixture("pretokenize.json"));
  // Cases with letters new in Unicode 15 need PCRE2 tables of Unicode 15+
  // (PCRE2 10.43); Debian 12's 10.42 has Unicode 14, where they are unassigned.
  const bool unicode15 = std::stoi(regex_unicode_version()) >= 15;
  int compared = 0;
  for (const auto& [name, pattern] : fx["patterns"].items()) {
    auto re = Regex::compile(pattern.get<std::string>());
    ASSERT_TRUE(re.ok()) << name << ": " << re.error().message();
    for (const json& c : fx["cases"]) {
      if (c["unicode15"].get<bool>() && !unicode15) continue;
      const std::string text = c["text"].get<std::string>();
      const auto want = c["pieces"][name].get<std::vector<std::string>>();
      EXPECT_EQ(json(split_all(*re, text)).dump(), json(want).dump()) << name << " on " << json(text).dump();
      ++compared;
    }
  }
  EXPECT_GE(compared, 3 * 150);  // 194 texts, 20 of them with Unicode 15 letters
}

TEST(BpePretokenizer, NfcMatchesTokenizers) {
  EL_SKIP_WITHOUT_BPE();
  const json fx = read_json(tokenizer_fixture("pretokenize.json"));
  for (const json& c : fx["nfc"]) {
    auto got = nfc(c["text"].get<std::string>());
    ASSERT_TRUE(got.ok()) << got.error().message();
    EXPECT_EQ(json(*got).dump(), c["nfc"].dump());
  }
  EXPECT_EQ(nfc("cafe\xCC\x81").value(), "caf\xC3\xA9");
  EXPECT_EQ(nfc(std::string("a\0b", 3)).value(), std::string("a\0b", 3));  // NUL kept
  EXPECT_EQ(nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB").value(), "\xED\x95\x9C");  // jamo -> 한
}

TEST(BpePretokenizer, OnigurumaConstructsAreRewritten) {
  EXPECT_EQ(onig_to_pcre2(R"(\s+(?!\S))").value(), R"([\x{9}-\x{d}\x{85}\p{Z}]+(?![^\x{9}-\x{d}\x{85}\p{Z}]))");
  EXPECT_EQ(onig_to_pcre2(R"([^\s\p{L}\p{N}]+\v)").value(), R"([^\x{9}-\x{d}\x{85}\p{Z}\p{L}\p{N}]+\x{b})");
  EXPECT_EQ(onig_to_pcre2(R"((?i:'s|'t))").value(), R"((?i:'s|'t))");
  EXPECT_EQ(onig_to_pcre2(R"((?m:a.b))").value(), R"((?s:a.b))");
  EXPECT_EQ(onig_to_pcre2(R"(\u00e9\p{N}{,3}[]a])").value(), R"(\x{00e9}\p{N}{0,3}[]a])");
  EXPECT_EQ(onig_to_pcre2(R"(\h[\w])").value(),
            R"([0-9a-fA-F][\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{b2}\x{b3}\x{b9}\x{bc}-\x{be}])");
  EXPECT_EQ(onig_to_pcre2(R"([[:alpha:]\]])").value(), R"([[:alpha:]\]])");
  expect_error(onig_to_pcre2(R"([\S])"), {"\\S inside a character class", "offset 1"});
  expect_error(onig_to_pcre2(R"([a-z&&[^aeiou]])"), {"intersection"});
  expect_error(onig_to_pcre2(R"((?~abc))"), {"absent operator"});
  expect_error(onig_to_pcre2(R"((?a:x))"), {"inline option 'a'"});
  expect_error(onig_to_pcre2(R"([abc)"), {"unterminated character class"});
  expect_error(onig_to_pcre2("ab\\"), {"trailing backslash"});
}

TEST(BpePretokenizer, RewrittenClassesBehaveLikeOniguruma) {
  EL_SKIP_WITHOUT_BPE();
  // Observed with tokenizers 0.23 (Oniguruma): \s takes NEL, \w takes marks and
  // other numbers, ^ and $ are line anchors, (?m) lets '.' cross newlines,
  // an empty match splits the text.
  EXPECT_EQ(split_all(Regex::compile(R"(\s+)").value(), "x\xC2\x85y\xE1\xA0\x8Ez"),  // NEL yes, U+180E no
            (std::vector<std::string>{"x", "\xC2\x85", "y\xE1\xA0\x8Ez"}));
  EXPECT_EQ(split_all(Regex::compile(R"(\v)").value(), "a\nb\x0B" "c"), (std::vector<std::string>{"a\nb", "\x0B", "c"}));
  EXPECT_EQ(split_all(Regex::compile(R"(\w+)").value(), "a\xCC\x81" "b\xC2\xB2_\xE2\x85\xAB\xE2\x92\xB6 !\xE0\xA7\xB4"),
            (std::vector<std::string>{"a\xCC\x81" "b\xC2\xB2_\xE2\x85\xAB\xE2\x92\xB6", " !\xE0\xA7\xB4"}));  // Ⅻ Ⅎ yes, ৴ no
  EXPECT_EQ(split_all(Regex::compile("^a").value(), "a\na"), (std::vector<std::string>{"a", "\n", "a"}));
  EXPECT_EQ(split_all(Regex::compile("(?m:a.b)").value(), "xa\nbx"), (std::vector<std::string>{"x", "a\nb", "x"}));
  EXPECT_EQ(split_all(Regex::compile("x*").value(), "abxxc"), (std::vector<std::string>{"a", "b", "xx", "c"}));
  EXPECT_EQ(split_all(Regex::compile(R"(\bab)").value(), "ab ab xab"),
            (std::vector<std::string>{"ab", " ", "ab", " xab"}));
  EXPECT_EQ(split_all(Regex::compile("(?i:'s)").value(), "'S '\xC5\xBF"),
            (std::vector<std::string>{"'S", " ", "'\xC5\xBF"}));
  // A {"String": ...} pattern is literal.
  EXPECT_EQ(split_all(Regex::compile("a.b", /*literal=*/true).value(), "xa.bxaxb"),
            (std::vector<std::string>{"x", "a.b", "xaxb"}));
  expect_error(Regex::compile("(abc"), {"does not compile", "(abc"});
}

TEST(BpePretokenizer, Utf8CheckAndRepair) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));
  for (const char* bad : {"\x80", "\xC0\x80", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF5",
                          "\xE2\x82", "\xF0\x9F\x98"})
    EXPECT_FALSE(is_valid_utf8(bad)) << json(repair_utf8(bad)).dump();
  EXPECT_EQ(repair_utf8("\xF0\x9F\x98" "x"), "\xEF\xBF\xBDx");           // truncated: one U+FFFD
  EXPECT_EQ(repair_utf8("\xF0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // F0 80: two subparts
  std::string s;
  for (char32_t cp : {0x41u, 0xE9u, 0x20ACu, 0x1F600u, 0x10FFFFu}) append_utf8(s, cp);
  ASSERT_TRUE(is_valid_utf8(s));
  char32_t cp;
  size_t i = 0;
  for (char32_t want : {0x41u, 0xE9u, 0x20ACu, 0x1F600u, 0x10FFFFu}) {
    i += static_cast<size_t>(decode_utf8(s, i, &cp));
    EXPECT_EQ(cp, want);
  }
}

TEST(BpePretokenizer, ByteAlphabetIsGpt2s) {
  EXPECT_EQ(byte_char(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(byte_char('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_char('a'), "a");
  EXPECT_EQ(byte_char(0xAD), "\xC5\x83");  // the soft hyphen is remapped too
  for (int b = 0; b < 256; ++b) {
    char32_t cp;
    decode_utf8(byte_char(static_cast<uint8_t>(b)), 0, &cp);
    EXPECT_EQ(char_byte(cp), b);
  }
  EXPECT_EQ(char_byte(0x20), -1);
  EXPECT_EQ(char_byte(0x144), -1);
}

}  // namespace
}  // namespace el::data::bpe
