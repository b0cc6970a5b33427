#include "infer/model_loader.h"

#include <fmt/format.h>

#include "models/hf_model.h"
#include "quant/quant_io.h"
#include "train/checkpoint.h"

namespace el::infer {

Status ModelSource::validate() const {
  const int n = !hf_dir.empty() + !checkpoint.empty() + !card.empty() + !quantized_dir.empty();
  if (n != 1) {
    return make_error(fmt::format("{} model sources given; exactly one is needed", n), "model source",
                      "give one of --hf DIR, --init CHECKPOINT, --model CARD, --quantized DIR");
  }
  return Status();
}

std::string ModelSource::describe() const {
  if (!hf_dir.empty()) return "hf:" + hf_dir;
  if (!checkpoint.empty()) return "checkpoint:" + checkpoint;
  if (!quantized_dir.empty()) return "quantized:" + quantized_dir;
  return "card:" + card;
}

namespace {

// eos_token_id of config.json: a number or a list of numbers.
std::vector<int32_t> stop_ids_of(const io::HfConfig& config) {
  std::vector<int32_t> out;
  const auto it = config.passthrough.find("eos_token_id");
  if (it == config.passthrough.end()) return out;
  const nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_number_integer()) out.push_back(j.get<int32_t>());
  if (j.is_array()) {
    for (const auto& e : j) {
      if (e.is_number_integer()) out.push_back(e.get<int32_t>());
    }
  }
  return out;
}

}  // namespace

Result<LoadedModel> load_model(const ModelSource& source, Device device, DType dtype) {
  EL_TRY(source.validate());
  LoadedModel out;
  if (!source.hf_dir.empty()) {
    EL_TRY_ASSIGN(HfModel hf, load_hf_model(source.hf_dir, device, dtype));
    out.model = std::move(hf.model);
    out.tokenizer_dir = source.hf_dir;
    out.stop_ids = stop_ids_of(hf.config);
    return out;
  }
  if (!source.checkpoint.empty()) {
    EL_TRY_ASSIGN(CheckpointState st, read_checkpoint_state(source.checkpoint));
    if (st.model_card_yaml.empty()) {
      return make_error("the checkpoint has no model card in its metadata", source.checkpoint,
                        "use a checkpoint written by `efficientllm train`");
    }
    EL_TRY_ASSIGN(ModelCard card, parse_model_card(st.model_card_yaml, source.checkpoint));
    EL_TRY_ASSIGN(out.model, DecoderLM::create(card, device, source.seed, dtype, false));
    EL_TRY_ASSIGN(CheckpointState loaded, load_checkpoint(source.checkpoint, *out.model, nullptr));
    (void)loaded;
    return out;
  }
  if (!source.quantized_dir.empty()) {
    EL_TRY_ASSIGN(quant::QuantizedModelFile q, quant::load_quantized_model(source.quantized_dir, device, dtype));
    out.model = std::move(q.model);
    out.tokenizer_dir = q.tokenizer_dir;
    if (!q.metadata.hf_config_json.empty()) {
      Result<io::HfConfig> hf = io::parse_hf_config(q.metadata.hf_config_json, source.quantized_dir);
      if (hf.ok()) out.stop_ids = stop_ids_of(*hf);
    }
    out.quantization = {{"bits", q.metadata.spec.bits},
                        {"group_size", q.metadata.spec.group_size},
                        {"symmetric", q.metadata.spec.symmetric},
                        {"method", q.metadata.method},
                        {"quantized_slots", q.metadata.slots.size()},
                        {"lm_head_quantized", q.metadata.lm_head_quantized},
                        {"format_version", q.metadata.format_version}};
    return out;
  }
  EL_TRY_ASSIGN(ModelCard card, find_model_card(source.card));
  EL_TRY_ASSIGN(out.model, DecoderLM::create(card, device, source.seed, dtype));
  return out;
}

}  // namespace el::infer
