// tokenizer_factory.cpp — load_text_tokenizer and the SentencePiece adapter.
#include "data/tokenizer_factory.h"

#include <filesystem>
#include <fstream>

#include "data/bpe_tokenizer.h"

namespace el::data {

std::string SentencePieceTextTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const int n = tok_.vocab_size();
  std::string out;
  std::vector<int32_t> run;  // ids between control pieces, decoded together
  auto flush = [&] {
    if (!run.empty()) out += tok_.decode(run);
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= n) continue;
    if (tok_.is_control(id)) {
      if (skip_special) continue;
      flush();
      out += tok_.id_to_piece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

namespace {

Result<std::unique_ptr<TextTokenizer>> load_json(const std::string& path) {
  auto t = BpeTokenizer::load(path);
  if (!t.ok()) return t.error();
  return std::unique_ptr<TextTokenizer>(std::make_unique<BpeTokenizer>(std::move(t).value()));
}

Result<std::unique_ptr<TextTokenizer>> load_sentencepiece(const std::string& path) {
  auto t = Tokenizer::load(path);
  if (!t.ok()) return t.error();
  return std::unique_ptr<TextTokenizer>(std::make_unique<SentencePieceTextTokenizer>(std::move(t).value()));
}

// True when the file's first non-blank byte opens a JSON object.
bool looks_like_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c))
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return c == '{';
  return false;
}

}  // namespace

Result<std::unique_ptr<TextTokenizer>> load_text_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::is_regular_file(dir / "tokenizer.json", ec)) return load_json((dir / "tokenizer.json").string());
    if (fs::is_regular_file(dir / "tokenizer.model", ec))
      return load_sentencepiece((dir / "tokenizer.model").string());
    return make_error("no tokenizer.json or tokenizer.model in this directory", path,
                      "pass the tokenizer file itself, or the checkpoint directory that holds it");
  }
  if (!fs::is_regular_file(path, ec))
    return make_error("tokenizer not found", path, "pass a tokenizer.json, a SentencePiece .model, or a directory");
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".json") return load_json(path);
  if (ext == ".model") return load_sentencepiece(path);
  return looks_like_json(path) ? load_json(path) : load_sentencepiece(path);
}

}  // namespace el::data
