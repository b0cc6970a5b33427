// quick_suite.h — the built-in `quick` suite of `efficientllm bench`.
//
// Pretrains the tiny MHA, GQA and MQA cards with the same token budget on the
// built-in corpus (preparing the tokenizer and shards once, cached under the
// results directory), times one training step of the `small` card for its
// MFU, prints the comparison table with the corpus's unigram baseline, and
// writes every run as one JSON Lines record plus a CSV of the table.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/error.h"

namespace el::bench {

struct QuickSuiteOptions {
  std::string results_dir = "results";
  Device device = Device::cpu();
  int64_t steps = 0;          // override the suite's step count (0 = suite default)
  bool include_small = true;  // the `small` card MFU probe
};

struct QuickSuiteResult {
  std::vector<nlohmann::json> records;  // one per experiment (also in the JSONL file)
  double unigram_perplexity = 0;
  double peak_gflops = 0;  // the suite's calibrated GEMM peak (MFU denominator)
  std::string peak_dtype;   // the dtype that GEMM ran in
  std::optional<double> peak_datasheet_gflops;  // GPU only: the vendor's number, for context
  std::string jsonl_path, csv_path;
  std::string table;  // the printed table
};

Result<QuickSuiteResult> run_quick_suite(const QuickSuiteOptions& options);

}  // namespace el::bench
