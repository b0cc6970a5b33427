// tokenizer_factory.h — one entry point that opens any tokenizer we read,
// as the TextTokenizer interface (text_tokenizer.h): a Hugging Face
// tokenizer.json (byte-level BPE, bpe_tokenizer.h), a SentencePiece .model
// (tokenizer.h), or a checkpoint directory holding either.
#pragma once

#include <memory>
#include <string>

#include "core/error.h"
#include "data/text_tokenizer.h"
#include "data/tokenizer.h"

namespace el::data {

// Resolution: a directory -> its tokenizer.json, else its tokenizer.model
// (tokenizer.json first, as transformers' fast tokenizers do); a file ending
// in .json -> tokenizer.json; .model -> SentencePiece; any other file is
// sniffed (JSON starts with '{'). Errors name the path and what was looked for,
// or pass on the loader's error.
Result<std::unique_ptr<TextTokenizer>> load_text_tokenizer(const std::string& path);

// A SentencePiece model seen through TextTokenizer. Control pieces (<s>,
// </s>) decode to nothing with skip_special and to their piece text without
// it; ids outside [0, vocab_size) decode to nothing (as in BpeTokenizer).
class SentencePieceTextTokenizer final : public TextTokenizer {
 public:
  explicit SentencePieceTextTokenizer(Tokenizer tok) : tok_(std::move(tok)) {}

  std::vector<int32_t> encode(std::string_view text) const override { return tok_.encode(text); }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override { return tok_.vocab_size(); }
  std::optional<int32_t> bos_id() const override { return optional_id(tok_.bos_id()); }
  std::optional<int32_t> eos_id() const override { return optional_id(tok_.eos_id()); }
  std::optional<int32_t> pad_id() const override { return optional_id(tok_.pad_id()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    return optional_id(tok_.piece_to_id(token));
  }
  const std::string& source_path() const override { return tok_.model_path(); }

  const Tokenizer& sentencepiece() const { return tok_; }

 private:
  static std::optional<int32_t> optional_id(int id) {
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  }
  Tokenizer tok_;
};

}  // namespace el::data
