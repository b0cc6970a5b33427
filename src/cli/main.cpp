// efficientllm — command-line entry point. See README.md ("CLI reference").
#include <cstdio>
#include <exception>
#include <optional>

#include "cli/common.h"
#ifdef EL_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace el::cli {
namespace {

// Registers the CUDA backend for cuda:index (once per process) or says why
// it cannot: no GPU, a driver too old, a build without CUDA.
Status use_cuda(int index, const std::string& text) {
#ifdef EL_HAVE_CUDA
  Status s = el::cuda::register_backend(index);
  if (s.ok()) return s;
  Error e = s.error();
  e.where = "--device " + text;
  return e;
#else
  (void)index;
  return make_error("this build has no CUDA backend", "--device " + text,
                    "configure with -DEL_CUDA=ON (cmake --preset cuda), or use --device cpu");
#endif
}

}  // namespace

int report_error(const Error& e) {
  std::fprintf(stderr, "error: %s%s%s\n", e.where.empty() ? "" : e.where.c_str(),
               e.where.empty() ? "" : ": ", e.what.c_str());
  if (!e.hint.empty()) std::fprintf(stderr, "hint: %s\n", e.hint.c_str());
  return 1;
}

Result<Device> parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "auto") {  // the GPU when there is one, else the CPU (the user did not insist)
    const Status s = use_cuda(0, text);
    if (s.ok()) return Device::cuda(0);
    std::fprintf(stderr, "note: --device auto runs on the CPU: %s\n", s.error().what.c_str());
    return Device::cpu();
  }
  if (text.rfind("cuda", 0) == 0) {
    std::optional<int> index;
    if (text == "cuda") index = 0;
    if (text.size() > 5 && text[4] == ':' &&
        text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() < 9) {
      index = std::stoi(text.substr(5));
    }
    if (index) {
      EL_TRY(use_cuda(*index, text));
      return Device::cuda(*index);
    }
  }
  return make_error(fmt::format("unknown device '{}'", text), "--device",
                    "use cpu, cuda, cuda:N or auto");
}

}  // namespace el::cli

int main(int argc, char** argv) {
  CLI::App app{"EfficientLLM: measure what LLM efficiency techniques really cost"};
  app.require_subcommand(1);
  el::cli::Action action;
  el::cli::add_bench_command(app, action);
  el::cli::add_train_command(app, action);
  el::cli::add_finetune_command(app, action);
  el::cli::add_generate_command(app, action);
  el::cli::add_quantize_command(app, action);
  el::cli::add_data_command(app, action);
  el::cli::add_tokenizer_command(app, action);
  el::cli::add_model_command(app, action);
  el::cli::add_compare_command(app, action);
  el::cli::add_report_command(app, action);
  CLI11_PARSE(app, argc, argv);
  try {
    return action ? action() : 0;
  } catch (const el::Exception& e) {
    return el::cli::report_error(e.error());
  } catch (const std::exception& e) {
    return el::cli::report_error(el::make_error(e.what(), "efficientllm"));
  }
}
