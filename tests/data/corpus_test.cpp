// corpus_test.cpp — built-in corpus discovery, input expansion, document reader.
#include "data/corpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "data/data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::TempDir;
using testing::write_text;
namespace fs = std::filesystem;

TEST(BuiltinCorpus, FoundAndSortedWhenInstalled) {
  auto files = builtin_corpus_files();
  if (!files.ok()) GTEST_SKIP() << "python3-doc not installed: " << files.error().message();
  ASSERT_GT(files->size(), 100u);
  EXPECT_TRUE(std::is_sorted(files->begin(), files->end()));
  for (const auto& f : files.value()) EXPECT_TRUE(f.ends_with(".rst.txt")) << f;
  // Each file once, even though Debian links several package dirs to one.
  EXPECT_EQ(std::adjacent_find(files->begin(), files->end()), files->end());
}

TEST(BuiltinCorpus, MissingGivesSetupHint) {
  TempDir root;
  expect_error(builtin_corpus_files(root.path()),
               {"not installed", "run scripts/setup.sh (installs python3-doc)"});
}

TEST(BuiltinCorpus, DocRootFromTheEnvironment) {
  TempDir root;
  write_text(root.file("python3.11/html/_sources/a.rst.txt"), "from EL_DOC_ROOT");
  ::setenv("EL_DOC_ROOT", root.path().c_str(), 1);
  auto files = builtin_corpus_files();
  ::unsetenv("EL_DOC_ROOT");
  ASSERT_TRUE(files.ok()) << files.error().message();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_TRUE(files->at(0).ends_with("python3.11/html/_sources/a.rst.txt")) << files->at(0);
  // An explicit root is not overridden.
  ::setenv("EL_DOC_ROOT", "/nonexistent", 1);
  EXPECT_TRUE(builtin_corpus_files(root.path()).ok());
  ::unsetenv("EL_DOC_ROOT");
}

TEST(BuiltinCorpus, PrefersNewestPythonAndResolvesLinks) {
  TempDir root;
  write_text(root.file("python3.9/html/_sources/a.rst.txt"), "old");
  write_text(root.file("python3.12/html/_sources/lib/b.rst.txt"), "new b");
  write_text(root.file("python3.12/html/_sources/a.rst.txt"), "new a");
  write_text(root.file("python3.12/html/_sources/skip.html"), "not rst");
  fs::create_directory_symlink(root.file("python3.12"), root.file("python3-doc"));
  auto files = builtin_corpus_files(root.path());
  ASSERT_TRUE(files.ok()) << files.error().message();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_TRUE(files->at(0).ends_with("python3.12/html/_sources/a.rst.txt")) << files->at(0);
  EXPECT_TRUE(files->at(1).ends_with("python3.12/html/_sources/lib/b.rst.txt"));
}

TEST(ExpandInputs, WalksDirectoriesSortedWithKnownExtensions) {
  TempDir d;
  write_text(d.file("in/b.txt"), "b");
  write_text(d.file("in/a.md"), "a");
  write_text(d.file("in/sub/c.jsonl"), "{\"text\": \"c\"}\n");
  write_text(d.file("in/sub/d.rst"), "d");
  write_text(d.file("in/sub/e.json"), "[\"e\"]");
  write_text(d.file("in/image.png"), "png");
  write_text(d.file("in/.hidden/f.txt"), "hidden");
  write_text(d.file("in/.g.txt"), "hidden");
  write_text(d.file("extra.data"), "explicit files keep any extension");
  auto files = expand_inputs({d.file("in"), d.file("extra.data"), d.file("in/b.txt")});
  ASSERT_TRUE(files.ok()) << files.error().message();
  const std::vector<std::string> want = {d.file("in/a.md"), d.file("in/b.txt"),
                                         d.file("in/sub/c.jsonl"), d.file("in/sub/d.rst"),
                                         d.file("in/sub/e.json"), d.file("extra.data")};
  EXPECT_EQ(files.value(), want);  // duplicate in/b.txt dropped
}

TEST(ExpandInputs, Errors) {
  TempDir d;
  expect_error(expand_inputs({d.file("missing.txt")}),
               {"missing.txt", "input path does not exist"});
  fs::create_directories(d.file("empty"));
  write_text(d.file("empty/x.bin"), "x");
  expect_error(expand_inputs({d.file("empty")}), {"empty", "holds no .txt, .rst, .md, .jsonl"});
  expect_error(expand_inputs({}), {"no input files"});
}

std::vector<Document> read_all(const std::vector<std::string>& files, const std::string& key,
                               ReadStats* stats = nullptr, Status* status = nullptr) {
  std::vector<Document> docs;
  Status st = for_each_document(
      files, key,
      [&](Document&& d) {
        docs.push_back(std::move(d));
        return Status::Ok();
      },
      stats);
  if (status != nullptr) *status = st;
  else EXPECT_TRUE(st.ok()) << st.error().message();
  return docs;
}

TEST(Documents, TextFileIsOneDocument) {
  TempDir d;
  const std::string text = "line one\n  indented line\n\nlast line without newline";
  const std::string f = write_text(d.file("a.txt"), text);
  auto docs = read_all({f}, "text");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, text);
  EXPECT_EQ(docs[0].line, 0);
}

TEST(Documents, JsonLinesOnePerLineWithKey) {
  TempDir d;
  const std::string f = write_text(
      d.file("a.jsonl"),
      "{\"text\": \"first\\nwith newline\", \"id\": 1}\n\n{\"text\": \"second\"}\n"
      "{\"text\": \"\"}\n   \n{\"body\": \"x\", \"text\": \"third \\u00e9\"}\n");
  ReadStats st;
  auto docs = read_all({f}, "text", &st);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "first\nwith newline");
  EXPECT_EQ(docs[0].line, 1);
  EXPECT_EQ(docs[1].text, "second");
  EXPECT_EQ(docs[1].line, 3);
  EXPECT_EQ(docs[2].text, "third \xc3\xa9");
  EXPECT_EQ(docs[2].line, 6);
  EXPECT_EQ(st.documents, 3);
  EXPECT_EQ(st.empty_documents, 1);

  const std::string g = write_text(d.file("b.jsonl"), "{\"content\": \"custom key\"}\n");
  auto custom = read_all({g}, "content");
  ASSERT_EQ(custom.size(), 1u);
  EXPECT_EQ(custom[0].text, "custom key");
}

TEST(Documents, JsonArrayAndJsonNamedLines) {
  TempDir d;
  const std::string arr = write_text(d.file("a.json"), "  [\"one\", {\"text\": \"two\"}]");
  const std::string lines = write_text(d.file("b.json"), "{\"text\": \"three\"}\n");
  EXPECT_EQ(detect_format(arr).value(), FileFormat::json_array);
  EXPECT_EQ(detect_format(lines).value(), FileFormat::jsonl);
  auto docs = read_all({arr, lines}, "text");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "one");
  EXPECT_EQ(docs[1].text, "two");
  EXPECT_EQ(docs[2].text, "three");
  EXPECT_EQ(docs[2].file_index, 1u);
}

TEST(DocumentErrors, MalformedJsonLineNamesFileAndLine) {
  TempDir d;
  const std::string f =
      write_text(d.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": oops}\n");
  Status st;
  read_all({f}, "text", nullptr, &st);
  expect_error(st, {"bad.jsonl:3", "malformed JSON line"});
}

TEST(DocumentErrors, MissingKeyNamesKeyAndLine) {
  TempDir d;
  const std::string f = write_text(d.file("k.jsonl"), "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n");
  Status st;
  read_all({f}, "text", nullptr, &st);
  expect_error(st, {"k.jsonl:2", "no key 'text'", "'body'"});
}

TEST(DocumentErrors, NonStringAndNonObject) {
  TempDir d;
  const std::string f = write_text(d.file("n.jsonl"), "{\"text\": 5}\n");
  Status st;
  read_all({f}, "text", nullptr, &st);
  expect_error(st, {"n.jsonl:1", "key 'text' is a number, expected a string"});
  const std::string g = write_text(d.file("s.jsonl"), "\"bare string\"\n");
  read_all({g}, "text", nullptr, &st);
  expect_error(st, {"s.jsonl:1", "expected a JSON object"});
  const std::string h = write_text(d.file("o.json"), "[1]");
  read_all({h}, "text", nullptr, &st);
  expect_error(st, {"o.json: element 0"});
}

TEST(DocumentErrors, EmptyCorpus) {
  TempDir d;
  const std::string a = write_text(d.file("empty.txt"), "");
  const std::string b = write_text(d.file("blank.jsonl"), "\n\n");
  expect_error(read_documents({a, b}), {"empty corpus", "2 input file(s) hold no text"});
}

}  // namespace
}  // namespace el::data
