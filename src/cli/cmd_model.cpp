// efficientllm model info <card> — shapes, parameter count and FLOPs of a card.
#include <cstdio>

#include "cli/common.h"
#include "models/decoder_lm.h"

namespace el::cli {

void add_model_command(CLI::App& app, Action& action) {
  auto* model = app.add_subcommand("model", "Inspect model cards");
  model->require_subcommand(1);
  auto* info = model->add_subcommand("info", "Print a card's shapes, parameters and FLOPs per token");
  auto card_name = std::make_shared<std::string>();
  auto seq_len = std::make_shared<int64_t>(0);
  info->add_option("card", *card_name, "Built-in card name or YAML path")->required();
  info->add_option("--seq-len", *seq_len, "Context length for the FLOPs (default: the card's max)");
  info->callback([&action, card_name, seq_len] {
    action = [card_name, seq_len]() -> int {
      auto card = find_model_card(*card_name);
      if (!card.ok()) return report_error(card.error());
      const ModelCard& c = card.value();
      // Count on a CPU model only for small cards; big cards are counted from shapes.
      const int64_t T = *seq_len > 0 ? *seq_len : c.max_seq_len;
      auto counts = count_parameters(c);
      std::printf("%s\n", model_card_to_yaml(c).c_str());
      std::printf("parameters:            %lld (%.3f M)\n", static_cast<long long>(counts.total),
                  static_cast<double>(counts.total) / 1e6);
      std::printf("embedding parameters:  %lld\n", static_cast<long long>(counts.embedding));
      const FlopsPerToken f = flops_per_token(c, T);
      std::printf("FLOPs/token @ T=%lld:   forward %.4g, train %.4g (6N+12LdT: %.4g)\n",
                  static_cast<long long>(T), f.forward(), f.train(), f.formula_train);
      return 0;
    };
  });
}

}  // namespace el::cli
