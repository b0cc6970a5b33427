#include "train/checkpoint.h"

#include "io/safetensors.h"

namespace el {
namespace {
constexpr const char* kFormat = "efficientllm.checkpoint.v1";

Result<CheckpointState> state_from_metadata(const std::string& path,
                                            const std::map<std::string, std::string>& md) {
  auto get = [&](const char* key) -> std::string {
    auto it = md.find(key);
    return it == md.end() ? std::string() : it->second;
  };
  if (get("efficientllm.format") != kFormat) {
    return make_error(fmt::format("not an EfficientLLM checkpoint (format '{}', expected '{}')",
                                  get("efficientllm.format"), kFormat),
                      path, "pass a file written by `efficientllm train --out`");
  }
  CheckpointState s;
  try {
    s.step = std::stoll(get("efficientllm.step"));
  } catch (...) {
    return make_error("metadata 'efficientllm.step' is not an integer", path);
  }
  s.loader_state = get("efficientllm.loader_state");
  s.config_json = get("efficientllm.config");
  s.model_card_yaml = get("efficientllm.model_card");
  return s;
}
}  // namespace

Status save_checkpoint(const std::string& path, const DecoderLM& model, AdamW* optimizer,
                       const CheckpointState& state) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : model.parameters()) tensors.emplace_back(p.name, p.tensor);
  if (optimizer) {
    for (auto& s : optimizer->slots()) {
      tensors.emplace_back("optimizer.m." + s.param.name, s.m);
      tensors.emplace_back("optimizer.v." + s.param.name, s.v);
    }
  }
  std::map<std::string, std::string> md = {
      {"efficientllm.format", kFormat},
      {"efficientllm.step", std::to_string(state.step)},
      {"efficientllm.loader_state", state.loader_state},
      {"efficientllm.config", state.config_json},
      {"efficientllm.model_card", state.model_card_yaml},
  };
  return io::save_safetensors(path, tensors, md);
}

Result<CheckpointState> read_checkpoint_state(const std::string& path) {
  EL_TRY_ASSIGN(auto file, io::SafetensorsFile::open(path));
  return state_from_metadata(path, file.metadata());
}

Result<CheckpointState> load_checkpoint(const std::string& path, DecoderLM& model,
                                        AdamW* optimizer) {
  EL_TRY_ASSIGN(auto file, io::SafetensorsFile::open(path));
  EL_TRY_ASSIGN(CheckpointState state, state_from_metadata(path, file.metadata()));
  // Compare the model's tensors with the file's first, so a checkpoint of
  // another card fails before anything is overwritten.
  for (const auto& p : model.parameters()) {
    auto info = file.info(p.name);
    if (!info.ok()) {
      return make_error(fmt::format("checkpoint has no tensor '{}' that model card '{}' needs",
                                    p.name, model.card().name),
                        path, "the checkpoint was written for a different model card");
    }
    if (info.value().shape != p.tensor.shape()) {
      return make_error(fmt::format("tensor '{}' has shape {} in the checkpoint but {} in model card '{}'",
                                    p.name, shape_str(info.value().shape), shape_str(p.tensor.shape()),
                                    model.card().name),
                        path, "the checkpoint was written for a different model card");
    }
  }
  for (const auto& p : model.parameters()) {
    Tensor dst = p.tensor;
    EL_TRY(file.load_into(p.name, dst));
  }
  if (optimizer) {
    for (auto& s : optimizer->slots()) {
      EL_TRY(file.load_into("optimizer.m." + s.param.name, s.m));
      EL_TRY(file.load_into("optimizer.v." + s.param.name, s.v));
    }
    optimizer->set_steps_taken(state.step);
  }
  return state;
}

}  // namespace el
