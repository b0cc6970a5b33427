// suite_infer.cpp — the parts of suite files (suite_yaml.h) that only infer
// experiments use: batch-size lists, what a model card allows an infer row,
// and the infer row's time estimate.
#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "bench/suite_yaml.h"
#include "models/decoder_lm.h"

namespace el::bench {

double assumed_bytes_per_second(DeviceKind kind) {
  // Decode reads every weight once per step: ~20 GB/s is what two CPU cores
  // stream; 2.5 TB/s is ~75% of an H100's HBM3 (an H200 is faster).
  return kind == DeviceKind::cpu ? 2.0e10 : 2.5e12;
}

std::optional<double> estimate_infer_seconds(const ExpandedExperiment& e, DeviceKind kind) {
  if (!e.config.contains("source_card")) return std::nullopt;
  auto card = find_model_card(e.config["source_card"].get<std::string>());
  if (!card.ok()) return std::nullopt;
  auto batches = parse_batch_sizes(e.field("batch_sizes").get<std::string>(), "batch_sizes");
  if (!batches.ok()) return std::nullopt;
  const ModelCard& c = card.value();
  const double prompt = static_cast<double>(e.field("prompt_len").get<int64_t>());
  const double gen = static_cast<double>(e.field("gen_len").get<int64_t>());
  const std::string precision = e.field("precision").get<std::string>();
  const bool is_int = precision == "int8" || precision == "int4";
  // The bench's timed generations (3, infer_bench.h) plus the untimed warm-up ones.
  const double generations = 3.0 + static_cast<double>(e.config.at("measure").at("warmup_steps").get<int64_t>());
  double tokens = 0, steps = 0;
  for (int64_t b : batches.value()) {
    tokens += static_cast<double>(b) * (prompt + gen) * generations;
    steps += gen * generations;
  }
  double flops = tokens * flops_per_token(c, static_cast<int64_t>(prompt + gen)).forward();
  // Quality needs trained weights: a card has none.
  if (e.config.value("model_kind", "") != kModelCard) {
    const double ctx_flops = flops_per_token(c, c.max_seq_len).forward();
    flops += static_cast<double>(e.field("eval_tokens").get<int64_t>()) * ctx_flops;
    if (!e.field("choice_task").get<std::string>().empty()) {
      // ~4 choices of a ~64-token context + continuation each.
      flops += static_cast<double>(e.field("choice_items").get<int64_t>()) * 4 * 64 *
               flops_per_token(c, 64).forward();
    }
    if (is_int && e.field("quant_method") == "gptq") {
      flops += static_cast<double>(e.field("calib_samples").get<int64_t>() *
                                   std::min<int64_t>(e.field("calib_seq_len").get<int64_t>(), c.max_seq_len)) *
               ctx_flops;
    }
  }
  const double bits = precision == "f32" ? 32 : precision == "int8" ? 8 : precision == "int4" ? 4 : 16;
  const double weight_bytes = static_cast<double>(count_parameters(c).total) * bits / 8.0;
  const double reps = static_cast<double>(e.config.at("measure").at("repetitions").get<int64_t>());
  return reps * (flops / assumed_flops_per_second(kind) + steps * weight_bytes / assumed_bytes_per_second(kind));
}

Result<std::vector<int64_t>> parse_batch_sizes(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    std::string piece = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t a = piece.find_first_not_of(' '), b = piece.find_last_not_of(' ');
    piece = a == std::string::npos ? "" : piece.substr(a, b - a + 1);
    const bool digits = !piece.empty() && piece.size() <= 9 &&
                        piece.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoll(piece) < 1) {
      return make_error(fmt::format("batch_sizes '{}': '{}' is not a positive integer", text, piece), where,
                        "write the batch sizes as a comma-separated list, e.g. \"1,8,32\"");
    }
    out.push_back(std::stoll(piece));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string infer_card_problem(const ModelCard& card, const std::string& precision, int64_t group_size,
                               int64_t prompt_len, int64_t gen_len) {
  if (prompt_len + gen_len > card.max_seq_len) {
    return fmt::format("card '{}' allows max_seq_len {} but prompt_len + gen_len is {} + {} = {}", card.name,
                       card.max_seq_len, prompt_len, gen_len, prompt_len + gen_len);
  }
  if (precision != "int8" && precision != "int4") return "";
  // The input widths K of the projections: q/k/v and gate/up read d_model,
  // o reads the heads, down reads d_ff.
  const std::vector<std::pair<const char*, int64_t>> widths = {
      {"d_model", card.d_model},
      {"n_head x head_dim", static_cast<int64_t>(card.n_head) * card.effective_head_dim()},
      {"d_ff", card.d_ff}};
  for (const auto& [name, k] : widths) {
    if (group_size > 0 && k % group_size != 0) {
      return fmt::format("group_size {} does not divide {} = {} of card '{}' ({} quantizes groups of group_size "
                         "inputs)",
                         group_size, name, k, card.name, precision);
    }
    if (precision == "int4" && k % 2 != 0) {
      return fmt::format("int4 packs two inputs a byte, but {} = {} of card '{}' is odd", name, k, card.name);
    }
  }
  return "";
}

}  // namespace el::bench
