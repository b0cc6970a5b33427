// runner.h — the one runner of `efficientllm bench`: every suite (a suite
// file, or a built-in C++ spec converted to one by suite_spec_to_file) runs
// here, experiment by experiment.
//
// Per experiment, in suite order (docs/RESULTS.md, "The runner", has the rules):
//  * Not supported (with allow_missing: an unknown card, a missing dataset,
//    model or task file): a record with status "not_supported" and the
//    reason; nothing runs. Finetune and infer rows run through
//    runner_finetune.h / runner_infer.h (no MFU calibration for them).
//  * Its resolved config (resolved_config: every TrainConfig field, the model
//    card's content, the dataset's content identity, the device kind and the
//    measurement rules; not the run id, the label or any path) is hashed; if a
//    record with that config_hash and status "ok" is in any *.jsonl of the
//    results directory, the experiment is "cached (results/<file>:<line>)"
//    and does not run (SuiteOptions::force runs it anyway).
//  * Otherwise its repetitions run, each by default as `efficientllm train
//    ... --report` in its own child process (child_process.h): first the
//    declared repetitions, then more while the measured time (timed steps,
//    warm-up excluded) of all repetitions is below min_duration_s, up to
//    kMaxRepetitionFactor x the declared number; a failed repetition ends the
//    experiment. Their one-run records are merged (merge_repetition_records)
//    into the experiment's v2 record, which is appended to
//    <results>/<suite>-<run_id>.jsonl as soon as the experiment ends: a
//    Ctrl-C or a crash of the runner leaves every finished record intact.
// Progress goes to stderr (progress.h); the comparison table is in the result.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/results.h"
#include "bench/suite.h"
#include "bench/suite_yaml.h"
#include "core/device.h"
#include "core/error.h"
#include "data/dataset.h"
#include "metrics/calibrate.h"
#include "train/trainer.h"

namespace el::bench {

// ---- planning: what runs -----------------------------------------------------

struct PlanOptions {
  int64_t steps = 0;          // override every pretrain experiment's steps (0 = the suite's); not the probe's
  bool include_probe = true;  // add the suite's MFU probe, if it has one
  std::string filter;         // keep the experiments whose label matches (filter_experiments); "" = all
};

// The suite as it will run: the step override (the LR warm-up becomes a
// tenth of the steps when it would not end before the last step), then the
// MFU probe appended as an experiment (the first ready pretrain experiment's
// settings with the probe's card, B, T and steps, no LR warm-up, one
// validation batch; `mfu_probe` set), then the filter. Errors: a probe card
// whose vocabulary differs from the built-in tokenizer's or whose context is
// shorter than its seq_len, a probe label equal to an experiment's, and a
// filter that matches nothing ("--filter 'x' matches no experiment label").
Result<SuiteFile> plan_suite(SuiteFile suite, const PlanOptions& options);

// ---- running -------------------------------------------------------------------

// A repetition count cap: at most this many times the declared repetitions
// run to reach min_duration_s.
inline constexpr int64_t kMaxRepetitionFactor = 10;

struct SuiteOptions {
  std::string results_dir = "results";
  Device device = Device::cpu();
  // Debugging: run the experiments in this process instead of one child
  // process each (memory figures then include what earlier runs left, and a
  // crash ends the whole suite).
  bool in_process = false;
  std::string self_exe;  // the efficientllm binary the children run (/proc/self/exe); required unless in_process
  double timeout_s = 0;  // per repetition, child runs only; 0 = none
  bool force = false;    // run experiments that already have an ok record in results_dir
  double calibration_seconds = 2.0;  // timing of the MFU peak's GEMM, once per dtype and suite
  std::FILE* progress = stderr;  // nullptr = no progress output
};

// One row of the printed table (and of the CSV).
struct SuiteRow {
  std::string label;
  std::string card;         // the card (pretrain) or model (other axes)
  std::string status;       // the record's: ok | failed | partial | interrupted | not_supported
  bool cached = false;      // an earlier run's record, not run now
  std::string cached_from;  // "results/quick-20261122-041429.jsonl:2"
  bool mfu_probe = false;
  nlohmann::json record;    // the v2 record (written now, or the cached one)
};

// A dataset the suite trained on, for the note under the table.
struct DatasetUse {
  std::string name;  // "builtin (4096 pieces)" or the directory
  int64_t train_tokens = 0;
  double unigram_perplexity = 0;
};

struct SuiteResult {
  SuiteFile suite;  // as planned
  std::string run_id;
  // rows[i] is suite.experiments[i]; fewer rows than experiments after a Ctrl-C.
  std::vector<SuiteRow> rows;
  std::vector<DatasetUse> datasets;
  std::vector<metrics::PeakCalibration> peaks;  // calibrated by this run (none when nothing ran)
  std::string jsonl_path;  // "" when no record was written
  std::string csv_path;
  bool interrupted = false;  // Ctrl-C: the suite stopped early
  std::string table;         // the comparison table
  // Rows run now whose status is failed or partial.
  int failures() const;
};

// Runs a planned suite. Fails before running anything when the results
// directory is not writable, self_exe is missing for child runs, a dataset
// cannot be prepared or read, or a card cannot be read.
Result<SuiteResult> run_suite(const SuiteFile& planned, const SuiteOptions& options);

// A C++ spec: validate_suite_spec (before anything is created), then
// suite_spec_to_file, plan_suite and run_suite.
Result<SuiteResult> run_suite(const SuiteSpec& spec, const SuiteOptions& options,
                              const PlanOptions& plan = {});

// The comparison table of `rows` (the columns of the README's sample):
// values are the records' summary means; cached rows are marked "(cached)".
// When a row is a mixture of experts (its record's active_parameters differ
// from its parameters), an "active" column follows "params".
std::string render_suite_table(const std::vector<SuiteRow>& rows);

// ---- the parts, exposed for tests --------------------------------------------------

// Whether another repetition runs after `done` successful ones that measured
// `measured_s` seconds in total: while done < declared, and then while
// measured_s < min_duration_s and done < kMaxRepetitionFactor x declared.
bool need_another_repetition(int64_t declared, double min_duration_s, int64_t done, double measured_s);

// The measured time of one repetition's run object: the summed duration of
// its timed steps (metrics.al_seconds: n x mean, warm-up steps excluded);
// 0 when absent.
double measured_seconds(const nlohmann::json& run);

// The dataset's identity for the config hash, from its content, not its path:
// {"tokenizer_sha256", "vocab_size", "bos_id", "eos_id", "train_tokens",
//  "val_tokens", "train_documents", "val_documents", "shards_sha256"}, where
// shards_sha256 is the SHA-256 of the lines "<split> <shard file name>
// <sha256 of the file>" of every shard in order. The shards' hashes are
// remembered in `cache_file` (JSON, keyed by the directory) with each file's
// size and modification time, so an unchanged dataset is not read again.
Result<nlohmann::json> dataset_identity(const data::Dataset& dataset, const std::string& cache_file);

// What the config hash covers (docs/RESULTS.md "config_hash"):
// {"axis", "train": TrainConfig::to_json() without data_dir and device, with
//  "model" = the card's name, "model_card": the card as YAML, "dataset":
//  dataset_identity, "device_kind": "cpu"|"cuda", "measure": the suite's
//  repetitions / warmup_steps / min_duration_s, "mfu_probe": bool,
//  "isolated": bool (a run in the bench process measures memory differently,
//  so a debugging run is never reused for an isolated one)}.
Result<nlohmann::json> resolved_config(const ExpandedExperiment& e, const TrainConfig& cfg,
                                       const nlohmann::json& dataset_identity, bool isolated);

// The ok records of the *.jsonl files in `dir` (not recursive), by config
// hash; a later file (in name order) or line replaces an earlier one. A file
// that cannot be read is skipped with a warning (its records are then not
// used for skipping); torn last lines give warnings too.
struct CachedRecord {
  std::string where;  // "dir/file.jsonl:LINE"
  nlohmann::json record;
};
struct ResultIndex {
  std::map<std::string, CachedRecord> ok;
  std::vector<std::string> warnings;
  const CachedRecord* find(const std::string& config_hash) const;
};
ResultIndex index_results_dir(const std::string& dir);

// The experiment's record from its repetitions' run objects: one one-run
// record per repetition (make_result_record), merged by
// merge_repetition_records. No runs (interrupted during the first): the
// record has no runs and status "failed" (the caller marks it).
Result<nlohmann::json> experiment_record(const ExperimentInfo& info, const std::vector<nlohmann::json>& runs,
                                         const nlohmann::json& build, const nlohmann::json& machine);

// The `efficientllm train` arguments that reproduce cfg in a child process
// (the suite's calibrated peak passed on, so every MFU has one denominator).
std::vector<std::string> train_command_line(const TrainConfig& cfg, const std::string& report_path);

}  // namespace el::bench
