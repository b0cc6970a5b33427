// peft_io_test.cpp — PEFT adapter directories: save -> load round trips
// (LoRA and DoRA) give the same logits, and every malformed directory is
// reported with the file and the key or tensor at fault.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/test_cards.h"
#include "finetune/peft_io.h"
#include "io/safetensors.h"

namespace el::finetune {
namespace {

ModelCard card() { return test::small_card("qkv_bias: true\n"); }

std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("el_peft_" + name);
  std::filesystem::remove_all(p);
  return p.string();
}

Tensor ids() { return Tensor::from_ints({1, 5, 9, 33, 2, 60, 7, 11}, {1, 8}); }

// A model with adapters whose B (and m) are not at their initial values.
std::unique_ptr<DecoderLM> adapted(bool dora, LoraConfig& cfg) {
  auto m = DecoderLM::create(card(), Device::cpu(), 7).value();
  cfg.r = 4;
  cfg.alpha = 8.f;
  cfg.use_dora = dora;
  cfg.target_modules = {"q_proj", "v_proj", "down_proj"};
  EXPECT_TRUE(apply_lora(*m, cfg).ok());
  Rng rng(3);
  for (const auto& p : m->parameters()) {
    if (p.name.find("lora_B") == std::string::npos && p.name.find("magnitude") == std::string::npos) continue;
    std::vector<float> v = p.tensor.to_floats();
    for (float& x : v) x += 0.05f * rng.normal();
    Tensor(p.tensor).copy_from(Tensor::from_floats(v, p.tensor.shape()));
  }
  return m;
}

TEST(PeftIo, SaveThenLoadGivesTheSameLogits) {
  for (bool dora : {false, true}) {
    LoraConfig cfg;
    auto m = adapted(dora, cfg);
    const std::vector<float> want = m->forward(ids()).to_floats();
    const std::string dir = temp_dir(dora ? "dora" : "lora");
    ASSERT_TRUE(save_peft_adapter(*m, cfg, dir, "tiny").ok());
    // The config as peft writes it.
    std::ifstream f(dir + "/adapter_config.json");
    const auto j = nlohmann::json::parse(f);
    EXPECT_EQ(j["peft_type"], "LORA");
    EXPECT_EQ(j["r"], 4);
    EXPECT_EQ(j["use_dora"], dora);
    EXPECT_EQ(j["target_modules"].size(), 6u);  // 3 projections x 2 layers, as slot paths
    const auto file = io::SafetensorsFile::open(dir + "/adapter_model.safetensors").value();
    EXPECT_TRUE(file.contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    EXPECT_EQ(file.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"), dora);

    auto fresh = DecoderLM::create(card(), Device::cpu(), 7).value();
    auto s = load_peft_adapter(*fresh, dir);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->adapted_modules, 6);
    const std::vector<float> got = fresh->forward(ids()).to_floats();
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6) << i;
  }
}

// Writes a directory from a config and tensors, for the error cases.
std::string write_dir(const std::string& name, const nlohmann::json& cfg,
                      const std::vector<std::pair<std::string, Tensor>>& tensors) {
  const std::string dir = temp_dir(name);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/adapter_config.json") << cfg.dump();
  EXPECT_TRUE(io::save_safetensors(dir + "/adapter_model.safetensors", tensors).ok());
  return dir;
}

std::string load_error(const std::string& dir) {
  auto m = DecoderLM::create(card(), Device::cpu(), 7).value();
  const auto r = load_peft_adapter(*m, dir);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  // The model is unchanged on error: no adapters were applied.
  for (const auto& p : m->parameters()) EXPECT_EQ(p.name.find("lora_"), std::string::npos) << p.name;
  return r.error().message() + " @ " + r.error().where;
}

TEST(PeftIo, BadDirectoriesAreReported) {
  const nlohmann::json good = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                               {"target_modules", {"q_proj"}}};
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
  const Tensor a = Tensor::zeros({4, 32}), b = Tensor::zeros({32, 4});

  std::string msg = load_error(write_dir("shape", good, {{q + ".lora_A.weight", Tensor::zeros({4, 31})},
                                                         {q + ".lora_B.weight", b}}));
  EXPECT_NE(msg.find("has shape [4, 31], expected [4, 32]"), std::string::npos) << msg;

  msg = load_error(write_dir("unknown", good, {{q + ".lora_A.weight", a}, {q + ".lora_B.weight", b},
                                              {"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", a}}));
  EXPECT_NE(msg.find("model.layers.9.self_attn.q_proj', which this model does not have"), std::string::npos) << msg;

  msg = load_error(write_dir("incomplete", good, {{q + ".lora_A.weight", a}}));
  EXPECT_NE(msg.find("adapter of 'model.layers.0.self_attn.q_proj' is incomplete"), std::string::npos) << msg;

  msg = load_error(write_dir("stray", good, {{q + ".lora_A.weight", a}, {q + ".lora_B.weight", b},
                                            {"model.embed_tokens.weight", Tensor::zeros({61, 32})}}));
  EXPECT_NE(msg.find("unexpected tensor 'model.embed_tokens.weight'"), std::string::npos) << msg;

  nlohmann::json other = good;
  other["peft_type"] = "IA3";
  msg = load_error(write_dir("type", other, {{q + ".lora_A.weight", a}, {q + ".lora_B.weight", b}}));
  EXPECT_NE(msg.find("peft_type 'IA3' is not supported"), std::string::npos) << msg;
  EXPECT_NE(msg.find("adapter_config.json: key 'peft_type'"), std::string::npos) << msg;

  other = good;
  other["rank_pattern"] = {{"q_proj", 8}};
  msg = load_error(write_dir("pattern", other, {{q + ".lora_A.weight", a}, {q + ".lora_B.weight", b}}));
  EXPECT_NE(msg.find("key 'rank_pattern'"), std::string::npos) << msg;

  other = good;
  other.erase("r");
  msg = load_error(write_dir("missing_r", other, {{q + ".lora_A.weight", a}, {q + ".lora_B.weight", b}}));
  EXPECT_NE(msg.find("missing or ill-typed field"), std::string::npos) << msg;
}

}  // namespace
}  // namespace el::finetune
