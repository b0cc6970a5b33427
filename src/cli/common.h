// common.h — glue shared by the CLI's subcommands.
//
// Each subcommand lives in its own cmd_<name>.cpp and registers itself with
// add_<name>_command(app, action): it adds its options to CLI11 and sets
// `action` to the function main() runs after parsing. Commands return an exit
// code; library errors arrive as el::Error and are printed by report_error().
// Only the CLI exits: the library returns errors.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace el::cli {

using Action = std::function<int()>;

void add_bench_command(CLI::App& app, Action& action);
void add_train_command(CLI::App& app, Action& action);
void add_data_command(CLI::App& app, Action& action);
void add_tokenizer_command(CLI::App& app, Action& action);
void add_model_command(CLI::App& app, Action& action);
void add_compare_command(CLI::App& app, Action& action);
void add_report_command(CLI::App& app, Action& action);
void add_finetune_command(CLI::App& app, Action& action);
void add_generate_command(CLI::App& app, Action& action);
void add_quantize_command(CLI::App& app, Action& action);

// Prints "error: <where>: <what>" and the hint to stderr; returns exit code 1.
int report_error(const Error& e);

// "cpu" or "cuda[:N]"; an Error for anything else.
Result<Device> parse_device(const std::string& text);

}  // namespace el::cli
