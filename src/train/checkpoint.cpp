#include "train/checkpoint.h"

#include <cmath>
#include <stdexcept>

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
  // Optional keys (absent in files of f32 runs without skipped steps).
  auto get_int = [&](const char* key, int64_t fallback) -> Result<int64_t> {
    const std::string v = get(key);
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      const int64_t x = std::stoll(v, &used);
      if (used == v.size()) return x;
    } catch (...) {
    }
    return make_error(fmt::format("metadata '{}' is not an integer: '{}'", key, v), path);
  };
  EL_TRY_ASSIGN(s.optimizer_steps, get_int("efficientllm.optimizer_steps", -1));
  EL_TRY_ASSIGN(s.loss_scale_good_steps, get_int("efficientllm.loss_scale_good_steps", 0));
  if (const std::string v = get("efficientllm.loss_scale"); !v.empty()) {
    try {
      size_t used = 0;
      s.loss_scale = std::stof(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
    } catch (...) {
      return make_error(fmt::format("metadata 'efficientllm.loss_scale' is not a number: '{}'", v),
                        path);
    }
    if (!(s.loss_scale > 0.0f) || !std::isfinite(s.loss_scale)) {
      return make_error(fmt::format("metadata 'efficientllm.loss_scale' must be a positive finite "
                                    "number, got '{}'", v),
                        path);
    }
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
      if (s.master.defined()) tensors.emplace_back("optimizer.master." + s.param.name, s.master);
    }
  }
  std::map<std::string, std::string> md = {
      {"efficientllm.format", kFormat},
      {"efficientllm.step", std::to_string(state.step)},
      {"efficientllm.loader_state", state.loader_state},
      {"efficientllm.config", state.config_json},
      {"efficientllm.model_card", state.model_card_yaml},
      {"efficientllm.optimizer_steps",
       std::to_string(state.optimizer_steps >= 0 ? state.optimizer_steps : state.step)},
  };
  if (state.loss_scale > 0.0f) {
    md["efficientllm.loss_scale"] = fmt::format("{}", state.loss_scale);  // shortest exact form
    md["efficientllm.loss_scale_good_steps"] = std::to_string(state.loss_scale_good_steps);
  }
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
    // An f32 model loading a bf16/f16 run takes the exact f32 master when
    // the file has one, not its rounding.
    const std::string master = "optimizer.master." + p.name;
    const bool from_master = dst.dtype() == DType::f32 && file.contains(master);
    EL_TRY(file.load_into(from_master ? master : p.name, dst));
  }
  if (optimizer) {
    for (auto& s : optimizer->slots()) {
      EL_TRY(file.load_into("optimizer.m." + s.param.name, s.m));
      EL_TRY(file.load_into("optimizer.v." + s.param.name, s.v));
      if (s.master.defined()) {
        // The master the AdamW constructor made is stale (it copied the
        // initial weights): take the file's, else the loaded parameter's.
        const std::string master = "optimizer.master." + s.param.name;
        EL_TRY(file.load_into(file.contains(master) ? master : s.param.name, s.master));
      }
    }
    optimizer->set_steps_taken(state.optimizer_steps >= 0 ? state.optimizer_steps : state.step);
  }
  return state;
}

}  // namespace el
