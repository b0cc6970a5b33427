// shard_test.cpp — llm.c shard round trips and every rejected-shard error.
#include "data/shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "data/data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::read_bytes;
using testing::TempDir;
using testing::write_text;

int32_t header_int(const std::string& bytes, int i) {
  int32_t v;
  std::memcpy(&v, bytes.data() + 4 * i, 4);
  return v;
}

// A raw shard with an arbitrary header, for the error cases.
std::string raw_shard(int32_t magic, int32_t version, int32_t count, int32_t vocab,
                      const std::string& body) {
  std::string bytes(kShardHeaderBytes, '\0');
  const int32_t h[4] = {magic, version, count, vocab};
  std::memcpy(bytes.data(), h, sizeof(h));
  return bytes + body;
}

std::string u16_body(std::initializer_list<uint16_t> t) {
  return std::string(reinterpret_cast<const char*>(std::data(t)), t.size() * 2);
}

TEST(Shard, RoundTripU16) {
  TempDir dir;
  const std::string path = dir.file("a.bin");
  const std::vector<uint32_t> tokens = {0, 1, 2, 4095, 17, 65535 % 4096};
  ASSERT_TRUE(write_shard(path, tokens, 4096).ok());
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), kShardHeaderBytes + tokens.size() * 2);
  EXPECT_EQ(header_int(bytes, 0), 20240520);
  EXPECT_EQ(header_int(bytes, 1), 1);
  EXPECT_EQ(header_int(bytes, 2), 6);
  EXPECT_EQ(header_int(bytes, 3), 4096);
  for (int i = 4; i < 256; ++i) EXPECT_EQ(header_int(bytes, i), 0);

  auto shard = TokenShard::open(path, 4096);
  ASSERT_TRUE(shard.ok()) << shard.error().message();
  EXPECT_EQ(shard->size(), tokens.size());
  EXPECT_EQ(shard->version(), 1);
  EXPECT_EQ(shard->token_bytes(), 2);
  EXPECT_EQ(shard->vocab_size(), 4096);
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ((*shard)[i], tokens[i]);
  std::vector<int32_t> out(3);
  shard->copy_to(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{2, 4095, 17}));
  // No temp file left behind by the atomic write.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Shard, U16HoldsExactly65536) {
  TempDir dir;
  const std::string path = dir.file("edge.bin");
  ASSERT_TRUE(write_shard(path, {65535, 0}, 65536).ok());
  auto shard = TokenShard::open(path, 65536);
  ASSERT_TRUE(shard.ok()) << shard.error().message();
  EXPECT_EQ(shard->token_bytes(), 2);
  EXPECT_EQ((*shard)[0], 65535u);
}

TEST(Shard, RoundTripU32) {
  TempDir dir;
  const std::string path = dir.file("b.bin");
  const std::vector<uint32_t> tokens = {0, 65536, 99999, 5, 70000};
  ASSERT_TRUE(write_shard(path, tokens, 100000).ok());
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), kShardHeaderBytes + tokens.size() * 4);
  EXPECT_EQ(header_int(bytes, 1), 2);
  EXPECT_EQ(header_int(bytes, 3), 100000);
  auto shard = TokenShard::open(path, 100000);
  ASSERT_TRUE(shard.ok()) << shard.error().message();
  EXPECT_EQ(shard->token_bytes(), 4);
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ((*shard)[i], tokens[i]);
}

TEST(Shard, UnknownVocabPicksWidthFromTokens) {
  TempDir dir;
  ASSERT_TRUE(write_shard(dir.file("s.bin"), {1, 2, 3}, 0).ok());
  ASSERT_TRUE(write_shard(dir.file("l.bin"), {1, 70000}, 0).ok());
  EXPECT_EQ(header_int(read_bytes(dir.file("s.bin")), 1), 1);
  EXPECT_EQ(header_int(read_bytes(dir.file("l.bin")), 1), 2);
  auto s = TokenShard::open(dir.file("l.bin"), 0);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)[1], 70000u);
}

TEST(Shard, EmptyShardIsValid) {
  TempDir dir;
  ASSERT_TRUE(write_shard(dir.file("e.bin"), {}, 10).ok());
  auto s = TokenShard::open(dir.file("e.bin"), 10);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 0u);
}

TEST(Shard, WriteRejectsTokenOutsideVocab) {
  TempDir dir;
  expect_error(write_shard(dir.file("x.bin"), {1, 2, 50}, 50),
               {"x.bin", "token 50 at index 2", "vocab (size 50)"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.bin")));
}

TEST(Shard, WriteToMissingDirectoryFails) {
  expect_error(write_shard("/nonexistent_dir_el/x.bin", {1}, 10), {"/nonexistent_dir_el/x.bin"});
}

TEST(Shard, MovedShardStaysValid) {
  TempDir dir;
  ASSERT_TRUE(write_shard(dir.file("m.bin"), {7, 8, 9}, 10).ok());
  auto r = TokenShard::open(dir.file("m.bin"), 10);
  ASSERT_TRUE(r.ok());
  TokenShard a = std::move(r.value());
  TokenShard b;
  b = std::move(a);
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(b[2], 9u);
  EXPECT_EQ(a.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
}

TEST(Shard, ReadsLlmcLlama3Shard) {
  TempDir dir;
  const uint32_t toks[2] = {128000, 5};
  const std::string path = write_text(
      dir.file("llama3.bin"),
      raw_shard(20240801, 7, 2, 0, std::string(reinterpret_cast<const char*>(toks), 8)));
  auto s = TokenShard::open(path, 128256);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ((*s)[0], 128000u);
  EXPECT_EQ(s->token_bytes(), 4);
}

// ---- errors on open, each with its message

TEST(ShardErrors, MissingFile) {
  expect_error(TokenShard::open("/nonexistent_el_shard.bin", 10),
               {"/nonexistent_el_shard.bin", "cannot open token shard"});
}

TEST(ShardErrors, ShorterThanHeader) {
  TempDir dir;
  const std::string path = write_text(dir.file("short.bin"), std::string(100, 'x'));
  expect_error(TokenShard::open(path, 10),
               {"short.bin", "file is 100 bytes, shorter than the 1024-byte shard header"});
}

TEST(ShardErrors, BadMagic) {
  TempDir dir;
  const std::string path = write_text(dir.file("magic.bin"), raw_shard(12345, 1, 0, 0, ""));
  expect_error(TokenShard::open(path, 10),
               {"magic.bin", "bad magic number 12345 (expected 20240520)"});
}

TEST(ShardErrors, UnknownVersion) {
  TempDir dir;
  const std::string path = write_text(dir.file("ver.bin"), raw_shard(20240520, 3, 0, 0, ""));
  expect_error(TokenShard::open(path, 10), {"ver.bin", "unknown shard version 3"});
  const std::string p2 = write_text(dir.file("ver7.bin"), raw_shard(20240801, 1, 0, 0, ""));
  expect_error(TokenShard::open(p2, 10), {"unknown shard version 1", "expected 7"});
}

TEST(ShardErrors, Truncated) {
  TempDir dir;
  // Header claims 4 uint16 tokens (8 bytes) but only 3 bytes follow.
  const std::string path =
      write_text(dir.file("trunc.bin"), raw_shard(20240520, 1, 4, 10, std::string(3, '\0')));
  expect_error(TokenShard::open(path, 10),
               {"trunc.bin", "should be 1032 bytes, but it is 1027 bytes", "truncated"});
}

TEST(ShardErrors, TrailingData) {
  TempDir dir;
  const std::string path =
      write_text(dir.file("long.bin"), raw_shard(20240520, 1, 1, 10, std::string(4, '\0')));
  expect_error(TokenShard::open(path, 10), {"should be 1026 bytes", "trailing data"});
}

TEST(ShardErrors, TokenIdAtOrAboveModelVocab) {
  TempDir dir;
  const std::string path =
      write_text(dir.file("tok.bin"), raw_shard(20240520, 1, 4, 0, u16_body({1, 2, 9, 10})));
  expect_error(TokenShard::open(path, 10), {"tok.bin", "token id 10 at index 3", "must be < 10"});
}

TEST(ShardErrors, TokenIdAtOrAboveHeaderVocab) {
  TempDir dir;
  const std::string path =
      write_text(dir.file("hv.bin"), raw_shard(20240520, 1, 3, 5, u16_body({4, 5, 1})));
  expect_error(TokenShard::open(path, 100), {"token id 5 at index 1", "must be < 5", "header vocab 5"});
}

TEST(ShardErrors, HeaderVocabLargerThanModel) {
  TempDir dir;
  ASSERT_TRUE(write_shard(dir.file("big.bin"), {1, 2}, 8192).ok());
  expect_error(TokenShard::open(dir.file("big.bin"), 4096),
               {"written for a vocab of 8192 but the model's vocab is 4096"});
}

TEST(ShardErrors, NegativeCount) {
  TempDir dir;
  const std::string path = write_text(dir.file("neg.bin"), raw_shard(20240520, 1, -5, 0, ""));
  expect_error(TokenShard::open(path, 10), {"negative token count -5"});
}

}  // namespace
}  // namespace el::data
