// results.h — result files of a benchmark run.
//
// One JSON Lines record per experiment, schema "efficientllm.result.v2"
// (every field documented in docs/RESULTS.md): build, machine, the full
// resolved config and its hash, the raw record of every repetition ("runs")
// and a per-metric summary over the repetitions (result_stats.h). Plus a flat
// CSV of the headline columns for spreadsheets.
//
// Two ways to write: write_jsonl/write_csv replace a whole file atomically
// (temp file + rename); append_jsonl_record adds one record to a file that
// other runs share, with one write(2) on an O_APPEND descriptor, so a reader
// never sees half a record from a run that finished. read_jsonl_records reads
// either kind back, skipping a torn last line (a run killed mid-write) with a
// warning, and refuses mixed schema versions.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "metrics/proc.h"

namespace el::bench {

inline constexpr const char* kResultSchemaV1 = "efficientllm.result.v1";
inline constexpr const char* kResultSchemaV2 = "efficientllm.result.v2";

// Creates `dir` if needed and checks that a file can be created in it, so a
// suite fails before running anything rather than after an hour of work.
Status ensure_writable_dir(const std::string& dir);

// ---- building records ------------------------------------------------------

// {"git_commit","compiler","build_type","flags":{...}}: the compile
// definitions EL_GIT_COMMIT / EL_CXX_COMPILER / EL_BUILD_TYPE and what the
// compiler's predefined macros say about the flags (optimisation, NDEBUG,
// OpenMP, vector ISA), see docs/RESULTS.md.
nlohmann::json build_info_json();

// The "machine" block from PlatformInfo: CPU, memory, OS, GPU (null fields
// when there is no GPU).
nlohmann::json machine_info_json(const metrics::PlatformInfo& p);

// SHA-256 (hex) of the canonical JSON of `config`: nlohmann's dump() with no
// whitespace, object keys sorted, numbers in shortest round-trip form.
std::string config_hash(const nlohmann::json& config);

// What identifies an experiment, beside its measurements.
struct ExperimentInfo {
  std::string suite;           // suite name
  std::string label;           // the experiment's label within the suite
  std::string axis;            // "pretrain", "finetune", "infer"
  std::string run_id;          // when the suite run started, e.g. "20261122-023000"
  nlohmann::json config;       // the full resolved config (hashed)
  nlohmann::json suite_spec;   // optional: the suite description (not hashed)
};

// A v2 record from the raw records of the experiment's repetitions. Each run
// object holds what one repetition produced: "status" ("ok"/"failed"),
// "error" when failed, "metrics", "perplexity", ... (headline_metrics() says
// which fields are summarised). Record status: "ok" when every run is ok,
// "failed" when none is, "partial" otherwise.
nlohmann::json make_result_record(const ExperimentInfo& info, const std::vector<nlohmann::json>& runs,
                                  const nlohmann::json& build, const nlohmann::json& machine);

// Merges several v2 records of ONE experiment (each typically with one run,
// written by one repetition's child process) into one record: runs
// concatenated in order, status and summary recomputed, header fields from the
// first. Error when a record is not v2 or the config hashes differ.
Result<nlohmann::json> merge_repetition_records(const std::vector<nlohmann::json>& records);

// A v1 record (single run, "platform" block) as v2; marks "upgraded_from".
// `where` ("path:line") names the record in errors.
Result<nlohmann::json> upgrade_v1_record(const nlohmann::json& v1, const std::string& where);

// ---- writing ----------------------------------------------------------------

Status write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records);

// Appends `record` as one line: a single write(2) of "<json>\n" on an
// O_APPEND descriptor, then fsync. If the file ends in a torn line (a writer
// was killed), that tail is cut off first (under an exclusive flock, so
// concurrent appenders do not race) and `warning`, when given, says so.
Status append_jsonl_record(const std::string& path, const nlohmann::json& record,
                           std::string* warning = nullptr);

// The CSV columns, in order (also the header line).
const std::vector<std::string>& csv_columns();
// One row per record: fields looked up by JSON pointer, empty when absent.
Status write_csv(const std::string& path, const std::vector<nlohmann::json>& records);

// ---- reading ----------------------------------------------------------------

struct JsonlRecords {
  std::string schema;                    // the file(s)' schema before upgrading
  std::vector<nlohmann::json> records;   // always v2 (v1 records are upgraded)
  std::vector<std::string> sources;      // "path:line" of each record
  std::vector<size_t> file_index;        // per record: which of the paths it came from
  std::vector<std::string> warnings;     // "path:line: skipped a torn last line ..."
};

// Reads one JSON Lines result file. Blank lines are ignored. A last line with
// no newline that does not parse is skipped with a warning; any other line
// that is not a JSON object with a known "schema" is an Error naming
// "path:line". A file mixing v1 and v2 records is an Error naming both.
Result<JsonlRecords> read_jsonl_records(const std::string& path);

// Reads several files; an Error when they do not all have the same schema
// version (naming both versions and a file of each).
Result<JsonlRecords> read_jsonl_records(const std::vector<std::string>& paths);

}  // namespace el::bench
