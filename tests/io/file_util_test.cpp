// Tests of io/file_util (whole and chunked reads), io/mapped_file and
// io/atomic_file (the file access the data layer, checkpoints and results rely
// on): round trips, temp-file cleanup, and each error path with its message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/mapped_file.h"

namespace el::io {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::path(::testing::TempDir()) /
           ("el_file_util_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  size_t entries() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }

  fs::path dir_;
};

// Bytes 0..255 repeated: NULs and high bytes must survive, and 200 KB spans
// several 64 KiB chunks.
std::string binary_bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 7 % 256);
  return s;
}

TEST_F(FileUtilTest, WriteThenReadRoundTrips) {
  for (const std::string& content : {std::string(), std::string("abc\n"), binary_bytes(200000)}) {
    ASSERT_TRUE(write_file_atomic(path("f.bin"), content).ok());
    auto r = read_file(path("f.bin"));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r.value(), content);
  }
  EXPECT_EQ(entries(), 1u);  // no temporary file left behind
  EXPECT_EQ(fs::status(path("f.bin")).permissions() & fs::perms::others_read, fs::perms::others_read);
}

TEST_F(FileUtilTest, ChunksCoverTheFileInOrder) {
  const std::string content = binary_bytes(200000);
  ASSERT_TRUE(write_file_atomic(path("f.bin"), content).ok());
  std::string joined;
  std::vector<size_t> sizes;
  ASSERT_TRUE(read_file_chunks(path("f.bin"), [&](std::string_view c) {
                sizes.push_back(c.size());
                joined.append(c);
              }).ok());
  EXPECT_EQ(joined, content);
  ASSERT_GE(sizes.size(), 4u);
  for (size_t s : sizes) {
    EXPECT_GT(s, 0u);
    EXPECT_LE(s, size_t{1} << 16);
  }
}

TEST_F(FileUtilTest, WriteWithSeveralPartsAndFailureCleansUp) {
  ASSERT_TRUE(write_file_atomic_with(path("two.bin"), [&](int fd) -> Status {
                EL_TRY(write_all(fd, "head", 4, path("two.bin")));
                return write_all(fd, "tail", 4, path("two.bin"));
              }).ok());
  EXPECT_EQ(read_file(path("two.bin")).value(), "headtail");

  // A failing writer leaves the old file as it was and no temporary file.
  const Status st = write_file_atomic_with(path("two.bin"), [&](int fd) -> Status {
    EL_TRY(write_all(fd, "partial", 7, path("two.bin")));
    return make_error("writer gave up", path("two.bin"));
  });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().what, "writer gave up");
  EXPECT_EQ(read_file(path("two.bin")).value(), "headtail");
  EXPECT_EQ(entries(), 1u);
}

TEST_F(FileUtilTest, ReadErrorsNameThePathAndReason) {
  auto missing = read_file(path("none"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), path("none") + ": cannot open file: No such file or directory");

  const Status chunks = read_file_chunks(path("none"), [](std::string_view) {});
  ASSERT_FALSE(chunks.ok());
  EXPECT_EQ(chunks.error().what, "cannot open file: No such file or directory");

  auto dir = read_file(dir_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().message(), dir_.string() + ": read error: Is a directory");
}

TEST_F(FileUtilTest, WriteIntoMissingDirectoryFails) {
  const std::string target = path("no_such_dir/out.txt");
  const Status st = write_file_atomic(target, "x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().where, target);
  EXPECT_NE(st.error().what.find("cannot create a temporary file in"), std::string::npos)
      << st.error().what;
  EXPECT_NE(st.error().what.find("No such file or directory"), std::string::npos);
  EXPECT_FALSE(st.error().hint.empty());
}

TEST_F(FileUtilTest, MappedFileSeesTheBytesAndMoves) {
  const std::string content = binary_bytes(100000);
  ASSERT_TRUE(write_file_atomic(path("m.bin"), content).ok());
  auto m = MappedFile::open(path("m.bin"), "widget");
  ASSERT_TRUE(m.ok()) << m.error().message();
  ASSERT_EQ(m->size(), content.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m->data()), m->size()), content);

  MappedFile moved = std::move(m.value());
  EXPECT_EQ(m->data(), nullptr);
  EXPECT_EQ(m->size(), 0u);
  ASSERT_EQ(moved.size(), content.size());
  EXPECT_EQ(static_cast<char>(moved.data()[123]), content[123]);
  moved = MappedFile();  // unmaps
  EXPECT_EQ(moved.size(), 0u);

  ASSERT_TRUE(write_file_atomic(path("empty.bin"), "").ok());
  auto empty = MappedFile::open(path("empty.bin"), "widget");
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_EQ(empty->data(), nullptr);
}

TEST_F(FileUtilTest, MappedFileErrorsNameTheKindOfFile) {
  auto missing = MappedFile::open(path("none"), "widget");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), path("none") + ": cannot open widget: No such file or directory");

  auto dir = MappedFile::open(dir_.string(), "widget");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().message(), dir_.string() + ": not a regular file");
}

}  // namespace
}  // namespace el::io
