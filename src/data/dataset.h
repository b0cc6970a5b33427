// dataset.h — text files -> token shards + a dataset manifest (prepare/load).
//
// prepare_dataset() reads documents (corpus.h), encodes them with a trained
// tokenizer on several threads, appends EOS after each document, assigns
// each document to train or validation by a hash of (seed, document index) —
// so the split is reproducible and independent of thread timing — and writes
//   <out>/train_000000.bin, train_000001.bin, ...   (llm.c shards, shard.h)
//   <out>/val_000000.bin, ...
//   <out>/dataset.json                               (the manifest below)
// Documents may straddle shard boundaries (as in llm.c's fineweb shards).
//
// dataset.json (docs/DATA.md shows an example):
//   {"format": "efficientllm-dataset", "format_version": 1,
//    "tokenizer": {"path", "sha256", "vocab_size", "bos_id", "eos_id"},
//    "options": {"val_fraction", "seed", "text_key", "append_eos", "max_tokens_per_shard"},
//    "splits": {"train": {"documents", "tokens", "shards": [names]}, "val": {...}},
//    "sources": [{"path", "documents", "bytes"}], "empty_documents_skipped", "seconds"}
// Shard names are relative to the manifest's directory so a dataset folder can
// be moved as a whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace el::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories (expand_inputs)
  std::string tokenizer_path;       // SentencePiece .model
  std::string out_dir;              // created if missing
  double val_fraction = 0.05;       // share of documents for validation, in (0, 1)
  uint64_t seed = 0;                // picks which documents are validation
  std::string text_key = "text";    // JSON key of the text in .jsonl/.json inputs
  bool append_eos = true;           // EOS after every document (the separator)
  int64_t max_tokens_per_shard = 100'000'000;
  int num_threads = 0;              // encoding threads; 0 = all hardware threads
};

struct SourceFile {
  std::string path;
  int64_t documents = 0;
  int64_t bytes = 0;
};

// A prepared dataset: what prepare_dataset() wrote and dataset.json records.
struct Dataset {
  std::string dir;            // the directory holding dataset.json and the shards
  std::string manifest_path;  // <dir>/dataset.json
  std::string tokenizer_path;  // absolute path of the .model used
  std::string tokenizer_sha256;
  int vocab_size = 0;
  int bos_id = -1;
  int eos_id = -1;
  // The options it was made with.
  double val_fraction = 0.0;
  uint64_t seed = 0;
  std::string text_key;
  bool append_eos = true;
  int64_t max_tokens_per_shard = 0;
  // The splits: shard paths (dir joined with the manifest's names), counts
  // (tokens include the EOS separators).
  std::vector<std::string> train_shards, val_shards;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_documents = 0, val_documents = 0;
  std::vector<SourceFile> sources;
  int64_t empty_documents = 0;  // skipped because their text was empty
  double seconds = 0.0;         // wall time prepare_dataset took
};
using PrepareResult = Dataset;

inline constexpr const char* kManifestName = "dataset.json";

// Whether document `index` (0-based, in input order) goes to validation:
// a splitmix64 hash of (seed, index) mapped to [0, 1) and compared with
// `fraction`. Pure function, so any tool can recompute the split.
bool is_validation_document(int64_t index, uint64_t seed, double fraction);

// Runs the whole pipeline (file comment) and returns what the manifest says. Errors: bad options (fraction
// outside (0, 1), max_tokens_per_shard < 1), a missing input (named), a
// malformed JSON line (file:line), a missing/corrupt tokenizer, an empty
// corpus, no validation documents (raise the fraction / add documents) or
// no training documents (lower the fraction), an unwritable output directory.
// On error, shards written by this call are removed. Shards of an earlier run
// in the same directory that this run did not rewrite (train_NNNNNN.bin /
// val_NNNNNN.bin beyond the new count) are removed after success, so the
// directory always matches its manifest.
Result<Dataset> prepare_dataset(const PrepareOptions& options);

// Reads <dir>/dataset.json back (shard paths joined with dir). Errors name
// the file and the key that is missing or of the wrong type.
Result<Dataset> load_dataset_manifest(const std::string& dir);

// A few human-readable lines: where, tokenizer, documents/tokens per split,
// shard count, time.
std::string describe(const Dataset& d);

}  // namespace el::data
