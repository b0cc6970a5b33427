// sft_builtin_test.cpp — the built-in SFT dataset derived from the corpus:
// markup cleaning, which blocks become records, dedupe, order, max_records,
// the JSON Lines file (loaded by load_sft_data), the cache and the errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/data_fake_tokenizer.h"
#include "data/sft.h"
#include "data/sft_builtin.h"
#include "data_test_util.h"

namespace el::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;
using testing::FakeTokenizer;
using testing::read_bytes;
using testing::TempDir;
using testing::write_text;

// Prose long enough to qualify (>= 80 characters).
const std::string kIntro =
    "The :mod:`spam` module provides ``eggs`` and :func:`~spam.fry` for cooking, in the\n"
    "style of *classic* British breakfasts [#]_.\n";
const std::string kIntroClean =
    "The spam module provides eggs and fry() for cooking, in the style of classic British "
    "breakfasts.";

// A page exercising every block kind the rules skip.
const std::string kPage =
    ".. _spam-label:\n"
    "\n"
    "*************************************\n"
    ":mod:`spam` --- Cooking utilities\n"
    "*************************************\n"
    "\n"
    ".. module:: spam\n"
    "   :synopsis: Cook things.\n"
    "\n"
    "**Source code:** :source:`Lib/spam.py`\n"
    "\n"
    "--------------\n"
    "\n" +
    kIntro +
    "\n"
    "Basic usage\n"
    "===========\n"
    "\n"
    "Frying is done with a pan; the example below fries two fresh eggs and then prints\n"
    "them. For "
    "example::\n"
    "\n"
    "   >>> import spam\n"
    "   >>> spam.fry(2)\n"
    "\n"
    "This paragraph follows the code and must not be used for the section output at all.\n"
    "\n"
    "Only code here\n"
    "--------------\n"
    "\n"
    ".. code-block:: python\n"
    "\n"
    "   print('This sentence is inside a directive and is long enough to qualify as prose.')\n"
    "\n"
    "* A bullet item that is long enough to qualify as prose if lists were not skipped.\n"
    "\n"
    "=====  ==========================================================================\n"
    "Name   Meaning of the column that is long enough to be a paragraph if not a table\n"
    "=====  ==========================================================================\n"
    "\n"
    "After a table\n"
    "-------------\n"
    "\n"
    "Short.\n"
    "\n"
    ".. note::\n"
    "\n"
    "   A note body that is long enough to qualify as prose but lives inside a directive.\n"
    "\n"
    "The first qualifying paragraph of this section comes after a short one and a note.\n"
    "\n"
    "A second paragraph right after it is joined to the output while both fit the cap.\n"
    "\n"
    "List first\n"
    "----------\n"
    "\n"
    "- A list item.\n"
    "\n"
    "A paragraph after a list leans on the list, so this section gives no record at all.\n"
    "\n"
    "Code first\n"
    "----------\n"
    "\n"
    "Example::\n"
    "\n"
    "   spam.fry()\n"
    "\n"
    "A paragraph after an example leans on the code, so this section gives no record.\n";

// A doc root in the layout builtin_corpus_files expects.
std::string make_root(const TempDir& dir, const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string sources = dir.file("doc/python3.11/html/_sources");
  for (const auto& [name, text] : files) write_text(sources + "/" + name, text);
  return dir.file("doc");
}

BuiltinSftOptions options_for(const std::string& root) {
  BuiltinSftOptions o;
  o.doc_root = root;
  return o;
}

TEST(SftBuiltinClean, RendersInlineMarkupAsSphinxShowsIt) {
  EXPECT_EQ(clean_rst_inline(":mod:`json` --- JSON encoder"), "json - JSON encoder");
  EXPECT_EQ(clean_rst_inline(":func:`~os.path.join` and :meth:`list.sort`"),
            "join() and list.sort()");
  EXPECT_EQ(clean_rst_inline(":func:`len(x) <len>`, :keyword:`!if`, :c:expr:`char\\*`"),
            "len(x), if, char*");
  EXPECT_EQ(clean_rst_inline(":keyword:`except*<except_star>` clause"), "except* clause");
  EXPECT_EQ(clean_rst_inline(":pep:`8` and :rfc:`7159`"), "PEP 8 and RFC 7159");
  EXPECT_EQ(clean_rst_inline("``a  *b*`` and `JSON <https://json.org>`_ or `ref`__"),
            "a *b* and JSON or ref");
  EXPECT_EQ(clean_rst_inline("**bold** *emph* 2 * 3 *args"), "bold emph 2 * 3 *args");
  EXPECT_EQ(clean_rst_inline("text [#note]_ and [1]_.\nnext\\ line"), "text and. nextline");
}

TEST(SftBuiltinExtract, TakesFirstProseUnderEachTitleAndSkipsTheRest) {
  const BuiltinSftOptions o;
  const std::vector<BuiltinSftRecord> r = extract_sft_records(kPage, "library/spam.rst.txt", o);
  ASSERT_EQ(r.size(), 3u);
  // The page title: label, directive, the short "Source code" line and the
  // transition are passed over.
  EXPECT_EQ(r[0].instruction,
            "Explain spam - Cooking utilities (from the Python documentation).");
  EXPECT_EQ(r[0].output, kIntroClean);
  EXPECT_EQ(r[0].source, "library/spam.rst.txt:4");
  // A paragraph introducing code keeps its sentences before "For example::"
  // and ends the output.
  EXPECT_EQ(r[1].instruction, "Explain Basic usage (from the Python documentation on spam - "
                              "Cooking utilities).");
  EXPECT_EQ(r[1].output,
            "Frying is done with a pan; the example below fries two fresh eggs and then prints "
            "them.");
  EXPECT_EQ(r[1].source, "library/spam.rst.txt:17");
  // "Only code here" (directive, list, table), "List first" and "Code
  // first" (content before any prose) give no record.
  EXPECT_EQ(r[2].instruction.rfind("Explain After a table", 0), 0u);
  EXPECT_EQ(r[2].output,
            "The first qualifying paragraph of this section comes after a short one and a note."
            "\n\nA second paragraph right after it is joined to the output while both fit the "
            "cap.");
  for (const auto& rec : r) {
    EXPECT_EQ(rec.output.find("directive"), std::string::npos);
    EXPECT_EQ(rec.output.find("bullet"), std::string::npos);
    EXPECT_EQ(rec.output.find("column"), std::string::npos);
    EXPECT_EQ(rec.output.find("follows the code"), std::string::npos);
    EXPECT_EQ(rec.output.find("leans on"), std::string::npos);
  }
}

TEST(SftBuiltinExtract, LengthLimitsAndQuestionTitles) {
  const std::string page =
      "FAQ\n===\n\nSee the questions below; each one is answered by the paragraph under it.\n\n"
      "Why is the sky blue?\n--------------------\n\n"
      "Because air scatters the short wavelengths of sunlight more than the long ones.\n\n"
      "A second, also long paragraph that does not fit within a tight output cap at all.\n";
  BuiltinSftOptions o;
  o.min_paragraph_chars = 40;
  o.max_output_chars = 100;
  const auto r = extract_sft_records(page, "faq/x.rst.txt", o);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].instruction, "Why is the sky blue? (from the Python documentation on FAQ)");
  EXPECT_EQ(r[1].output,  // the second paragraph would pass the cap
            "Because air scatters the short wavelengths of sunlight more than the long ones.");
  o.min_paragraph_chars = 100;  // every paragraph is now too short
  EXPECT_TRUE(extract_sft_records(page, "faq/x.rst.txt", o).empty());
  o.min_paragraph_chars = 10;
  o.max_output_chars = 50;  // ... or too long
  EXPECT_TRUE(extract_sft_records(page, "faq/x.rst.txt", o).empty());
}

TEST(SftBuiltinCorpus, DedupesOrdersAndCapsDeterministically) {
  TempDir dir;
  const std::string dup =
      "Copy\n====\n\nThis paragraph appears in two different files, so only the first file's "
      "record is kept.\n";
  const std::string root = make_root(
      dir, {{"library/spam.rst.txt", kPage}, {"b.rst.txt", dup}, {"c/d.rst.txt", dup},
            {"notes.txt", dup}});  // not .rst.txt: not in the corpus
  BuiltinSftStats st;
  auto all = builtin_sft_records(options_for(root), &st);
  ASSERT_TRUE(all.ok()) << all.error().message();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ(all->at(0).source, "b.rst.txt:1");  // files sorted by path
  EXPECT_EQ(all->at(1).source.rfind("library/spam.rst.txt:", 0), 0u);
  EXPECT_EQ(st.files, 3);
  EXPECT_EQ(st.sections, 8);
  EXPECT_EQ(st.extracted, 5);
  EXPECT_EQ(st.duplicates, 1);
  EXPECT_EQ(st.records, 4);

  BuiltinSftOptions o = options_for(root);
  const std::string a = dir.file("a.jsonl"), b = dir.file("b.jsonl");
  EXPECT_EQ(write_builtin_sft(a, o).value(), 4);
  EXPECT_EQ(write_builtin_sft(b, o).value(), 4);
  EXPECT_EQ(read_bytes(a), read_bytes(b));
  o.max_records = 2;
  EXPECT_EQ(write_builtin_sft(b, o).value(), 2);
  const std::string first = read_bytes(a), capped = read_bytes(b);
  EXPECT_EQ(first.substr(0, capped.size()), capped);  // the first N, same bytes
  EXPECT_EQ(first.rfind("{\"instruction\":\"Explain Copy (from the Python documentation).\","
                        "\"input\":\"\",\"output\":\"This paragraph",
                        0),
            0u);
}

TEST(SftBuiltinCorpus, FileLoadsAsAlpaca) {
  TempDir dir;
  const std::string root = make_root(dir, {{"library/spam.rst.txt", kPage}});
  const std::string path = dir.file("builtin.jsonl");
  ASSERT_EQ(write_builtin_sft(path, options_for(root)).value(), 3);
  FakeTokenizer tok;
  SftOptions o;
  o.inputs = {path};
  o.read.format = SftFormat::alpaca;
  o.cutoff_len = 4096;
  auto d = load_sft_data(o, tok);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->stats.records, 3);
  EXPECT_EQ(d->stats.bad_records, 0);
  EXPECT_EQ(d->train->size(), 3);
  // Auto-detection finds alpaca too ("input" is present).
  o.read.format = SftFormat::auto_detect;
  auto auto_d = load_sft_data(o, tok);
  ASSERT_TRUE(auto_d.ok()) << auto_d.error().message();
  EXPECT_EQ(auto_d->read.formats.at(0), SftFormat::alpaca);
}

TEST(SftBuiltinCache, WritesOnceReusesAndRewritesWhenStale) {
  TempDir dir;
  const std::string root = make_root(dir, {{"library/spam.rst.txt", kPage}});
  const std::string cache = dir.file("cache/sub");  // created on demand
  auto p = ensure_builtin_sft(cache, options_for(root));
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(fs::path(p.value()).filename(), "builtin-sft-v1.jsonl");
  EXPECT_TRUE(fs::exists(p.value() + ".meta.json"));
  const std::string bytes = read_bytes(p.value());
  const auto mtime = fs::last_write_time(p.value());

  EXPECT_EQ(ensure_builtin_sft(cache, options_for(root)).value(), p.value());
  EXPECT_EQ(fs::last_write_time(p.value()), mtime);  // reused, not rewritten

  // A damaged copy (same size) is detected by its hash and rewritten.
  std::string damaged = bytes;
  damaged[10] = damaged[10] == 'x' ? 'y' : 'x';
  write_text(p.value(), damaged);
  EXPECT_EQ(ensure_builtin_sft(cache, options_for(root)).value(), p.value());
  EXPECT_EQ(read_bytes(p.value()), bytes);

  // Another corpus gives other records under the same name.
  write_text(root + "/python3.11/html/_sources/a.rst.txt",
             "New\n===\n\nA new page, sorted first by its path, whose only paragraph becomes the first "
             "record.\n");
  EXPECT_EQ(ensure_builtin_sft(cache, options_for(root)).value(), p.value());
  EXPECT_NE(read_bytes(p.value()), bytes);
  EXPECT_EQ(read_bytes(p.value()).rfind("{\"instruction\":\"Explain New ", 0), 0u);

  // Non-default options have their own file.
  BuiltinSftOptions o = options_for(root);
  o.max_records = 1;
  EXPECT_EQ(fs::path(ensure_builtin_sft(cache, o).value()).filename(),
            "builtin-sft-v1-n1.jsonl");
  o.max_records = 0;
  o.min_paragraph_chars = 40;
  o.max_output_chars = 600;
  EXPECT_EQ(builtin_sft_file_name(o), "builtin-sft-v1-p40-600.jsonl");
}

TEST(SftBuiltinErrors, NoCorpusNamesTheRootAndHint) {
  TempDir dir;
  const std::string empty_root = dir.file("nodocs");
  fs::create_directories(empty_root);
  expect_error(builtin_sft_records(options_for(empty_root)),
               {empty_root + "/python3*/html/_sources", "not installed", "python3-doc",
                "EL_DOC_ROOT"});
  expect_error(ensure_builtin_sft(dir.file("cache"), options_for(empty_root)),
               {empty_root, "python3-doc"});
  expect_error(write_builtin_sft(dir.file("x.jsonl"), options_for(empty_root)), {empty_root});
  EXPECT_FALSE(fs::exists(dir.file("x.jsonl")));
}

TEST(SftBuiltinErrors, NoRecordsAndBadOptions) {
  TempDir dir;
  const std::string root =
      make_root(dir, {{"a.rst.txt", "Title\n=====\n\n.. note:: only a directive\n"}});
  expect_error(builtin_sft_records(options_for(root)),
               {"gave no SFT records", "/_sources", "min_paragraph_chars"});
  BuiltinSftOptions o = options_for(root);
  o.max_output_chars = 10;
  o.min_paragraph_chars = 20;
  expect_error(builtin_sft_records(o), {"invalid built-in SFT options", "max_output_chars 10"});
  o = options_for(root);
  o.max_records = -1;
  expect_error(ensure_builtin_sft(dir.file("c"), o), {"max_records -1"});
}

TEST(SftBuiltinErrors, UnwritableCacheDirectory) {
  TempDir dir;
  const std::string root = make_root(dir, {{"library/spam.rst.txt", kPage}});
  write_text(dir.file("file"), "x");  // a file where the directory should be
  expect_error(ensure_builtin_sft(dir.file("file/cache"), options_for(root)),
               {"cannot create the cache directory", dir.file("file/cache")});
}

// The real corpus (python3-doc), when installed: a sanity check of the rules
// at scale (every record loads; there are thousands).
TEST(SftBuiltinCorpus, RealCorpusWhenInstalled) {
  if (!builtin_corpus_files().ok() || std::getenv("EL_DATA_TEST_FIXTURE_ONLY") != nullptr)
    GTEST_SKIP() << "python3-doc is not installed";
  TempDir dir;
  BuiltinSftStats st;
  const std::string path = dir.file("real.jsonl");
  auto n = write_builtin_sft(path, BuiltinSftOptions{}, &st);
  ASSERT_TRUE(n.ok()) << n.error().message();
  EXPECT_GT(n.value(), 1000);
  auto records = read_sft_records({path}, SftReadOptions{});
  ASSERT_TRUE(records.ok()) << records.error().message();
  EXPECT_EQ(static_cast<int64_t>(records->size()), n.value());
}

}  // namespace
}  // namespace el::data
