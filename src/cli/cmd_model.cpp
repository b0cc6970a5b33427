// efficientllm model info <card> | --hf DIR — shapes, parameter count and
// FLOPs per token of a card, or of a Hugging Face checkpoint's mapped card
// (its tensors are checked against the card; nothing is loaded).
#include <cstdio>

#include "cli/common.h"
#include "models/decoder_lm.h"
#include "models/hf_model.h"

namespace el::cli {

namespace {

// A Hugging Face directory: the card it maps to and its weight files.
Result<ModelCard> hf_card(const std::string& dir, bool allow_unknown) {
  EL_TRY_ASSIGN(io::HfCheckpoint ck, io::HfCheckpoint::open(dir));
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  io::HfLoadOptions opt;
  opt.allow_unknown_tensors = allow_unknown;
  EL_TRY(ck.validate(hf_checkpoint_tensor_specs(ck), opt));
  std::printf("# Hugging Face checkpoint %s\n", dir.c_str());
  std::printf("# model_type %s, dtype %s, %zu tensors, %.1f MB in %zu file(s) (%s)\n",
              ck.config().model_type.c_str(),
              ck.config().torch_dtype.empty() ? "?" : ck.config().torch_dtype.c_str(),
              ck.tensor_names().size(), static_cast<double>(ck.total_bytes()) / 1e6,
              ck.files().size(), ck.weights_path().c_str());
  return card;
}

}  // namespace

void add_model_command(CLI::App& app, Action& action) {
  auto* model = app.add_subcommand("model", "Inspect model cards");
  model->require_subcommand(1);
  auto* info = model->add_subcommand("info", "Print a card's shapes, parameters and FLOPs per token");
  auto card_name = std::make_shared<std::string>();
  auto hf_dir = std::make_shared<std::string>();
  auto allow_unknown = std::make_shared<bool>(false);
  auto seq_len = std::make_shared<int64_t>(0);
  auto* card_opt = info->add_option("card", *card_name, "Built-in card name or YAML path");
  auto* hf_opt = info->add_option("--hf", *hf_dir,
                                  "A Hugging Face model directory (config.json + safetensors) "
                                  "instead of a card");
  card_opt->excludes(hf_opt);
  hf_opt->excludes(card_opt);
  info->add_flag("--allow-unknown-tensors", *allow_unknown,
                 "With --hf: ignore tensors the model has no parameter for");
  info->add_option("--seq-len", *seq_len, "Context length for the FLOPs (default: the card's max)");
  info->callback([&action, card_name, hf_dir, allow_unknown, seq_len] {
    action = [card_name, hf_dir, allow_unknown, seq_len]() -> int {
      if (card_name->empty() && hf_dir->empty()) {
        return report_error(make_error("give a card name or --hf DIR", "model info"));
      }
      auto card = hf_dir->empty() ? find_model_card(*card_name) : hf_card(*hf_dir, *allow_unknown);
      if (!card.ok()) return report_error(card.error());
      const ModelCard& c = card.value();
      // Count on a CPU model only for small cards; big cards are counted from shapes.
      const int64_t T = *seq_len > 0 ? *seq_len : c.max_seq_len;
      auto counts = count_parameters(c);
      std::printf("%s\n", model_card_to_yaml(c).c_str());
      std::printf("parameters:            %lld (%.3f M)\n", static_cast<long long>(counts.total),
                  static_cast<double>(counts.total) / 1e6);
      std::printf("embedding parameters:  %lld\n", static_cast<long long>(counts.embedding));
      if (counts.active != counts.total) {  // a mixture of experts
        std::printf("active parameters:     %lld (%.3f M per token)\n",
                    static_cast<long long>(counts.active), static_cast<double>(counts.active) / 1e6);
      }
      const FlopsPerToken f = flops_per_token(c, T);
      std::printf("FLOPs/token @ T=%lld:   forward %.4g, train %.4g (6N+12LdT: %.4g)\n",
                  static_cast<long long>(T), f.forward(), f.train(), f.formula_train);
      if (f.matmul_forward_total != f.matmul_forward) {
        std::printf("FLOPs/token, all experts: forward %.4g\n",
                    f.forward() - f.matmul_forward + f.matmul_forward_total);
      }
      return 0;
    };
  });
}

}  // namespace el::cli
