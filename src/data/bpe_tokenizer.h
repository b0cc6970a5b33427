// bpe_tokenizer.h — Hugging Face tokenizer.json byte-level BPE (Llama 3,
// Qwen2, GPT-2 style) behind the TextTokenizer interface.
//
// What a tokenizer.json may hold (anything else is refused with an error that
// names the key and the file):
//   model          type "BPE": vocab, merges ("a b" strings or ["a", "b"]
//                  pairs), ignore_merges, unk_token/fuse_unk; no dropout,
//                  byte_fallback, continuing_subword_prefix or end_of_word_suffix
//   normalizer     null, NFC, or a Sequence of NFC
//   pre_tokenizer  ByteLevel (use_regex true: the GPT-2 pattern), or a
//                  Sequence of Split(Regex|String, behavior Isolated, invert
//                  false) steps followed by ByteLevel (Llama 3, Qwen2);
//                  add_prefix_space is honoured
//   decoder        ByteLevel, or null (decoded as ByteLevel all the same; HF
//                  would join the raw byte-level tokens with spaces)
//   added_tokens   special or not, with HF's lstrip / rstrip / single_word /
//                  normalized semantics (see encode); each id must be the one
//                  HF assigns on load (its vocab id, else the next free id)
//   post_processor, truncation, padding: ignored (nothing is ever added or cut)
//
// Encoding reproduces tokenizers' encode(text, add_special_tokens=False):
//   1. added tokens with normalized=false are found in the raw text (leftmost,
//      then longest); the text between them is
//   2. normalized (NFC), and added tokens with normalized=true are found in it;
//   3. the rest is split by the pre-tokenizer regexes (PCRE2; see
//      bpe_pretokenizer.h for how Oniguruma's syntax is carried over), each
//      piece mapped to GPT-2's byte alphabet and
//   4. merged by BPE (lowest merge rank first, leftmost on ties), or looked up
//      whole first when ignore_merges is set.
// Text that is not well-formed UTF-8 is first repaired: every ill-formed
// sequence becomes U+FFFD (what Python's errors="replace" gives), so the ids
// are those of the repaired text. Decoding maps tokens back to bytes and
// replaces ill-formed UTF-8 in the result the same way; ids with no token
// (negative, >= vocab_size, or gaps in the id space) decode to nothing, as in
// HF (a checkpoint's embedding table is often larger than its vocabulary).
//
// bos/eos/pad come from tokenizer_config.json next to tokenizer.json
// ("bos_token": "<|begin_of_text|>" or {"content": ...}; null or absent = none).
// Without that file they are guessed from well-known names:
// bos <|begin_of_text|>, <s>, <|startoftext|>; eos <|end_of_text|>, </s>,
// <|endoftext|>; pad <pad>, <|pad|>, <|finetune_right_pad_id|>.
//
// Untrusted files: the file size, vocabulary, merge and added-token counts and
// token lengths are capped (constants below); every id is range-checked.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/text_tokenizer.h"

namespace el::data {

inline constexpr int64_t kMaxTokenizerJsonBytes = int64_t{64} << 20;   // Llama 3's is ~9 MB
inline constexpr int64_t kMaxTokenizerConfigBytes = int64_t{16} << 20;
inline constexpr int32_t kMaxBpeTokenId = (1 << 21) - 1;               // largest real vocab ~262k
inline constexpr int64_t kMaxBpeMerges = int64_t{1} << 22;
inline constexpr int64_t kMaxAddedTokens = int64_t{1} << 17;
inline constexpr size_t kMaxTokenBytes = 4096;

class BpeTokenizer final : public TextTokenizer {
 public:
  // Loads a tokenizer.json (and tokenizer_config.json beside it, when there).
  // Errors name the file and the key: missing or oversized file, malformed
  // JSON, an unsupported model/normalizer/pre-tokenizer/decoder type, merges
  // naming tokens not in the vocabulary, duplicate or out-of-range ids, or
  // support not built in (bpe::support_missing()).
  static Result<BpeTokenizer> load(const std::string& path);
  // The same from JSON text; `source` names it in errors and source_path().
  // `config_json` is tokenizer_config.json's text (empty: guess bos/eos/pad).
  static Result<BpeTokenizer> from_json(std::string_view json, const std::string& source,
                                        std::string_view config_json = {},
                                        const std::string& config_source = {});

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer() override;

  // Thread-safe (const; no caches).
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;

  int vocab_size() const override;  // largest id (model or added) + 1
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  std::optional<int32_t> pad_id() const override;
  // Added tokens first (their content), then the model vocabulary (byte-level
  // form, e.g. "Ġthe").
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  const std::string& source_path() const override;

  // The token string of an id as tokenizer.json spells it, if the id has one.
  std::optional<std::string> id_to_token(int32_t id) const;
  // Whether decode(..., skip_special = true) drops this id.
  bool is_special(int32_t id) const;
  // One line for logs, e.g. "BPE: 128000 tokens + 256 added, 280147 merges,
  // ignore_merges, Split+ByteLevel (tokenizer.json)".
  std::string describe() const;

  struct Impl;  // bpe_tokenizer_impl.h

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace el::data
