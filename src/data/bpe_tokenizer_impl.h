// bpe_tokenizer_impl.h — BpeTokenizer's state, shared by bpe_tokenizer.cpp
// (encode/decode) and bpe_tokenizer_load.cpp (reading tokenizer.json). Not
// part of the interface.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/bpe_pretokenizer.h"
#include "data/bpe_tokenizer.h"

namespace el::data::bpe {

// std::string keys looked up by string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// An entry of tokenizer.json's added_tokens.
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;  // only where no word character touches either end
  bool lstrip = false;       // swallows the whitespace before it
  bool rstrip = false;       // swallows the whitespace after it
  bool normalized = true;    // matched in the normalized text (else the raw text)
  bool special = false;      // dropped by decode(skip_special = true)
};

// Byte trie over added-token strings: the longest one starting at a position.
class TokenTrie {
 public:
  void insert(std::string_view key, int32_t value);
  bool empty() const { return nodes_.size() == 1; }
  // {length, value} of the longest key that text[pos..] starts with; length 0 if none.
  std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // byte -> node, sorted
    int32_t value = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
};

}  // namespace el::data::bpe

namespace el::data {

struct BpeTokenizer::Impl {
  std::string source;

  // ---- model
  bpe::StringMap<int32_t> vocab;                                // byte-level token -> id
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges;  // (left << 32 | right) -> (rank, new id)
  int64_t merge_count = 0;
  std::array<int32_t, 256> byte_ids{};  // id of each byte's alphabet character, -1 if absent
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  // ---- normalizer and pre-tokenizer
  bool nfc = false;
  std::vector<bpe::Regex> splits;  // Split steps, in order
  bool add_prefix_space = false;
  bool byte_level_regex = false;   // ByteLevel(use_regex = true): split by the GPT-2 pattern
  bpe::Regex gpt2;

  // ---- added tokens
  std::vector<bpe::AddedToken> added;
  bpe::TokenTrie raw_trie;         // normalized = false, value = index into added
  bpe::TokenTrie normalized_trie;  // normalized = true, matched on their normalized form
  bpe::StringMap<int32_t> added_ids;  // content -> id

  // ---- per id (size vocab_size)
  std::vector<std::string> id_token;  // as tokenizer.json spells it ("" = no token)
  std::vector<std::string> id_bytes;  // what decode emits
  std::vector<uint8_t> id_flags;      // kHasToken | kSpecial
  static constexpr uint8_t kHasToken = 1, kSpecial = 2;

  std::optional<int32_t> bos, eos, pad;
  std::string pretokenizer_name;  // for describe()

  // Calls piece(text, -1) for text between added tokens and piece({}, id)
  // for each added token found (HF's AddedVocabulary::find_matches).
  void split_added(std::string_view text, const bpe::TokenTrie& trie,
                   const std::function<void(std::string_view, int32_t)>& piece) const;
  // Pre-tokenizes and BPE-encodes text that holds no added token.
  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const;
  // One pre-tokenized piece (raw bytes) -> ids.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
};

}  // namespace el::data
