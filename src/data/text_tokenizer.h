// text_tokenizer.h — the tokenizer interface the rest of the engine uses.
//
// Two implementations: the SentencePiece model (data/tokenizer.h; what the
// pretraining axis trains on the built-in corpus) and Hugging Face's
// tokenizer.json byte-level BPE (data/bpe_tokenizer.h; Llama 3, Qwen2 and
// Mistral checkpoints ship one). SFT formatting (data/sft.h) and generation
// only see this interface, so any checkpoint's tokenizer works with them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace el::data {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;

  // Text -> ids. Special tokens written in the text (e.g. "<|im_start|>")
  // become their ids when the tokenizer declares them as added tokens;
  // nothing is prepended or appended (callers add BOS/EOS explicitly, so SFT
  // formatting controls every token).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids -> text. skip_special drops special/added control tokens.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int vocab_size() const = 0;  // ids are in [0, vocab_size)
  // Beginning/end of sequence and padding ids, when the tokenizer has them.
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> pad_id() const = 0;
  // The id of a whole token string ("<|im_end|>", "<|eot_id|>"), if any.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // Where it was loaded from, for errors and reports.
  virtual const std::string& source_path() const = 0;
};

}  // namespace el::data
