// sft_builtin.h — a built-in SFT dataset derived from the built-in corpus.
//
// No instruction dataset is installable from Debian, so `efficientllm bench`
// fine-tunes on records derived, deterministically, from the same text the
// pretraining axis reads (corpus.h: the Python documentation's reST sources
// from python3-doc). Every user gets the same records without a download.
// They are synthetic (a fixed question template over real documentation
// prose), not a dataset from the paper: useful to measure what a fine-tuning
// method costs, not to compare quality with published numbers.
//
// One record per reST section that has a prose paragraph of its own (the
// text between its title and the next title of any level):
//   {"instruction": "Explain <title> (from the Python documentation).",
//    "input": "",
//    "output": "<the section's first prose paragraph(s), markup cleaned>",
//    "source": "<file relative to the corpus root>:<line of the title>"}
// A subsection names its page: "Explain <title> (from the Python
// documentation on <page title>)."; a title that is a question (the FAQs)
// is asked as it stands: "<title> (from the Python documentation on <page
// title>)". "source" is an extra key that the SFT reader ignores (it lets a
// user find the text a record came from).
//
// Rules, in order (docs/FINETUNING.md "Built-in SFT data" repeats them):
//   Blocks. Only top-level (unindented) paragraphs are prose candidates.
//     Never output: directives and comments (".. x::", ".. _label:") with their
//     indented bodies (so function/class descriptions and code-block
//     directives are skipped), indented blocks (literal blocks after "::",
//     block quotes), definition lists, grid and simple tables, transitions,
//     bullet/enumerated/field/option lists, doctest (">>>") and line blocks.
//   Cleaning. Inline markup is rendered as Sphinx shows it: :role:`x` -> x
//     (":role:`Title <target>`" -> Title, "~a.b.c" -> c, "!x" -> x, func and
//     meth roles get "()", :pep:`8` -> PEP 8, :rfc:`7159` -> RFC 7159),
//     ``literal`` -> literal, `text <url>`_ -> text, **b** / *e* -> b / e,
//     footnote references [#x]_ dropped, backslash escapes resolved (also
//     inside roles), " --- " -> " - ", whitespace collapsed to single spaces.
//   Paragraph. A paragraph that ends with ':' (it introduces code or a list
//     that the record does not carry) keeps only its sentences before the
//     last one, and ends the output. A paragraph qualifies when its cleaned
//     text ends a sentence ('.', '!' or '?', optionally followed by ')' or
//     '"'), holds no markup left over ('`', "::", "]_", a |substitution|),
//     and is min_paragraph_chars..max_output_chars long.
//   Output. Blocks of the section's body in order: markup (directives,
//     comments, labels, transitions) and paragraphs shorter than
//     min_paragraph_chars that do not end with ':' ("Source code: ...")
//     are passed over before the first qualifying paragraph; the first qualifying
//     paragraph starts the output, and the qualifying paragraphs right after
//     it are appended while the total stays within max_output_chars (joined
//     with "\n\n"). Anything else ends the section: a content block (list,
//     table, literal block, ...), a paragraph that does not qualify (before
//     the output started: no record, since later text would lean on what was
//     skipped), or a paragraph that ends with ':'.
//   Title. Cleaned like prose; sections whose title has no letter or is
//     longer than 120 characters are skipped.
//   Dedupe. A record whose instruction or output equals an earlier one's is
//     dropped (the first in corpus order wins).
//   Order. Corpus files sorted by path (builtin_corpus_files), sections in
//     file order; max_records keeps the first N.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace el::data {

// Version of the rules above: part of the cache file name, bumped whenever a
// rule change would change the records.
inline constexpr int kBuiltinSftVersion = 1;

struct BuiltinSftOptions {
  std::string doc_root = "/usr/share/doc";  // EL_DOC_ROOT replaces it (corpus.h)
  int64_t max_records = 0;                  // keep the first N records; 0 = all
  int64_t min_paragraph_chars = 80;         // shorter paragraphs do not qualify
  int64_t max_output_chars = 800;           // longest output; longer paragraphs do not qualify
};

struct BuiltinSftRecord {
  std::string instruction;
  std::string output;
  std::string source;  // "library/json.rst.txt:120"
};

struct BuiltinSftStats {
  int64_t files = 0;       // corpus files read
  int64_t sections = 0;    // section titles seen
  int64_t extracted = 0;   // sections that gave a record, before dedupe
  int64_t duplicates = 0;  // dropped by the dedupe rule
  int64_t records = 0;     // records kept (after max_records)
};

// Records of one reST document, in order, before dedupe (tests; the rules
// in the file comment). `source` prefixes each record's "source".
std::vector<BuiltinSftRecord> extract_sft_records(std::string_view rst, std::string_view source,
                                                  const BuiltinSftOptions& options);

// reST inline markup rendered as text (the cleaning rule above), one line.
std::string clean_rst_inline(std::string_view text);

// All records of the built-in corpus. Errors: the corpus is not installed
// (builtin_corpus_files' error: names the root, hint python3-doc /
// EL_DOC_ROOT), an unreadable file, min_paragraph_chars < 1,
// max_output_chars < min_paragraph_chars, max_records < 0, no record at all.
Result<std::vector<BuiltinSftRecord>> builtin_sft_records(const BuiltinSftOptions& options,
                                                          BuiltinSftStats* stats = nullptr);

// The records as alpaca JSON Lines ({"instruction", "input": "", "output",
// "source"}, keys in that order, one record per line), written to `path`
// atomically (temp file + rename). Returns the record count.
Result<int64_t> write_builtin_sft(const std::string& path, const BuiltinSftOptions& options,
                                  BuiltinSftStats* stats = nullptr);

// The cache file name for `options`: "builtin-sft-v1.jsonl" with the default
// limits; non-default ones are spelled out, e.g. "builtin-sft-v1-n500.jsonl"
// (max_records 500) or "builtin-sft-v1-p40-600.jsonl" (paragraph limits).
std::string builtin_sft_file_name(const BuiltinSftOptions& options);

// A cached copy: <cache_dir>/<builtin_sft_file_name()>, written once (the
// directory is created) with a sidecar "<file>.meta.json" recording the
// corpus fingerprint (paths and sizes of its files), the options, the record
// count, the byte size and the SHA-256 of the file. An existing file is
// reused when its sidecar matches the current corpus and options and the
// file's size and hash match; otherwise both are rewritten. Returns the
// path of the .jsonl file. Errors: as write_builtin_sft, plus a cache
// directory that cannot be created.
Result<std::string> ensure_builtin_sft(const std::string& cache_dir,
                                       const BuiltinSftOptions& options);

}  // namespace el::data
