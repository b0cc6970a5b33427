// data_fake_tokenizer.h — a tiny TextTokenizer for tests: one id per byte,
// plus whole special tokens.
//
// Ids 0..255 are the bytes; specials follow from 256 in the order given.
// encode() maps a special token's text to its id wherever it appears (longest
// match first), as TextTokenizer promises for declared added tokens; every
// other byte is its own id, so tests can predict every id and decode any
// span back to text exactly. Optional "merges" (two-byte strings) become one
// id each, after the specials, to test that no token straddles a boundary
// the caller drew.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/text_tokenizer.h"

namespace el::data::testing {

class FakeTokenizer : public TextTokenizer {
 public:
  struct Options {
    std::vector<std::string> specials = {"<s>",          "</s>",
                                         "<pad>",        "<|begin_of_text|>",
                                         "<|start_header_id|>", "<|end_header_id|>",
                                         "<|eot_id|>",   "<|im_start|>",
                                         "<|im_end|>"};
    std::string bos = "<s>", eos = "</s>", pad = "<pad>";  // "" = none
    std::vector<std::string> merges;  // two-byte strings encoded as one id
  };

  FakeTokenizer() : FakeTokenizer(Options{}) {}
  explicit FakeTokenizer(Options o) : o_(std::move(o)) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      int best = -1;
      size_t best_len = 0;
      for (size_t k = 0; k < o_.specials.size(); ++k) {
        const std::string& s = o_.specials[k];
        if (s.size() > best_len && text.compare(i, s.size(), s) == 0) {
          best = static_cast<int>(k);
          best_len = s.size();
        }
      }
      if (best >= 0) {
        ids.push_back(256 + best);
        i += best_len;
        continue;
      }
      bool merged = false;
      for (size_t k = 0; k < o_.merges.size() && i + 1 < text.size(); ++k)
        if (text.compare(i, 2, o_.merges[k]) == 0) {
          ids.push_back(static_cast<int32_t>(256 + o_.specials.size() + k));
          i += 2;
          merged = true;
          break;
        }
      if (merged) continue;
      ids.push_back(static_cast<unsigned char>(text[i]));
      ++i;
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override {
    std::string out;
    const int32_t n_special = static_cast<int32_t>(o_.specials.size());
    for (int32_t id : ids) {
      if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
      else if (id >= 256 && id < 256 + n_special) {
        if (!skip_special) out += o_.specials[id - 256];
      } else if (id >= 256 + n_special && id < vocab_size()) {
        out += o_.merges[id - 256 - n_special];
      }
    }
    return out;
  }

  int vocab_size() const override {
    return static_cast<int>(256 + o_.specials.size() + o_.merges.size());
  }
  std::optional<int32_t> bos_id() const override { return named(o_.bos); }
  std::optional<int32_t> eos_id() const override { return named(o_.eos); }
  std::optional<int32_t> pad_id() const override { return named(o_.pad); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (size_t k = 0; k < o_.specials.size(); ++k)
      if (o_.specials[k] == token) return static_cast<int32_t>(256 + k);
    return std::nullopt;
  }
  const std::string& source_path() const override { return path_; }

  // The id of a special token (tests spell expected sequences with it).
  int32_t id(std::string_view special) const { return *token_to_id(special); }

 private:
  std::optional<int32_t> named(const std::string& s) const {
    if (s.empty()) return std::nullopt;
    return token_to_id(s);
  }

  Options o_;
  std::string path_ = "fake-tokenizer";
};

}  // namespace el::data::testing
