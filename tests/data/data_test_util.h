// data_test_util.h — helpers for the data-layer tests: temp directories,
// small files, and one tokenizer trained once per test process.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/tokenizer.h"

namespace el::data::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/el_data_test_XXXXXX";
    char* made = mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `bytes` to `path` (creating parent directories) and returns the path.
inline std::string write_text(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  return path;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Real English prose for tokenizer training: the built-in corpus's tutorial
// chapters (~250 KB) when python3-doc is installed, else our own fixture
// (forced with EL_DATA_TEST_FIXTURE_ONLY=1, to test that path too).
inline std::vector<std::string> small_corpus_files() {
  std::vector<std::string> out;
  auto all = builtin_corpus_files();
  if (all.ok() && std::getenv("EL_DATA_TEST_FIXTURE_ONLY") == nullptr)
    for (const auto& f : all.value())
      if (f.find("/tutorial/") != std::string::npos) out.push_back(f);
  if (out.empty()) out.push_back(std::string(EL_TEST_DATA_DIR) + "/data/prose.txt");
  return out;
}

inline TokenizerTrainOptions small_tokenizer_options(const std::string& prefix) {
  TokenizerTrainOptions o;
  o.input_files = small_corpus_files();
  o.model_prefix = prefix;
  o.vocab_size = 1024;
  o.input_sentence_size = 20000;
  return o;
}

// A tokenizer trained once per process (shared by the test files).
inline const std::string& shared_tokenizer_model() {
  static TempDir dir;  // removed at process exit
  static const std::string model = [] {
    const std::string prefix = dir.file("shared_tok");
    train_tokenizer(small_tokenizer_options(prefix)).check();
    return prefix + ".model";
  }();
  return model;
}

// Asserts that a Result/Status failed and that its message contains every
// fragment; returns the message for further checks.
template <class R>
std::string expect_error(const R& r, std::initializer_list<std::string> fragments) {
  EXPECT_FALSE(r.ok());
  if (r.ok()) return {};
  const std::string msg = r.error().message();
  for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  return msg;
}

}  // namespace el::data::testing
