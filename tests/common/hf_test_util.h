// hf_test_util.h — helpers for the Hugging Face checkpoint tests (tests/io,
// tests/models): a per-test temporary directory, file writing, and the
// fixture directory written by tools/make_hf_fixtures.py. Header-only: every
// test program compiles tests/common/*.cpp, and most do not link el_io.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

// EXPECT_HAS(text, part): `text` contains `part` (prints the whole text if not).
#ifndef EXPECT_HAS
#define EXPECT_HAS(text, part)                                                \
  do {                                                                        \
    const std::string el_text_ = (text);                                      \
    EXPECT_NE(el_text_.find(part), std::string::npos)                         \
        << "expected to find \"" << (part) << "\" in \"" << el_text_ << "\""; \
  } while (0)
#endif

namespace el::hftest {

namespace fs = std::filesystem;

// tests/fixtures/hf/<name> (tools/make_hf_fixtures.py).
inline std::string fixture_dir(const std::string& name) {
  return (fs::path(EL_TEST_DATA_DIR) / "hf" / name).string();
}

inline void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh directory per test under gtest's temp dir, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::path(::testing::TempDir()) /
           ("el_hf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Copies fixture `name` into the temp dir (to damage it); returns the copy.
  std::string copy_fixture(const std::string& name) const {
    const fs::path dst = dir_ / name;
    fs::copy(fixture_dir(name), dst, fs::copy_options::recursive);
    return dst.string();
  }
  // Copies the model directory `src` into the temp dir (replacing an earlier
  // copy) with its config.json edited by `edit`; returns the copy.
  std::string copy_with_config(const fs::path& src,
                               const std::function<void(nlohmann::json&)>& edit) const {
    const fs::path dst = dir_ / src.filename();
    fs::remove_all(dst);
    fs::copy(src, dst, fs::copy_options::recursive);
    nlohmann::json j = nlohmann::json::parse(read_text(dst / "config.json"));
    edit(j);
    write_text(dst / "config.json", j.dump(1));
    return dst.string();
  }

  fs::path dir_;
};

}  // namespace el::hftest
