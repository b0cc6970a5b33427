// choice_task_cloze.cpp — the built-in "corpus-cloze" multiple-choice task
// (choice_task.h has the rules; this file the passage finder and the draws).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/rng.h"
#include "data/choice_task.h"
#include "data/corpus.h"

namespace el::data {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCorpusCloze = "corpus-cloze";

// A run of prose words, one reST paragraph.
struct Passage {
  size_t doc = 0;
  int64_t line = 0;  // 1-based line of its first word
  std::vector<std::string> words;
};

// An item before its distractors: words [pos, pos + ctx) are the context,
// [pos + ctx, pos + ctx + cont) the truth.
struct Candidate {
  size_t passage = 0;
  int64_t pos = 0, ctx = 0, cont = 0;
};

size_t indent_of(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i;
}

std::string_view trim(std::string_view s) {
  const size_t b = indent_of(s);
  size_t e = s.size();
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// A line of punctuation and spaces only ("=====", "-----", "=== ===", "+---+"):
// section adornments and table borders.
bool is_adornment(std::string_view t) {
  if (t.size() < 3) return false;
  return std::all_of(t.begin(), t.end(), [](unsigned char c) {
    return c == ' ' || (std::ispunct(c) != 0 && c != '(' && c != '`');
  });
}

// Directives whose indented body is code or data, not prose.
bool is_literal_directive(std::string_view first) {
  static const char* kNames[] = {"code-block", "code",      "sourcecode",   "doctest",
                                 "testcode",   "testsetup", "testcleanup",  "testoutput",
                                 "productionlist", "literalinclude", "parsed-literal",
                                 "highlight",  "csv-table", "list-table", "table", "math",
                                 "raw",        "toctree",   "include",    "autosummary"};
  const size_t end = first.find("::");
  if (end == std::string_view::npos) return false;
  const std::string_view name = trim(first.substr(3, end - 3));
  return std::any_of(std::begin(kNames), std::end(kNames), [&](const char* n) { return name == n; });
}

// A first line that opens markup, not prose: lists, field and option lists,
// doctests, line blocks, tables, enumerations ("1. ", "#. ", "(a) ").
bool opens_markup(std::string_view t) {
  if (t.empty()) return true;
  const char c = t[0];
  if (c == '*' && t.size() > 1 && t[1] == ' ') return true;
  if (c == '-' || c == '+' || c == '|' || c == '>' || c == '#') return true;
  if (c == ':') {  // a field list (":param x: ...") unless a role opens prose (":func:`len` ...")
    const size_t close = t.find(':', 1);
    return close == std::string_view::npos || close + 1 >= t.size() || t[close + 1] != '`';
  }
  if (starts_with(t, "..") || starts_with(t, "\xE2\x80\xA2")) return true;  // "..", "•"
  size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i > 0 && i + 1 < t.size() && (t[i] == '.' || t[i] == ')') && t[i + 1] == ' ') return true;
  if (c == '(' && t.size() > 3 && t[2] == ')' && t[3] == ' ') return true;
  return false;
}

// Whether `w` ends a sentence: '.', '!' or '?' after stripping closing
// quotes, brackets and inline-markup characters; "e.g." and friends do not.
bool ends_sentence(std::string_view w) {
  while (!w.empty() && std::string_view(")\"'*`_]").find(w.back()) != std::string_view::npos)
    w.remove_suffix(1);
  if (w.empty()) return false;
  const char c = w.back();
  if (c != '.' && c != '!' && c != '?') return false;
  static const char* kAbbrev[] = {"e.g.", "i.e.", "vs.", "cf.", "etc.)", "Mr.", "Dr."};
  for (const char* a : kAbbrev) {
    const std::string_view s(a);
    if (w.size() >= s.size() && w.substr(w.size() - s.size()) == s) return false;
  }
  return true;
}

std::string join(const std::vector<std::string>& words, int64_t begin, int64_t count) {
  std::string out;
  for (int64_t i = begin; i < begin + count; ++i) {
    if (i > begin) out += ' ';
    out += words[static_cast<size_t>(i)];
  }
  return out;
}

// The prose paragraphs of one reST document with at least `min_words` words.
// Blocks are runs of non-blank lines. A block is prose when all its lines
// share one indentation (so lists with continuation lines, definition
// lists, directives with options are not) and its first line opens no
// markup. Literal text is skipped: the blocks indented deeper than a line
// ending in "::" or than a code/data directive (".. code-block::", ...).
void find_passages(const std::string& text, size_t doc, int64_t min_words,
                   std::vector<Passage>& out) {
  std::vector<std::string_view> lines;
  for (size_t b = 0; b <= text.size();) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    std::string_view l(text.data() + b, e - b);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    lines.push_back(l);
    b = e + 1;
  }
  int64_t literal_indent = -1;  // >= 0: blocks indented deeper are literal
  size_t i = 0;
  while (i < lines.size()) {
    if (trim(lines[i]).empty()) {
      ++i;
      continue;
    }
    const size_t begin = i;
    while (i < lines.size() && !trim(lines[i]).empty()) ++i;
    const auto ind = static_cast<int64_t>(indent_of(lines[begin]));
    if (literal_indent >= 0) {
      if (ind > literal_indent) continue;
      literal_indent = -1;
    }
    const std::string_view first = trim(lines[begin]);
    if (starts_with(first, ".. ")) {
      if (is_literal_directive(first)) literal_indent = ind;
      continue;  // the directive line; its body is judged block by block
    }
    const std::string_view last = trim(lines[i - 1]);
    if (last.size() >= 2 && last.substr(last.size() - 2) == "::") literal_indent = ind;
    bool prose = !opens_markup(first);
    for (size_t k = begin; k < i && prose; ++k) {
      const std::string_view t = trim(lines[k]);
      prose = static_cast<int64_t>(indent_of(lines[k])) == ind && !is_adornment(t) &&
              !starts_with(t, ">>>");
    }
    if (!prose) continue;
    Passage p;
    p.doc = doc;
    p.line = static_cast<int64_t>(begin) + 1;
    for (size_t k = begin; k < i; ++k) {
      const std::string_view l = lines[k];
      for (size_t a = 0; a < l.size();) {
        while (a < l.size() && std::isspace(static_cast<unsigned char>(l[a]))) ++a;
        size_t b = a;
        while (b < l.size() && !std::isspace(static_cast<unsigned char>(l[b]))) ++b;
        if (b > a) p.words.emplace_back(l.substr(a, b - a));
        a = b;
      }
    }
    if (static_cast<int64_t>(p.words.size()) >= min_words) out.push_back(std::move(p));
  }
}

Status check_options(const CorpusClozeOptions& o) {
  auto range_ok = [](int64_t lo, int64_t hi) { return lo >= 1 && hi >= lo && hi <= 4096; };
  if (!range_ok(o.context_min_words, o.context_max_words))
    return make_error(fmt::format("context words {}..{} must satisfy 1 <= min <= max <= 4096",
                                  o.context_min_words, o.context_max_words),
                      "corpus-cloze options");
  if (!range_ok(o.continuation_min_words, o.continuation_max_words))
    return make_error(fmt::format("continuation words {}..{} must satisfy 1 <= min <= max <= 4096",
                                  o.continuation_min_words, o.continuation_max_words),
                      "corpus-cloze options");
  if (o.num_choices < 2 || o.num_choices > 26)
    return make_error(fmt::format("num_choices {} must be in 2..26", o.num_choices),
                      "corpus-cloze options");
  if (o.max_items < 1)
    return make_error(fmt::format("max_items {} must be >= 1", o.max_items), "corpus-cloze options");
  if (!(o.val_fraction > 0.0 && o.val_fraction < 1.0))
    return make_error(fmt::format("val_fraction {} must be in (0, 1)", o.val_fraction),
                      "corpus-cloze options");
  return Status::Ok();
}

// Context length for a candidate at `pos`: drawn in its range, then moved to
// the nearest length whose last word does not end a sentence, so the truth
// continues a sentence (as every distractor does). 0 when none qualifies.
int64_t draw_context(const Passage& p, int64_t pos, int64_t lo, int64_t hi, Rng& rng) {
  const int64_t drawn = lo + static_cast<int64_t>(rng.below(static_cast<uint64_t>(hi - lo + 1)));
  for (int64_t d = 0; d <= hi - lo; ++d) {
    for (const int64_t c : {drawn - d, drawn + d}) {
      if (c >= lo && c <= hi && !ends_sentence(p.words[static_cast<size_t>(pos + c - 1)])) return c;
    }
  }
  return 0;
}

}  // namespace

Result<ChoiceTask> make_cloze_task(const std::vector<ClozeDocument>& docs,
                                   const CorpusClozeOptions& o) {
  EL_TRY(check_options(o));
  std::vector<Passage> passages;
  for (size_t d = 0; d < docs.size(); ++d)
    find_passages(docs[d].text, d, o.context_min_words + o.continuation_min_words, passages);
  if (passages.empty())
    return make_error(fmt::format("no prose passage of at least {} words in {} document(s)",
                                  o.context_min_words + o.continuation_min_words, docs.size()),
                      kCorpusCloze, "lower the word ranges or use more documents");
  Rng rng(o.seed);

  // Candidates: from each passage's first word, then from the first sentence
  // start after the previous item's truth (items of a passage never overlap).
  std::vector<Candidate> cands;
  for (size_t pi = 0; pi < passages.size(); ++pi) {
    const Passage& p = passages[pi];
    const auto n = static_cast<int64_t>(p.words.size());
    int64_t pos = 0;
    while (n - pos >= o.context_min_words + o.continuation_min_words) {
      const int64_t avail = n - pos;
      const int64_t k_hi = std::min(o.continuation_max_words, avail - o.context_min_words);
      const int64_t k = o.continuation_min_words +
                        static_cast<int64_t>(rng.below(static_cast<uint64_t>(k_hi - o.continuation_min_words + 1)));
      const int64_t c = draw_context(p, pos, o.context_min_words,
                                     std::min(o.context_max_words, avail - k), rng);
      int64_t next = c > 0 ? pos + c + k : pos + 1;
      if (c > 0) cands.push_back({pi, pos, c, k});
      while (next < n && !ends_sentence(p.words[static_cast<size_t>(next - 1)])) ++next;
      pos = next;
    }
  }

  // Distractors: spans of the truth's word count from other passages (of
  // another document when there is one), starting mid-sentence like the
  // truth; distinct from the truth and from each other.
  ChoiceTask task;
  task.name = kCorpusCloze;
  const auto n_distract = static_cast<size_t>(o.num_choices - 1);
  std::vector<size_t> pool;
  for (const Candidate& cand : cands) {
    const Passage& p = passages[cand.passage];
    const std::string truth = join(p.words, cand.pos + cand.ctx, cand.cont);
    pool.clear();
    for (int other_doc = 1; other_doc >= 0 && pool.empty(); --other_doc) {
      for (size_t q = 0; q < passages.size(); ++q) {
        const bool differs = other_doc ? passages[q].doc != p.doc : q != cand.passage;
        if (differs && static_cast<int64_t>(passages[q].words.size()) > cand.cont) pool.push_back(q);
      }
    }
    std::vector<std::string> distractors;
    for (int attempt = 0; attempt < 64 && !pool.empty() && distractors.size() < n_distract;
         ++attempt) {
      const Passage& q = passages[pool[rng.below(pool.size())]];
      const auto span = static_cast<uint64_t>(static_cast<int64_t>(q.words.size()) - cand.cont);
      const int64_t s = 1 + static_cast<int64_t>(rng.below(span));
      if (ends_sentence(q.words[static_cast<size_t>(s - 1)])) continue;
      std::string text = join(q.words, s, cand.cont);
      if (text == truth || std::find(distractors.begin(), distractors.end(), text) != distractors.end())
        continue;
      distractors.push_back(std::move(text));
    }
    if (distractors.size() < n_distract) continue;  // too few distinct spans: no item
    ChoiceItem item;
    item.context = join(p.words, cand.pos, cand.ctx);
    item.gold = static_cast<int>(rng.below(static_cast<uint64_t>(o.num_choices)));
    item.choices = std::move(distractors);
    item.choices.insert(item.choices.begin() + item.gold, truth);
    item.source = fmt::format("{}:{}", docs[p.doc].name, p.line);
    task.items.push_back(std::move(item));
  }
  if (task.items.empty())
    return make_error(fmt::format("no item: {} passage(s), {} candidate(s), but too few distinct "
                                  "distractor spans",
                                  passages.size(), cands.size()),
                      kCorpusCloze, "use more documents or fewer choices");

  // A deterministic subset (partial Fisher-Yates), kept in corpus order.
  if (static_cast<int64_t>(task.items.size()) > o.max_items) {
    std::vector<size_t> idx(task.items.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    const auto keep = static_cast<size_t>(o.max_items);
    for (size_t i = 0; i < keep; ++i) std::swap(idx[i], idx[i + rng.below(idx.size() - i)]);
    idx.resize(keep);
    std::sort(idx.begin(), idx.end());
    std::vector<ChoiceItem> kept;
    kept.reserve(keep);
    for (size_t i : idx) kept.push_back(std::move(task.items[i]));
    task.items = std::move(kept);
  }
  return task;
}

std::vector<std::string> builtin_choice_task_names() { return {kCorpusCloze}; }

Result<ChoiceTask> builtin_choice_task(std::string_view name, const CorpusClozeOptions& options) {
  if (name != kCorpusCloze)
    return make_error(fmt::format("unknown built-in task '{}' (built-in tasks: {})", name,
                                  fmt::join(builtin_choice_task_names(), ", ")),
                      "task name", "name a built-in task or give a JSON Lines task file");
  EL_TRY(check_options(options));
  EL_TRY_ASSIGN(const std::vector<std::string> files, builtin_corpus_files(options.doc_root));
  // The split of prepare_dataset: the index counts non-empty documents in
  // corpus order, and is_validation_document decides.
  std::vector<ClozeDocument> docs;
  int64_t index = 0;
  EL_TRY(for_each_document(files, "text", [&](Document&& d) -> Status {
    if (is_validation_document(index++, options.split_seed, options.val_fraction)) {
      const std::string& path = files[d.file_index];
      const size_t at = path.rfind("/_sources/");
      docs.push_back({std::move(d.text), at == std::string::npos
                                             ? fs::path(path).filename().string()
                                             : path.substr(at + 10)});
    }
    return Status::Ok();
  }));
  if (docs.empty())
    return make_error(fmt::format("none of the corpus's {} document(s) is a validation document "
                                  "(val_fraction {}, split seed {})",
                                  index, options.val_fraction, options.split_seed),
                      files.front(), "raise val_fraction");
  EL_TRY_ASSIGN(ChoiceTask task, make_cloze_task(docs, options));
  task.name = kCorpusCloze;
  return task;
}

}  // namespace el::data
