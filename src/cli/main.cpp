// efficientllm — command-line entry point. See README.md ("CLI reference").
#include <cstdio>
#include <exception>

#include "cli/common.h"

namespace el::cli {

int report_error(const Error& e) {
  std::fprintf(stderr, "error: %s%s%s\n", e.where.empty() ? "" : e.where.c_str(),
               e.where.empty() ? "" : ": ", e.what.c_str());
  if (!e.hint.empty()) std::fprintf(stderr, "hint: %s\n", e.hint.c_str());
  return 1;
}

Result<Device> parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text.rfind("cuda", 0) == 0) {
    if (text == "cuda") return Device::cuda(0);
    if (text.size() > 5 && text[4] == ':') {
      try {
        return Device::cuda(std::stoi(text.substr(5)));
      } catch (...) {
      }
    }
  }
  return make_error(fmt::format("unknown device '{}'", text), "--device", "use cpu, cuda or cuda:N");
}

}  // namespace el::cli

int main(int argc, char** argv) {
  CLI::App app{"EfficientLLM: measure what LLM efficiency techniques really cost"};
  app.require_subcommand(1);
  el::cli::Action action;
  el::cli::add_bench_command(app, action);
  el::cli::add_train_command(app, action);
  el::cli::add_data_command(app, action);
  el::cli::add_tokenizer_command(app, action);
  el::cli::add_model_command(app, action);
  CLI11_PARSE(app, argc, argv);
  try {
    return action ? action() : 0;
  } catch (const el::Exception& e) {
    return el::cli::report_error(e.error());
  } catch (const std::exception& e) {
    return el::cli::report_error(el::make_error(e.what(), "efficientllm"));
  }
}
