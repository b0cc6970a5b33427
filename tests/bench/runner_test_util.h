// runner_test_util.h — what the runner tests (runner_test.cpp,
// runner_infer_test.cpp) share: a substring expectation and a scratch
// directory.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

namespace el::bench {

// A fresh directory under /tmp named after `prefix`, `tag` and the process,
// removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir(const std::string& prefix, const std::string& tag) {
    namespace fs = std::filesystem;
    path = (fs::temp_directory_path() / (prefix + "_" + tag + "_" + std::to_string(::getpid()))).string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace el::bench
