// corpus.h — where text comes from: the built-in corpus, input expansion, and
// the document reader.
//
// The built-in corpus is the reStructuredText sources of the Python
// documentation that Debian/Ubuntu's python3-doc package installs (~11 MB of
// real English technical prose, PSF licence): every user of the engine has the
// same text without a download, so results are comparable across machines.
//
// A *document* is the unit the dataset builder separates with EOS and assigns
// to train or validation:
//   - plain text (.txt .rst .md, or any explicitly named file of another
//     extension): the whole file is one document;
//   - JSON Lines (.jsonl): one JSON object per line, the document is the
//     string under a configurable key (default "text"); blank lines are
//     allowed, a malformed line or a missing/non-string key is an Error
//     "file:line: ..." (we never skip bad lines silently);
//   - .json: a JSON array (of strings, or of objects with the key) when the
//     file starts with '[', otherwise read as JSON Lines (many datasets name
//     their JSON Lines files .json).
// Empty documents (zero bytes) are skipped and counted: they would add only
// an EOS token.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace el::data {

// The built-in corpus: /usr/share/doc/python3*/html/_sources/**/*.rst.txt of
// the newest python3.N documentation found under `doc_root` (symlinked
// package directories are resolved so each file appears once), sorted by path
// for determinism. Error (hint "run scripts/setup.sh (installs python3-doc)")
// when no such directory holds any .rst.txt file. The environment variable
// EL_DOC_ROOT, when set, replaces the default root (a machine that cannot
// install python3-doc gets a copy of the directory).
Result<std::vector<std::string>> builtin_corpus_files(const std::string& doc_root = "/usr/share/doc");

// Expands files and directories into a list of files. A directory is walked
// recursively for .txt .rst .md .jsonl .json files (hidden entries skipped),
// sorted by path; an explicitly named file is kept whatever its extension.
// Order follows `paths`; duplicates (same canonical path) are dropped.
// Errors: a missing path (named), a directory with no matching file, an empty
// `paths`.
Result<std::vector<std::string>> expand_inputs(const std::vector<std::string>& paths);

enum class FileFormat { text, jsonl, json_array };
// How read_documents will parse `path` (the .json case peeks at its first
// non-blank byte; an unreadable file is an Error).
Result<FileFormat> detect_format(const std::string& path);
const char* format_name(FileFormat f);

struct Document {
  std::string text;
  size_t file_index = 0;  // index into the file list passed to for_each_document
  int64_t line = 0;       // 1-based line in a JSON Lines file; 0 for whole files
};

struct ReadStats {
  int64_t documents = 0;        // non-empty documents delivered
  int64_t empty_documents = 0;  // skipped because their text was empty
  int64_t bytes = 0;            // bytes of text delivered
};

// Streams every non-empty document of `files`, in order, to `fn`; stops at the
// first Error from a file or from `fn`. Does not error on an empty corpus (the
// caller decides); see ReadStats.
Status for_each_document(const std::vector<std::string>& files, const std::string& text_key,
                         const std::function<Status(Document&&)>& fn, ReadStats* stats = nullptr);

// All documents in memory; Error "empty corpus" when there are no documents
// or zero bytes of text.
Result<std::vector<std::string>> read_documents(const std::vector<std::string>& files,
                                                const std::string& text_key = "text");

// The Error for a corpus without text, shared by every caller so the message
// is the same everywhere.
Error empty_corpus_error(const std::vector<std::string>& files);

}  // namespace el::data
