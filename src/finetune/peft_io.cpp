#include "finetune/peft_io.h"

#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/safetensors.h"

namespace el::finetune {
namespace {

constexpr const char* kSuffixA = ".lora_A.weight";
constexpr const char* kSuffixB = ".lora_B.weight";
constexpr const char* kSuffixM = ".lora_magnitude_vector";

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// "model.layers.0.self_attn.q_proj.lora_A.weight" -> slot path and which tensor ('A', 'B', 'M').
bool split_adapter_name(const std::string& name, std::string& slot, char& kind) {
  for (const auto& [suffix, k] : {std::pair<const char*, char>{kSuffixA, 'A'}, {kSuffixB, 'B'}, {kSuffixM, 'M'}}) {
    if (ends_with(name, suffix)) {
      slot = name.substr(0, name.size() - std::string(suffix).size());
      kind = k;
      return true;
    }
  }
  return false;
}

std::string shape_text(const Shape& s) { return shape_str(s); }

nlohmann::json init_json(LoraConfig::Init init) {
  switch (init) {
    case LoraConfig::Init::gaussian: return "gaussian";
    case LoraConfig::Init::pissa: return "pissa";
    default: return true;
  }
}

// peft's init_lora_weights. When loading, A and B come from the file, so an
// initialisation that only draws A and B does not matter (true, false,
// "gaussian", "eva", "orthogonal"); one that also changes the base weights
// does: "pissa" is implemented (the base becomes the SVD residual again),
// the others are refused rather than loaded onto the wrong base.
Status parse_init(const nlohmann::json& v, const std::string& where, LoraConfig::Init& init) {
  init = LoraConfig::Init::kaiming;
  if (v.is_null() || v.is_boolean()) return {};
  if (!v.is_string()) return make_error("expected true, false or a method name", where);
  const std::string name = v.get<std::string>();
  if (name == "gaussian") {
    init = LoraConfig::Init::gaussian;
  } else if (name == "pissa") {
    init = LoraConfig::Init::pissa;
  } else if (name.rfind("pissa_niter_", 0) == 0) {
    return make_error(fmt::format("init_lora_weights '{}' (PiSSA through a randomized SVD) is not supported", name),
                      where,
                      "its base residual depends on torch's random numbers and cannot be rebuilt; "
                      "make the adapter with \"pissa\" (full SVD), or convert it to plain LoRA in peft "
                      "(save_pretrained with path_initial_model_for_weight_conversion)");
  } else if (name == "eva" || name == "orthogonal") {
    init = LoraConfig::Init::kaiming;  // A and B are loaded; the base is unchanged
  } else {
    return make_error(fmt::format("init_lora_weights '{}' is not supported", name), where,
                      "supported: true, false, \"gaussian\", \"pissa\" (and \"eva\", \"orthogonal\" "
                      "when loading); olora, corda, loftq and lora_ga change the base weights in ways "
                      "not implemented here");
  }
  return {};
}

}  // namespace

Status save_peft_adapter(const DecoderLM& model, const LoraConfig& config, const std::string& dir,
                         const std::string& base_model) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::set<std::string> slots;
  for (const auto& p : model.parameters()) {
    std::string slot;
    char kind = 0;
    if (!split_adapter_name(p.name, slot, kind)) continue;
    tensors.emplace_back(kPeftPrefix + p.name, p.tensor);
    slots.insert(slot);
  }
  if (tensors.empty()) {
    return make_error("the model has no LoRA adapters to save", dir, "apply LoRA/DoRA first");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("cannot create the adapter directory: " + ec.message(), dir);
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model)},
      {"r", config.r},
      {"lora_alpha", config.alpha},
      {"lora_dropout", config.dropout},
      {"target_modules", std::vector<std::string>(slots.begin(), slots.end())},
      {"use_rslora", config.use_rslora},
      {"use_dora", config.use_dora},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"init_lora_weights", init_json(config.init)},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"revision", nullptr},
  };
  EL_TRY(io::save_safetensors(dir + "/" + kPeftWeightsFile, tensors, {{"format", "pt"}}));
  return io::write_file_atomic(dir + "/" + kPeftConfigFile, cfg.dump(2) + "\n");
}

Result<LoraConfig> read_peft_config(const std::string& path) {
  EL_TRY_ASSIGN(std::string text, io::read_file(path));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return make_error(std::string("not valid JSON: ") + e.what(), path);
  }
  if (!j.is_object()) return make_error("expected a JSON object", path);
  auto where = [&](const char* key) { return path + ": key '" + key + "'"; };
  const std::string type = j.value("peft_type", "");
  if (type != "LORA") {
    return make_error(fmt::format("peft_type '{}' is not supported (only LORA: LoRA, RSLoRA, DoRA)", type),
                      where("peft_type"));
  }
  // Features that would change the adapted function if ignored.
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(key) && !j[key].is_null() && !j[key].empty()) {
      return make_error("per-module ranks/alphas are not supported", where(key));
    }
  }
  for (const char* key : {"layers_to_transform", "modules_to_save"}) {
    if (j.contains(key) && !j[key].is_null()) return make_error("not supported", where(key));
  }
  if (j.value("bias", std::string("none")) != "none") {
    return make_error("only bias \"none\" is supported (biases stay frozen)", where("bias"));
  }
  if (j.value("fan_in_fan_out", false)) return make_error("fan_in_fan_out is not supported", where("fan_in_fan_out"));
  LoraConfig c;
  try {
    c.r = j.at("r").get<int64_t>();
    c.alpha = j.at("lora_alpha").get<float>();
    c.dropout = j.value("lora_dropout", 0.0f);
    c.use_rslora = j.value("use_rslora", false);
    c.use_dora = j.value("use_dora", false);
    if (j.contains("init_lora_weights")) EL_TRY(parse_init(j["init_lora_weights"], where("init_lora_weights"), c.init));
    const auto& t = j.at("target_modules");
    if (t.is_string()) {
      if (t.get<std::string>() != "all-linear") {
        return make_error("a regular-expression target_modules is not supported (give a list)",
                          where("target_modules"));
      }
    } else {
      c.target_modules = t.get<std::vector<std::string>>();
    }
  } catch (const nlohmann::json::exception& e) {
    return make_error(std::string("missing or ill-typed field: ") + e.what(), path,
                      "r, lora_alpha and target_modules are required");
  }
  EL_TRY(validate_lora_config(c));
  return c;
}

Result<LoraSummary> load_peft_adapter(DecoderLM& model, const std::string& dir) {
  const std::string config_path = dir + "/" + kPeftConfigFile;
  const std::string weights_path = dir + "/" + kPeftWeightsFile;
  EL_TRY_ASSIGN(LoraConfig config, read_peft_config(config_path));
  EL_TRY_ASSIGN(io::SafetensorsFile file, io::SafetensorsFile::open(weights_path));

  // The model's projection slots and their shapes.
  std::map<std::string, std::pair<int64_t, int64_t>> slot_dims;  // path -> (in, out)
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    slot_dims[path] = {slot->in_features(), slot->out_features()};
  });
  // Every tensor must be an adapter tensor of a slot the model has, with the
  // shape the config's rank implies.
  std::map<std::string, std::string> kinds;  // slot -> kinds present ("AB", "ABM")
  for (const std::string& key : file.names()) {
    std::string slot;
    char kind = 0;
    if (key.rfind(kPeftPrefix, 0) != 0 || !split_adapter_name(key.substr(std::string(kPeftPrefix).size()), slot, kind)) {
      return make_error(fmt::format("unexpected tensor '{}'", key), weights_path,
                        "expected base_model.model.<slot>.lora_A.weight / lora_B.weight / lora_magnitude_vector");
    }
    const auto it = slot_dims.find(slot);
    if (it == slot_dims.end()) {
      return make_error(fmt::format("tensor '{}' is for '{}', which this model does not have", key, slot),
                        weights_path, "is the adapter for another model (layer count, MLP kind)?");
    }
    const auto [in, out] = it->second;
    const Shape want = kind == 'A' ? Shape{config.r, in} : kind == 'B' ? Shape{out, config.r} : Shape{out};
    EL_TRY_ASSIGN(auto info, file.info(key));
    if (info.shape != want) {
      return make_error(fmt::format("tensor '{}' has shape {}, expected {} (r = {} from {})", key,
                                    shape_text(info.shape), shape_text(want), config.r, kPeftConfigFile),
                        weights_path);
    }
    kinds[slot] += kind;
  }
  if (kinds.empty()) return make_error("no adapter tensors", weights_path);
  for (const auto& [slot, k] : kinds) {
    const bool a = k.find('A') != std::string::npos, b = k.find('B') != std::string::npos,
               m = k.find('M') != std::string::npos;
    if (!a || !b || m != config.use_dora) {
      return make_error(fmt::format("adapter of '{}' is incomplete: has {}{}{}, expected lora_A, lora_B{}",
                                    slot, a ? "lora_A " : "", b ? "lora_B " : "", m ? "magnitude" : "",
                                    config.use_dora ? " and lora_magnitude_vector (use_dora)" : ""),
                        weights_path);
    }
  }
  // Apply to exactly the slots the file holds, then load.
  LoraConfig applied = config;
  applied.target_modules.clear();
  for (const auto& [slot, k] : kinds) applied.target_modules.push_back(slot);
  EL_TRY_ASSIGN(LoraSummary summary, apply_lora(model, applied));
  std::map<std::string, Tensor> params;
  for (const auto& p : model.parameters()) params[p.name] = p.tensor;
  for (const std::string& key : file.names()) {
    Tensor dst = params.at(key.substr(std::string(kPeftPrefix).size()));
    EL_TRY(file.load_into(key, dst));
  }
  return summary;
}

}  // namespace el::finetune
