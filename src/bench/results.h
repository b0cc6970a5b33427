// results.h — result files of a benchmark run.
//
// One JSON Lines record per experiment (schema "efficientllm.result.v1",
// fields documented in docs/METRICS.md) with the full config, platform, raw
// samples and summaries, and a flat CSV of the headline columns for
// spreadsheets. Both are written atomically (temp file + rename).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace el::bench {

// Creates `dir` if needed and checks that a file can be created in it, so a
// suite fails before running anything rather than after an hour of work.
Status ensure_writable_dir(const std::string& dir);

Status write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records);

// The CSV columns, in order (also the header line).
const std::vector<std::string>& csv_columns();
// One row per record: fields looked up by JSON pointer, empty when absent.
Status write_csv(const std::string& path, const std::vector<nlohmann::json>& records);

}  // namespace el::bench
