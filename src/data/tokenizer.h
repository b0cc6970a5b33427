// tokenizer.h — training and using a SentencePiece BPE tokenizer.
//
// We use libsentencepiece (the library behind Llama/T5 tokenizers) rather
// than writing our own BPE: the .model file it writes is a standard artefact
// other tools load. The training settings make the tokenizer *lossless* for
// our text: identity normalisation, no whitespace folding (indentation
// survives) and byte fallback (any byte sequence encodes, so decode(encode(s))
// == s for every UTF-8 string, newlines included). Ids: 0 = <unk>,
// 1 = <s> (BOS), 2 = </s> (EOS, our document separator), 3..258 = bytes.
//
// Training reads documents with the corpus reader (corpus.h), splits them into
// lines (SentencePiece's "sentences"), keeps at most input_sentence_size of
// them by reservoir sampling with a seeded el::Rng, and feeds them through a
// SentenceIterator, so the sample — and, given SentencePiece's deterministic
// BPE trainer, the model — depends only on the inputs and the seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace el::data {

struct TokenizerTrainOptions {
  std::vector<std::string> input_files;  // files (use expand_inputs() for directories)
  std::string text_key = "text";         // JSON key of the text in .jsonl/.json inputs
  std::string model_prefix;              // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 4096;                 // including <unk>, <s>, </s> and 256 byte pieces
  std::string model_type = "bpe";        // "bpe" or "unigram"
  double character_coverage = 1.0;       // keep every character seen as a piece
  bool byte_fallback = true;             // unseen characters encode as bytes
  int64_t input_sentence_size = 200000;  // max lines sampled for training (0 = all)
  int max_sentence_length = 4192;        // longer lines are skipped by SentencePiece (bytes)
  int num_threads = 2;
  uint64_t seed = 1234;                  // reservoir sample + SentencePiece's RNG
  bool verbose = false;                  // pass SentencePiece's own log through
};

// What training saw, for logs and reports.
struct TokenizerTrainStats {
  int64_t documents = 0;
  int64_t lines_seen = 0;  // non-empty lines in the corpus
  int64_t lines_used = 0;  // after sampling
  double seconds = 0.0;
};

// Trains and writes <model_prefix>.model (atomically) and <model_prefix>.vocab
// ("piece<TAB>score" per line). SentencePiece's seed and log level are
// process-wide, so do not train two tokenizers at once from several threads. Errors: no input files, an unreadable or
// malformed input (file:line), an empty corpus, a vocab too small for the
// byte pieces and characters, SentencePiece's own failures (its message), an
// unwritable output path.
Status train_tokenizer(const TokenizerTrainOptions& options, TokenizerTrainStats* stats = nullptr);

// A loaded SentencePiece model. Move-only. encode/decode are const and safe to
// call from several threads at once (SentencePieceProcessor is immutable
// after loading).
class Tokenizer {
 public:
  // Errors name the file: missing, unreadable, not a SentencePiece model
  // (corrupt), or without BOS/EOS ids (we need EOS to separate documents).
  static Result<Tokenizer> load(const std::string& model_path);

  Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text -> ids, without BOS/EOS (the dataset builder appends EOS itself).
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text; BOS/EOS/unk decode to nothing. Ids outside [0, vocab_size)
  // are an invariant violation (EL_ENSURE): callers hold model outputs.
  std::string decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  int pad_id() const;  // -1 when the model has none
  std::string id_to_piece(int32_t id) const;  // "▁the", "<0x0A>", ...
  // The id of a whole piece, or -1 when the vocabulary has no such piece.
  int32_t piece_to_id(std::string_view piece) const;
  // Control symbols (<s>, </s>, user-declared controls) decode to nothing.
  bool is_control(int32_t id) const;
  const std::string& model_path() const { return model_path_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string model_path_;
};

}  // namespace el::data
