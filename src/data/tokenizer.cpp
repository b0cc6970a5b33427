// tokenizer.cpp — SentencePiece training (sampled lines via SentenceIterator)
// and the Tokenizer wrapper.
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <chrono>
#include <filesystem>
#include <unordered_map>

#include "core/rng.h"
#include "data/corpus.h"
#include "io/atomic_file.h"
#include "io/file_util.h"

namespace el::data {
namespace {

// Feeds the sampled lines to SentencePiece.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

std::string fmt_double(double v) { return fmt::format("{}", v); }

}  // namespace

Status train_tokenizer(const TokenizerTrainOptions& o, TokenizerTrainStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.input_files.empty())
    return make_error("no input files to train the tokenizer on", "", "pass text files");
  if (o.model_prefix.empty()) return make_error("tokenizer model_prefix is empty");
  if (o.vocab_size < 260)
    return make_error(fmt::format("vocab_size {} is too small: the 3 special and 256 byte pieces "
                                  "alone need 259, plus one per character",
                                  o.vocab_size),
                      o.model_prefix, "use a vocab_size of at least 512");
  if (o.model_type != "bpe" && o.model_type != "unigram")
    return make_error(fmt::format("unknown tokenizer model_type '{}'", o.model_type),
                      o.model_prefix, "use \"bpe\" or \"unigram\"");

  // Lines of every document, reservoir-sampled down to input_sentence_size
  // (Algorithm R: each line kept with equal probability, in one pass).
  std::vector<std::string> sample;
  int64_t seen = 0;
  const int64_t cap = o.input_sentence_size;
  Rng rng(o.seed);
  ReadStats rs;
  EL_TRY(for_each_document(
      o.input_files, o.text_key,
      [&](Document&& doc) {
        std::string_view text = doc.text;
        while (!text.empty()) {
          const size_t nl = text.find('\n');
          const std::string_view line = text.substr(0, nl);
          text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
          if (line.empty()) continue;
          if (cap <= 0 || seen < cap) {
            sample.emplace_back(line);
          } else {
            const uint64_t j = rng.below(static_cast<uint64_t>(seen) + 1);
            if (j < static_cast<uint64_t>(cap)) sample[j].assign(line);
          }
          ++seen;
        }
        return Status::Ok();
      },
      &rs));
  if (rs.documents == 0 || rs.bytes == 0 || sample.empty())
    return empty_corpus_error(o.input_files);

  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(o.model_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);

  // Identity normalisation + no whitespace folding + byte fallback = lossless.
  // pad is disabled; unk/bos/eos are pinned to 0/1/2 so every model agrees.
  const std::unordered_map<std::string, std::string> kwargs = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", fmt_double(o.character_coverage)},
      {"byte_fallback", o.byte_fallback ? "true" : "false"},
      {"input_sentence_size", "0"},  // we sampled already
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"num_threads", std::to_string(std::max(1, o.num_threads))},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "false"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"hard_vocab_limit", "false"},  // a small corpus may not fill the vocab
      {"minloglevel", o.verbose ? "0" : "2"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(o.seed % 0xfffffffeu));
  VectorSentenceIterator it(sample);
  std::string model_bytes;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, &model_bytes);
  if (!st.ok())
    return make_error(fmt::format("SentencePiece training failed: {}", st.ToString()),
                      o.model_prefix);

  // Validate what we are about to write and produce the .vocab listing.
  sentencepiece::SentencePieceProcessor sp;
  const auto ls = sp.LoadFromSerializedProto(model_bytes);
  if (!ls.ok())
    return make_error(fmt::format("trained model does not load: {}", ls.ToString()), o.model_prefix);
  std::string vocab;
  for (int i = 0; i < sp.GetPieceSize(); ++i)
    vocab += fmt::format("{}\t{}\n", sp.IdToPiece(i), sp.GetScore(i));
  EL_TRY(io::write_file_atomic(o.model_prefix + ".model", model_bytes));
  EL_TRY(io::write_file_atomic(o.model_prefix + ".vocab", vocab));

  if (stats != nullptr) {
    stats->documents = rs.documents;
    stats->lines_seen = seen;
    stats->lines_used = static_cast<int64_t>(sample.size());
    stats->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return Status::Ok();
}

// ---- Tokenizer

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec))
    return make_error("tokenizer model file not found", model_path,
                      "check the path, or train a tokenizer first (train_tokenizer)");
  EL_TRY_ASSIGN(const std::string bytes, io::read_file(model_path));
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = sp->LoadFromSerializedProto(bytes);
  if (!st.ok())
    return make_error(fmt::format("not a valid SentencePiece model ({})", st.ToString()),
                      model_path, "the file is corrupt or not a .model file; retrain it");
  if (sp->GetPieceSize() <= 0)
    return make_error("SentencePiece model has an empty vocabulary", model_path);
  if (sp->eos_id() < 0 || sp->bos_id() < 0)
    return make_error(fmt::format("SentencePiece model has no {} id (bos_id {}, eos_id {})",
                                  sp->eos_id() < 0 ? "EOS" : "BOS", sp->bos_id(), sp->eos_id()),
                      model_path, "train it with bos_id/eos_id set (train_tokenizer does)");
  Tokenizer t;
  t.sp_ = std::move(sp);
  t.model_path_ = model_path;
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  EL_ENSURE(sp_ != nullptr, "encode() on an unloaded Tokenizer");
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  EL_ENSURE(st.ok(), "SentencePiece encode failed: {}", st.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  EL_ENSURE(sp_ != nullptr, "decode() on an unloaded Tokenizer");
  const int n = sp_->GetPieceSize();
  for (int32_t id : ids) EL_ENSURE(id >= 0 && id < n, "token id {} outside vocab of {}", id, n);
  std::string out;
  const auto st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  EL_ENSURE(st.ok(), "SentencePiece decode failed: {}", st.ToString());
  return out;
}

int Tokenizer::vocab_size() const { return sp_ ? sp_->GetPieceSize() : 0; }
int Tokenizer::bos_id() const { return sp_ ? sp_->bos_id() : -1; }
int Tokenizer::eos_id() const { return sp_ ? sp_->eos_id() : -1; }
int Tokenizer::unk_id() const { return sp_ ? sp_->unk_id() : -1; }
int Tokenizer::pad_id() const { return sp_ ? sp_->pad_id() : -1; }

int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  if (!sp_) return -1;
  const int id = sp_->PieceToId(piece);  // unknown pieces map to unk_id
  return id >= 0 && sp_->IdToPiece(id) == piece ? id : -1;
}

bool Tokenizer::is_control(int32_t id) const {
  return sp_ && id >= 0 && id < sp_->GetPieceSize() && sp_->IsControl(id);
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  EL_ENSURE(sp_ != nullptr && id >= 0 && id < sp_->GetPieceSize(), "token id {} outside vocab", id);
  return sp_->IdToPiece(id);
}

}  // namespace el::data
