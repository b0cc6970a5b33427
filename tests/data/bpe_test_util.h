// bpe_test_util.h — helpers for the tokenizer.json tests: fixture paths, JSON
// loading, the skip when PCRE2/utf8proc were not built in, and a minimal
// tokenizer.json to mutate in error tests.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "data/bpe_pretokenizer.h"
#include "data/data_test_util.h"

namespace el::data::testing {

// Skips the test (with the reason) when tokenizer.json support is not built.
#define EL_SKIP_WITHOUT_BPE()                                              \
  do {                                                                     \
    if (const std::string missing_ = ::el::data::bpe::support_missing();   \
        !missing_.empty())                                                 \
      GTEST_SKIP() << missing_;                                            \
  } while (0)

inline std::string tokenizer_fixture(const std::string& rel) {
  return std::string(EL_TEST_DATA_DIR) + "/tokenizers/" + rel;
}

inline nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(read_bytes(path));
}

// A small valid byte-level BPE tokenizer.json: the 256 byte characters, three
// merges (Ġ t -> Ġt, h e -> he, Ġt he -> Ġthe), GPT-2 pre-tokenizer, one
// special added token "<|eot|>" (id 259).
inline nlohmann::json minimal_tokenizer_json() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bpe::byte_char(static_cast<uint8_t>(b))] = b;
  vocab["\xC4\xA0t"] = 256;         // "Ġt"
  vocab["he"] = 257;
  vocab["\xC4\xA0the"] = 258;       // "Ġthe"
  json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", 259}, {"content", "<|eot|>"}, {"single_word", false},
                                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                         {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                   {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                 {"vocab", vocab},
                 {"merges", json::array({json::array({"\xC4\xA0", "t"}), json::array({"h", "e"}),
                                         json::array({"\xC4\xA0t", "he"})})}}},
  };
  return j;
}

}  // namespace el::data::testing
