// Multiple-choice task files (lm-eval shapes), their errors, and the
// built-in corpus-cloze task.
#include "data/choice_task.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data_test_util.h"

namespace el::data {
namespace {

using testing::TempDir;
using testing::write_text;

const std::string kFixtures = std::string(EL_TEST_DATA_DIR) + "/eval";

template <class R>
void expect_error(const R& r, const std::vector<std::string>& parts) {
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << parts.front() << "'";
  const std::string msg = r.error().message();
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

TEST(ChoiceTaskRead, HellaSwagShapeWithLmEvalPreprocessing) {
  auto t = read_choice_task(kFixtures + "/hellaswag_like.jsonl");
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_EQ(t->items.size(), 3u);
  const ChoiceItem& a = t->items[0];
  // activity_label + ": " + ctx_a + " " + capitalize(ctx_b).
  EXPECT_EQ(a.context, "Making tea: A man fills a kettle with water and sets it on the stove. He");
  ASSERT_EQ(a.choices.size(), 4u);
  EXPECT_EQ(a.choices[0], "waits for the water to boil and pours it over the tea leaves.");
  EXPECT_EQ(a.choices[1], "throws the kettle out of the window. and leaves.");  // " [title]" -> ". "
  EXPECT_EQ(a.choices[3], "reads a book about  volcanoes.");  // one pass of "  " -> " ", as Python
  EXPECT_EQ(a.gold, 0);  // "label": "0"
  EXPECT_EQ(a.target_delimiter, " ");
  EXPECT_EQ(a.source, kFixtures + "/hellaswag_like.jsonl:1");
  EXPECT_EQ(t->items[1].context, "The programmer runs the test suite and sees one failure. She");
  EXPECT_EQ(t->items[1].choices.size(), 2u);
  EXPECT_EQ(t->items[2].gold, 1);
}

TEST(ChoiceTaskRead, MmluShapeInClozeForm) {
  auto t = read_choice_task(kFixtures + "/mmlu_like.jsonl");
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_EQ(t->items.size(), 3u);  // the blank line is skipped
  EXPECT_EQ(t->items[0].context,
            "Question: Which Python built-in returns the number of items in a list?\nAnswer:");
  EXPECT_EQ(t->items[0].choices, (std::vector<std::string>{"len", "count", "size", "items"}));
  EXPECT_EQ(t->items[0].gold, 0);
  EXPECT_EQ(t->items[1].gold, 1);  // "B"
  EXPECT_EQ(t->items[2].gold, 1);  // "1"
  EXPECT_EQ(t->items[2].source, kFixtures + "/mmlu_like.jsonl:4");
}

TEST(ChoiceTaskRead, GenericShapeVerbatim) {
  auto t = read_choice_task(kFixtures + "/generic.jsonl");
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_EQ(t->items.size(), 4u);
  EXPECT_EQ(t->items[0].context, "The capital of France is");
  EXPECT_EQ(t->items[1].context, "2 + 2 =");  // "query"
  EXPECT_EQ(t->items[1].source, "arith:1");
  EXPECT_EQ(t->items[2].target_delimiter, "");
  EXPECT_EQ(t->items[3].choices[1], "cr\xC3\xA8me fra\xC3\xAE" "che");
}

TEST(ChoiceTaskRead, WriteReadRoundTrip) {
  TempDir dir;
  auto t = read_choice_task(kFixtures + "/generic.jsonl");
  ASSERT_TRUE(t.ok());
  const std::string out = dir.file("copy.jsonl");
  ASSERT_TRUE(write_choice_task(out, *t).ok());
  auto back = read_choice_task(out);
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->items.size(), t->items.size());
  for (size_t i = 0; i < t->items.size(); ++i) {
    EXPECT_EQ(back->items[i].context, t->items[i].context);
    EXPECT_EQ(back->items[i].choices, t->items[i].choices);
    EXPECT_EQ(back->items[i].gold, t->items[i].gold);
    EXPECT_EQ(back->items[i].target_delimiter, t->items[i].target_delimiter);
    EXPECT_EQ(back->items[i].source, t->items[i].source);
  }
}

TEST(ChoiceTaskRead, CrlfBomAndNoFinalNewline) {
  TempDir dir;
  const std::string p = write_text(dir.file("w.jsonl"),
                                   "\xEF\xBB\xBF{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0}\r\n"
                                   "{\"context\": \"c\", \"choices\": [\"d\", \"e\"], \"gold\": 1}");
  auto t = read_choice_task(p);
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_EQ(t->items.size(), 2u);
  EXPECT_EQ(t->items[1].gold, 1);
}

// Each bad line: the file:line and the key, and what was expected.
TEST(ChoiceTaskErrors, BadLinesNameFileLineAndKey) {
  TempDir dir;
  const std::string good = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n";
  struct Case {
    std::string line;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0", {"malformed JSON"}},
      {"[1, 2]", {"expected a JSON object", "array"}},
      {"{\"text\": \"a\"}", {"no context key", "'text'", "HellaSwag"}},
      {"{\"context\": \"a\", \"gold\": 0}", {"missing key 'choices'", "'context'", "'gold'"}},
      {"{\"context\": \"a\", \"choices\": [\"b\"]}", {"missing key 'gold'"}},
      {"{\"context\": 3, \"choices\": [\"b\"], \"gold\": 0}", {"key 'context' is a number", "string"}},
      {"{\"context\": \"a\", \"choices\": [], \"gold\": 0}", {"key 'choices' is an empty array"}},
      {"{\"context\": \"a\", \"choices\": \"b\", \"gold\": 0}", {"key 'choices' is a string", "array of strings"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", 2], \"gold\": 0}", {"choices[1] is a number"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"\"], \"gold\": 0}", {"choices[1] is an empty string"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 2}", {"key 'gold' = 2 is out of range", "2 choice(s)", "0..1"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": -1}", {"key 'gold' = -1 is out of range"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 1.5}", {"key 'gold' is a number", "integer"}},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": \"x\"}", {"key 'gold' is \"x\""}},
      {"{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": \"5\"}", {"key 'label' = \"5\" is out of range"}},
      {"{\"ctx\": \"a\", \"endings\": [\"b\", \"[x]\"], \"label\": 0}", {"endings[1] is empty after preprocessing"}},
      {"{\"endings\": [\"b\"], \"label\": 0}", {"missing key 'ctx'"}},
      {"{\"question\": \"q\", \"choices\": [\"b\", \"c\"], \"answer\": \"C\"}", {"key 'answer' = \"C\" is out of range"}},
      {"{\"question\": \"q\", \"choices\": [\"b\", \"c\"], \"answer\": \"b\"}", {"key 'answer' is \"b\"", "letter"}},
      {"{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0, \"target_delimiter\": 1}", {"key 'target_delimiter' is a number"}},
  };
  for (const Case& c : cases) {
    const std::string p = write_text(dir.file("bad.jsonl"), good + "\n" + c.line + "\n" + good);
    std::vector<std::string> parts = c.parts;
    parts.push_back(p + ":3");
    expect_error(read_choice_task(p), parts);
  }
}

TEST(ChoiceTaskErrors, LimitsAndEmptyFiles) {
  TempDir dir;
  const std::string good = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n";
  ChoiceReadOptions small;
  small.max_items = 2;
  small.max_line_bytes = 100;
  small.max_choices = 3;
  const std::string three = write_text(dir.file("three.jsonl"), good + good + good);
  expect_error(read_choice_task(three, small), {three + ":3", "more than 2 items"});
  const std::string longline =
      write_text(dir.file("long.jsonl"), good + "{\"context\": \"" + std::string(200, 'x') + "\"}\n");
  expect_error(read_choice_task(longline, small), {longline + ":2", "longer than the limit of 100 bytes"});
  // A 200 KB line without a newline spans chunks: still rejected, unbuffered.
  const std::string huge = write_text(dir.file("huge.jsonl"), std::string(200'000, 'x'));
  expect_error(read_choice_task(huge, small), {huge + ":1", "longer than the limit"});
  const std::string many = write_text(
      dir.file("many.jsonl"), "{\"context\": \"a\", \"choices\": [\"b\",\"c\",\"d\",\"e\"], \"gold\": 0}\n");
  expect_error(read_choice_task(many, small), {many + ":1", "4 choices, more than the limit of 3"});
  ChoiceReadOptions tiny_file;
  tiny_file.max_file_bytes = 10;
  expect_error(read_choice_task(three, tiny_file), {three, "more than the limit of 10"});
  const std::string empty = write_text(dir.file("empty.jsonl"), "\n  \n");
  expect_error(read_choice_task(empty), {empty, "holds no items"});
  expect_error(read_choice_task(dir.file("missing.jsonl")), {dir.file("missing.jsonl"), "cannot open"});
}

// ---- corpus-cloze -----------------------------------------------------------

// Sentences of made-up prose: each document has its own vocabulary so the
// distractors' origin can be checked.
std::string prose_doc(const std::string& word, int paragraphs) {
  std::string t = "Title\n=====\n\n.. function:: f(x)\n\n";
  for (int p = 0; p < paragraphs; ++p) {
    for (int s = 0; s < 6; ++s) {
      t += "The " + word + " number " + std::to_string(p * 10 + s) +
           " reads its input and then writes the " + word + " output to the stream.\n";
    }
    t += "\n";
  }
  t += "Example::\n\n    " + word + " = literal(1, 2, 3) and this code line is long enough to count\n"
       "    as prose if literal blocks were not skipped, which they are in every case.\n";
  return t;
}

std::vector<ClozeDocument> synthetic_docs() {
  return {{prose_doc("alpha", 8), "a.rst.txt"},
          {prose_doc("beta", 8), "b.rst.txt"},
          {prose_doc("gamma", 8), "c.rst.txt"}};
}

TEST(CorpusCloze, DeterministicShapeAndGoldSpread) {
  CorpusClozeOptions o;
  auto a = make_cloze_task(synthetic_docs(), o);
  ASSERT_TRUE(a.ok()) << a.error().message();
  auto b = make_cloze_task(synthetic_docs(), o);
  ASSERT_TRUE(b.ok());
  ASSERT_GE(a->items.size(), 24u);
  ASSERT_EQ(a->items.size(), b->items.size());
  int gold_count[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < a->items.size(); ++i) {
    const ChoiceItem& x = a->items[i];
    const ChoiceItem& y = b->items[i];
    EXPECT_EQ(x.context, y.context);
    EXPECT_EQ(x.choices, y.choices);
    EXPECT_EQ(x.gold, y.gold);
    EXPECT_EQ(x.source, y.source);
    ASSERT_EQ(x.choices.size(), 4u);
    ASSERT_GE(x.gold, 0);
    ASSERT_LT(x.gold, 4);
    ++gold_count[x.gold];
    auto words = [](const std::string& s) { return 1 + std::count(s.begin(), s.end(), ' '); };
    EXPECT_GE(words(x.context), 20);
    EXPECT_LE(words(x.context), 40);
    const auto n = words(x.choices[static_cast<size_t>(x.gold)]);
    EXPECT_GE(n, 10);
    EXPECT_LE(n, 20);
    const std::string doc_word = x.source[0] == 'a' ? "alpha" : x.source[0] == 'b' ? "beta" : "gamma";
    EXPECT_NE(x.context.find(doc_word), std::string::npos) << x.context;
    EXPECT_EQ(x.context.find("literal"), std::string::npos) << "literal block used: " << x.context;
    std::set<std::string> distinct(x.choices.begin(), x.choices.end());
    EXPECT_EQ(distinct.size(), 4u);
    for (size_t c = 0; c < 4; ++c) {
      EXPECT_EQ(words(x.choices[c]), n) << "same word count for every choice";
      // Distractors come from another document.
      if (static_cast<int>(c) != x.gold) {
        EXPECT_EQ(x.choices[c].find(doc_word), std::string::npos) << x.choices[c];
      }
    }
  }
  for (int g = 0; g < 4; ++g) EXPECT_GE(gold_count[g], 2) << "gold index " << g;
  // Another seed, other items; max_items keeps a subset.
  CorpusClozeOptions other = o;
  other.seed = 7;
  auto c = make_cloze_task(synthetic_docs(), other);
  ASSERT_TRUE(c.ok());
  bool differs = c->items.size() != a->items.size();
  for (size_t i = 0; !differs && i < a->items.size(); ++i) differs = c->items[i].choices != a->items[i].choices;
  EXPECT_TRUE(differs);
  CorpusClozeOptions few = o;
  few.max_items = 5;
  auto d = make_cloze_task(synthetic_docs(), few);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->items.size(), 5u);
}

TEST(CorpusCloze, BuiltinUsesTheValidationSplit) {
  TempDir dir;
  const std::string sources = dir.file("doc/python3.11/html/_sources");
  const std::vector<std::string> words = {"alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"};
  for (size_t i = 0; i < words.size(); ++i)
    write_text(fmt::format("{}/d{}.rst.txt", sources, i), prose_doc(words[i], 3));
  CorpusClozeOptions o;
  o.doc_root = dir.file("doc");
  o.val_fraction = 0.5;
  auto t = builtin_choice_task("corpus-cloze", o);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ(t->name, "corpus-cloze");
  // Only validation documents (in corpus order, as prepare_dataset numbers them).
  std::set<std::string> val_sources;
  for (size_t i = 0; i < words.size(); ++i)
    if (is_validation_document(static_cast<int64_t>(i), o.split_seed, o.val_fraction))
      val_sources.insert(fmt::format("d{}.rst.txt", i));
  ASSERT_FALSE(val_sources.empty());
  for (const ChoiceItem& item : t->items) {
    const std::string file = item.source.substr(0, item.source.find(':'));
    EXPECT_EQ(val_sources.count(file), 1u) << item.source;
  }
  auto again = builtin_choice_task("corpus-cloze", o);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->items.size(), t->items.size());
  for (size_t i = 0; i < t->items.size(); ++i) EXPECT_EQ(again->items[i].choices, t->items[i].choices);
}

TEST(CorpusCloze, Errors) {
  expect_error(builtin_choice_task("hellaswag"), {"unknown built-in task 'hellaswag'", "corpus-cloze"});
  CorpusClozeOptions bad;
  bad.context_min_words = 30;
  bad.context_max_words = 20;
  expect_error(make_cloze_task(synthetic_docs(), bad), {"context words 30..20"});
  bad = CorpusClozeOptions{};
  bad.num_choices = 1;
  expect_error(make_cloze_task(synthetic_docs(), bad), {"num_choices 1"});
  expect_error(make_cloze_task({{"Too short.\n", "x.rst.txt"}}, CorpusClozeOptions{}),
               {"no prose passage of at least 30 words"});
  // One document: distractors come from its other passages; one passage: none.
  auto one = make_cloze_task({{prose_doc("solo", 3), "s.rst.txt"}}, CorpusClozeOptions{});
  EXPECT_TRUE(one.ok()) << one.error().message();
  const std::string single =
      "This single paragraph has exactly enough words to make one candidate item but no "
      "other passage exists anywhere to cut distractors from, so the task must fail with a "
      "clear message instead.\n";
  expect_error(make_cloze_task({{single, "s.rst.txt"}}, CorpusClozeOptions{}), {"too few distinct distractor"});
  TempDir dir;
  CorpusClozeOptions missing;
  missing.doc_root = dir.file("nothing");
  expect_error(builtin_choice_task("corpus-cloze", missing), {"not installed", "python3-doc"});
}

// The real corpus (python3-doc), when installed: a few hundred items.
TEST(CorpusCloze, RealCorpusWhenInstalled) {
  if (!builtin_corpus_files().ok() || std::getenv("EL_DATA_TEST_FIXTURE_ONLY") != nullptr)
    GTEST_SKIP() << "python3-doc is not installed";
  auto t = builtin_choice_task("corpus-cloze");
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_GE(t->items.size(), 200u);
  EXPECT_LE(t->items.size(), 400u);
  int gold_count[4] = {0, 0, 0, 0};
  for (const ChoiceItem& item : t->items) ++gold_count[item.gold];
  for (int g = 0; g < 4; ++g) EXPECT_GE(gold_count[g], 30) << "gold index " << g;
}

}  // namespace
}  // namespace el::data
