// choice_task.h — multiple-choice tasks for quality evaluation: the JSON Lines
// reader (lm-eval-harness shapes) and the built-in "corpus-cloze" task.
//
// An item is a context and N >= 1 choices, one of them right (`gold`). The
// scorer (infer/eval.h) appends target_delimiter + choice to the context and
// compares the log-likelihoods of the choices, as lm-eval-harness does for its
// multiple_choice tasks.
//
// Task files: JSON Lines, one object per line (blank lines allowed), in one of
// three shapes, told apart by their keys (first match wins):
//   HellaSwag-like  {"ctx": str, "endings": [str...], "label": int | "0".."9"}
//       Optional "activity_label", "ctx_a", "ctx_b" as in the Hugging Face
//       hellaswag rows. lm-eval's hellaswag preprocessing is applied:
//       context = preprocess(activity_label + ": " + ctx_a + " " +
//       capitalize(ctx_b)) when those keys are there, else preprocess(ctx)
//       (with the activity_label prefix when present); every ending is
//       preprocessed too. preprocess = strip, " [title]" -> ". ", drop
//       "[...]" spans, "  " -> " "; capitalize = first byte upper-cased, the
//       rest lower-cased (ASCII only, Python's str.capitalize on ASCII text).
//   MMLU-like       {"question": str, "choices": [str...], "answer": int | "A".."Z" | "0".."9"}
//       Scored in the cloze form (lm-eval's mmlu_continuation / ARC style):
//       context = "Question: " + strip(question) + "\nAnswer:", the choices
//       are the answer texts. (lm-eval's default mmlu scores the letters
//       "A".."D" after a prompt listing the options; models of the size we
//       train are at chance on that form, so we do not use it.)
//   generic         {"context" | "query": str, "choices": [str...], "gold": int | "0".."9"}
//       Used verbatim.
// Every shape takes an optional "target_delimiter" (string, default " ") and
// an optional "source" (string, kept for reports). Other keys are ignored.
//
// Errors name "file:line" and the key, and say what was expected: bad JSON, a
// line that is not an object, a missing key or one of the wrong type, an empty
// "choices"/"endings", an empty choice string, a gold index out of range, a
// line longer than max_line_bytes, more than max_items items, a file larger
// than max_file_bytes, a file without items. Nothing is allocated from a size
// the file states.
//
// The built-in task "corpus-cloze" (builtin_choice_task) is derived from the
// VALIDATION documents of the built-in corpus (corpus.h: the Python
// documentation's reST sources) — the documents `efficientllm data prepare
// --builtin` and the bench's cached dataset hold out (same val_fraction and
// split seed, is_validation_document) — so a model pretrained on that dataset
// has never trained on them. Prose passages are the reST paragraphs of one
// indentation that open no markup (lists, tables, directives, doctests) and
// are not literal blocks (after "::" or in a code directive), with at least
// 30 words. Each item: context = 20..40 words from a sentence start of a
// passage, ending mid-sentence; choices = the true next 10..20 words and 3
// distractors of the same word count cut from other validation passages
// (another document when there is one), each also starting mid-sentence;
// gold = where the truth landed (uniform over 0..3). Items of one passage do
// not overlap. Everything is drawn from a fixed seed, so every machine with
// the same corpus gets the same items (python3.11's documentation: 258
// items from 15 documents). The text is the raw reST prose (inline markup
// such as :func:`len` kept, line breaks joined by spaces) since that is what
// the model was trained on.
// It is a derived, synthetic task: it measures in-domain language modelling
// (how well the model continues documentation prose it has not seen), not
// knowledge or reasoning, and its numbers compare only with themselves. A
// random model scores ~25%. The distractors are in-domain prose too, so a
// choice's sum of log-probs is dominated by how likely its text is on its
// own; a small model shows that it uses the context in acc_mutual_info
// (infer/eval.h: 0.36 for the quick suite's 1M-parameter model against 0.275
// acc) before it does in acc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"

namespace el::data {

struct ChoiceItem {
  std::string context;                 // text before the choice, delimiter not included
  std::vector<std::string> choices;    // at least one, none empty
  int gold = 0;                        // index into choices
  std::string target_delimiter = " ";  // joins context and every choice
  std::string source;                  // "file:line" of the item (reports, errors)
};

struct ChoiceTask {
  std::string name;  // the file path, or the built-in name
  std::vector<ChoiceItem> items;
};

// Bounds on what a task file may make us allocate.
struct ChoiceReadOptions {
  int64_t max_items = 200'000;            // HellaSwag val: 10k, MMLU test: 14k
  int64_t max_line_bytes = 1 << 20;       // one item
  int64_t max_file_bytes = int64_t{1} << 30;
  int64_t max_choices = 64;               // per item
};

// One JSON line (one of the shapes above) -> an item; `where` ("file:line")
// prefixes errors and becomes the item's source unless the line has one.
Result<ChoiceItem> parse_choice_item(std::string_view line, const std::string& where,
                                     const ChoiceReadOptions& options = {});

// A whole task file (file comment). The task's name is `path`.
Result<ChoiceTask> read_choice_task(const std::string& path, const ChoiceReadOptions& options = {});

// Writes `task` as JSON Lines in the generic shape ({"context", "choices",
// "gold", "target_delimiter", "source"}), atomically; read_choice_task reads
// it back to the same items.
Status write_choice_task(const std::string& path, const ChoiceTask& task);

// ---- built-in tasks ---------------------------------------------------------

// Version of the corpus-cloze rules: bumped whenever a change would change
// the items (reports record it beside the task name).
inline constexpr int kCorpusClozeVersion = 1;

struct CorpusClozeOptions {
  std::string doc_root = "/usr/share/doc";  // EL_DOC_ROOT replaces it (corpus.h)
  // The held-out split: the defaults of PrepareOptions, i.e. what `data
  // prepare --builtin` and the bench's cached dataset use.
  double val_fraction = PrepareOptions{}.val_fraction;
  uint64_t split_seed = PrepareOptions{}.seed;
  uint64_t seed = 6;         // draws lengths, distractors and gold positions
  int64_t max_items = 400;   // a deterministic subset when there are more
  int64_t num_choices = 4;   // the truth + num_choices - 1 distractors
  int64_t context_min_words = 20, context_max_words = 40;
  int64_t continuation_min_words = 10, continuation_max_words = 20;
};

// A document the cloze items are cut from (tests hand these in directly).
struct ClozeDocument {
  std::string text;  // reST source
  std::string name;  // for the items' source, e.g. "library/zlib.rst.txt"
};

// The items of `docs` (all taken as validation documents) under `options`:
// the rules of the file comment. Errors: bad options (ranges empty or
// inverted, num_choices < 2, max_items < 1), no passage long enough, fewer
// than num_choices - 1 distinct distractor spans available.
Result<ChoiceTask> make_cloze_task(const std::vector<ClozeDocument>& docs,
                                   const CorpusClozeOptions& options);

// The names builtin_choice_task accepts ("corpus-cloze").
std::vector<std::string> builtin_choice_task_names();

// A built-in task by name. Errors: an unknown name (lists the known ones), the
// corpus not installed (builtin_corpus_files' error), no validation document
// in the corpus under the split, and make_cloze_task's errors.
Result<ChoiceTask> builtin_choice_task(std::string_view name,
                                       const CorpusClozeOptions& options = {});

}  // namespace el::data
