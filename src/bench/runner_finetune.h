// runner_finetune.h — the runner's fine-tuning rows (internal to bench/):
// a finetune experiment of a suite file as a FinetuneConfig, its identity for
// the config hash, its child command line, and its rows of the table.
//
// The model of a row is "pretrained:<label>" (the checkpoint the runner keeps
// for that pretrain experiment: <results>/checkpoints/<its config hash>/)
// or a Hugging Face directory; the data is "builtin" (records derived from
// the built-in corpus, data/sft_builtin.h, cached under <results>/cache) or
// an SFT file. A suite field seq_len is the samples' cutoff length; batches
// are as long as their longest sample.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/runner.h"
#include "bench/suite_yaml.h"
#include "core/device.h"
#include "core/error.h"
#include "finetune/sft_trainer.h"

namespace el::bench {

// Where the runner keeps the checkpoint of a pretrain experiment that a
// finetune row starts from.
std::string pretrain_checkpoint_dir(const std::string& results_dir, const std::string& config_hash);

// The fields of a ready finetune experiment as a FinetuneConfig (model and
// tokenizer left for the caller when the model is pretrained:<label>).
// timing_warmup: the suite's warmup_steps (at least one timed step is kept).
finetune::FinetuneConfig finetune_experiment_config(const ExpandedExperiment& e, Device device,
                                                    const std::string& results_dir, int64_t timing_warmup);

// The identity of the fine-tuning data for the hash: the SHA-256 of each
// file's content (the built-in records are written first when needed).
Result<nlohmann::json> sft_data_identity(const finetune::FinetuneConfig& c);

// The resolved config of a finetune row: every FinetuneConfig field but the
// paths, the model's identity (the source experiment's config hash, or the
// directory's config.json SHA-256), the data identity, the device kind and
// the measurement rules.
Result<nlohmann::json> finetune_resolved_config(const ExpandedExperiment& e, const finetune::FinetuneConfig& c,
                                                const nlohmann::json& model_identity,
                                                const nlohmann::json& data_identity, bool isolated);

// `efficientllm finetune ... --report <report_path>` for a child process.
std::vector<std::string> finetune_command_line(const finetune::FinetuneConfig& c, const std::string& report_path);

// The finetune rows of a suite as their own table (method, losses, AMU, AL,
// samples/s, ST, PCU, AEC); "" when there are none.
std::string render_finetune_table(const std::vector<SuiteRow>& rows);

}  // namespace el::bench
