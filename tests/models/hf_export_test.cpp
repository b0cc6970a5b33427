// hf_export_test.cpp — save_hf_model for the families beyond the dense Llama
// layout: gpt_neox (Pythia), rwkv, mixtral, qwen2_moe and mamba.
//
// Each case is exported, then checked three ways:
//  - config.json: model_type, architectures and the family's keys, with the
//    values transformers reads (for a model loaded from a golden fixture of
//    tools/make_{pythia,rwkv,moe,mamba}_fixtures.py: the fixture's own
//    config values, v5 names mapped to the v4 ones we write);
//  - the tensors: exactly the names and shapes the family's loader expects
//    (hf_checkpoint_tensor_specs: per-expert MoE tensors, fused
//    query_key_value, ...);
//  - loaded back with load_hf_model: the same card (fixtures) or the same
//    config.json again (random cards, whose widths a family may spell
//    differently), bit-identical parameters and identical logits.
// Fixture models cover what transformers wrote; random cards (every
// parameter perturbed, so no bias is zero and no norm one) cover what the
// fixtures do not: a tied GPT-NeoX with the tanh GELU and a rotary share
// that is not a short binary fraction, an RWKV with a narrower WKV and no
// rescaling, a Mixtral with a sliding window and an explicit head_dim, a
// Qwen2-MoE with two shared experts, a Mamba with projection biases.
//
// With EL_HF_EXPORT_DIR set, every export is kept there (one directory per
// case, named below) with reference.safetensors beside it (input_ids, our f32
// logits) for `tools/make_hf_fixtures.py --check-export DIR...`, which loads
// each in transformers and compares.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/tape.h"
#include "common/hf_golden_util.h"
#include "common/hf_test_util.h"
#include "core/rng.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "models/hf_model.h"

namespace el {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class HfExport : public hftest::TempDirTest {
 protected:
  // Where case `name` is written: $EL_HF_EXPORT_DIR/<name> when set (kept for
  // the transformers check), else the test's temporary directory.
  std::string out_dir(const std::string& name) const {
    const char* keep = std::getenv("EL_HF_EXPORT_DIR");
    return keep && *keep ? (fs::path(keep) / name).string() : path(name);
  }
};

json read_json(const fs::path& p) { return json::parse(hftest::read_text(p)); }

// `a` and `b` equal as transformers would read them (numbers as doubles).
bool same_value(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

// Exports `model` as `model_type` ("" = inferred) into `out`, keeps the
// reference for the transformers check, and checks the tensors and the round
// trip. Returns the written config.json (null after a failure).
json export_and_check(const DecoderLM& model, const std::string& out, const std::string& model_type,
                      const io::HfSaveOptions& base, const Tensor& ids) {
  NoGrad no_grad;
  io::HfSaveOptions opt = base;
  opt.model_type = model_type;
  fs::remove_all(out);
  const Status s = save_hf_model(model, out, opt);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
  if (!s.ok()) return nullptr;
  const json cfg = read_json(fs::path(out) / "config.json");
  const std::string mt = io::hf_export_model_type(model.card(), model_type);
  EXPECT_EQ(cfg["model_type"], mt);

  // The tensors are the family's, names and shapes.
  auto ck = io::HfCheckpoint::open(out);
  EXPECT_TRUE(ck.ok()) << (ck.ok() ? "" : ck.error().message());
  if (!ck.ok()) return nullptr;
  std::vector<std::string> want;
  for (const auto& spec : hf_checkpoint_tensor_specs(ck.value())) {
    want.push_back(spec.name);
    auto info = ck->info(spec.name);
    EXPECT_TRUE(info.ok() && info->shape == spec.shape) << spec.name;
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ck->tensor_names(), want);

  // Loaded back: the same parameters, bit for bit, and the same logits.
  const DType dtype = model.parameters().front().tensor.dtype();
  auto back = load_hf_model(out, Device::cpu(), dtype);
  EXPECT_TRUE(back.ok()) << (back.ok() ? "" : back.error().message());
  if (!back.ok()) return nullptr;
  EXPECT_EQ(back->config.model_type, mt);
  const auto& pa = model.parameters();
  const auto& pb = back->model->parameters();
  EXPECT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    EXPECT_EQ(pa[i].name, pb[i].name);
    EXPECT_EQ(pa[i].tensor.dtype(), pb[i].tensor.dtype()) << pa[i].name;
    EXPECT_EQ(pa[i].tensor.to_floats(), pb[i].tensor.to_floats()) << pa[i].name;
  }
  EXPECT_EQ(model.forward(ids).to_floats(), back->model->forward(ids).to_floats()) << out;
  // Written again from the loaded card: the same config.json.
  io::HfConfigExport ex;
  ex.model_type = mt;
  ex.torch_dtype = io::hf_torch_dtype_name(dtype);
  ex.passthrough = opt.passthrough;
  auto again = io::hf_config_json(back->model->card(), ex);
  EXPECT_TRUE(again.ok()) << (again.ok() ? "" : again.error().message());
  if (again.ok()) {
    EXPECT_EQ(json::parse(again.value()), cfg) << out;
  }

  // For the transformers check: the ids and our f32 logits of the export.
  auto f32 = load_hf_model(out, Device::cpu(), DType::f32);
  EXPECT_TRUE(f32.ok());
  if (f32.ok()) {
    const Status w = io::save_safetensors((fs::path(out) / "reference.safetensors").string(),
                                          {{"input_ids", ids}, {"logits", f32->model->forward(ids)}},
                                          {{"format", "pt"}});
    EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message());
  }
  return cfg;
}

// ---- models loaded from the golden fixtures ------------------------------------------

struct FixtureCase {
  const char* family;  // tests/fixtures/<family>/<name>; "" for tests/fixtures/<name>
  const char* name;
  DType dtype;  // the checkpoint's: the export keeps it
  // Fixture config keys (v5 spelling) -> the key we write (v4 spelling).
  std::vector<std::pair<std::string, std::string>> renamed;
  // Keys the card does not hold (values that change nothing), not compared.
  std::vector<std::string> unheld;
};

const std::vector<std::pair<std::string, std::string>> kRopeTheta = {
    {"rope_parameters.rope_theta", "rope_theta"}};

std::vector<FixtureCase> fixture_cases() {
  const std::vector<std::pair<std::string, std::string>> neox = {
      {"rope_parameters.rope_theta", "rotary_emb_base"},
      {"rope_parameters.partial_rotary_factor", "rotary_pct"}};
  return {
      {"pythia", "pythia_parallel", DType::bf16, neox, {}},
      {"pythia", "pythia_sequential", DType::bf16, neox, {}},
      {"rwkv", "rwkv_tiny", DType::f32, {}, {}},
      {"rwkv", "rwkv_attn16", DType::f32, {}, {}},
      {"rwkv", "rwkv_rescale", DType::f32, {}, {}},
      {"", "mixtral", DType::f32, kRopeTheta, {}},
      // use_sliding_window is false: the window keys hold nothing.
      {"", "qwen2_moe", DType::f32, kRopeTheta, {"sliding_window", "max_window_layers"}},
      {"mamba", "mamba_tiny", DType::f32, {}, {}},
      {"mamba", "mamba_bias", DType::f32, {}, {}},
  };
}

// The value at a dotted path ("rope_parameters.rope_theta"), or null.
json at_path(const json& j, const std::string& path) {
  const json* v = &j;
  size_t from = 0;
  while (true) {
    const size_t dot = path.find('.', from);
    const std::string key = path.substr(from, dot - from);
    if (!v->is_object() || !v->contains(key)) return nullptr;
    v = &(*v)[key];
    if (dot == std::string::npos) return *v;
    from = dot + 1;
  }
}

TEST_F(HfExport, FixtureModelsWriteTheirOwnConfigAndTensors) {
  for (const FixtureCase& fc : fixture_cases()) {
    SCOPED_TRACE(fc.name);
    const std::string src = hftest::family_fixture_dir(fc.family, fc.name);
    auto a = load_hf_model(src, Device::cpu(), fc.dtype);
    ASSERT_TRUE(a.ok()) << a.error().message();
    io::HfSaveOptions opt;
    opt.passthrough = a->config.passthrough;
    const Tensor ids = hftest::open_reference(src).load("input_ids").value();
    const std::string out = out_dir(std::string("export_") + fc.name);
    // The family is inferred from the card alone.
    const json cfg = export_and_check(*a->model, out, "", opt, ids);
    ASSERT_FALSE(cfg.is_null());
    const json orig = read_json(fs::path(src) / "config.json");

    // Every key both files hold has the fixture's value ...
    for (const auto& [key, value] : cfg.items()) {
      if (std::find(fc.unheld.begin(), fc.unheld.end(), key) != fc.unheld.end()) continue;
      if (!orig.contains(key) || orig[key].is_null()) continue;  // null: the class default
      EXPECT_TRUE(same_value(value, orig[key]))
          << "key " << key << ": wrote " << value << ", fixture has " << orig[key];
    }
    // ... and so do the keys written under their v4 names.
    for (const auto& [theirs, ours] : fc.renamed) {
      const json v = at_path(orig, theirs);
      ASSERT_FALSE(v.is_null()) << theirs;
      EXPECT_TRUE(same_value(cfg[ours], v)) << ours << " vs " << theirs;
    }
    EXPECT_EQ(cfg["torch_dtype"], orig["dtype"]);

    // The card reads back unchanged.
    auto back = io::load_hf_config((fs::path(out) / "config.json").string());
    ASSERT_TRUE(back.ok()) << back.error().message();
    ModelCard ca = a->config.card, cb = back->card;
    ca.name = cb.name = ca.source_path = cb.source_path = "";
    EXPECT_EQ(ca, cb);
  }
}

// ---- random models from cards ----------------------------------------------------------

// A model of `yaml` (the name line added) with every parameter moved by
// N(0, 0.1^2) from its init, so biases, norm weights and RWKV's mixes all
// differ from their defaults and a misplaced tensor shows in the logits.
std::unique_ptr<DecoderLM> random_model(const std::string& name, const std::string& yaml) {
  auto card = parse_model_card("name: " + name + "\n" + yaml, name + ".yaml");
  EXPECT_TRUE(card.ok()) << (card.ok() ? "" : card.error().message());
  if (!card.ok()) return nullptr;
  auto model = DecoderLM::create(card.value(), Device::cpu(), /*seed=*/7);
  EXPECT_TRUE(model.ok()) << (model.ok() ? "" : model.error().message());
  if (!model.ok()) return nullptr;
  Rng rng(11);
  for (const auto& p : model.value()->parameters()) {
    std::vector<float> v = p.tensor.to_floats();
    for (float& x : v) x += 0.1f * rng.normal();
    Tensor dst = p.tensor;
    dst.copy_from(Tensor::from_floats(v, dst.shape()));
  }
  return std::move(model.value());
}

Tensor random_ids(int vocab, int64_t B, int64_t T) {
  Rng rng(5);
  std::vector<int32_t> v(static_cast<size_t>(B * T));
  for (auto& id : v) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return Tensor::from_ints(v, {B, T});
}

TEST_F(HfExport, GptNeoxRandomCards) {
  const std::string common =
      "n_layer: 2\nd_model: 48\nn_head: 4\nd_ff: 40\nvocab_size: 61\nmax_seq_len: 32\n"
      "norm: layernorm\nmlp_bias: true\n";
  // Tied, tanh GELU, parallel, a third of each 12-dim head rotated.
  auto tied = random_model("neox_tied", common +
                                            "mlp: gelu\ntied_embeddings: true\nqkv_bias: true\n"
                                            "o_bias: true\nparallel_residual: true\n"
                                            "rotary_dims: 4\nrope_theta: 500\n");
  ASSERT_TRUE(tied);
  const Tensor ids = random_ids(61, 2, 9);
  json cfg = export_and_check(*tied, out_dir("random_neox_tied"), "", {}, ids);
  ASSERT_FALSE(cfg.is_null());
  EXPECT_EQ(cfg["architectures"][0], "GPTNeoXForCausalLM");
  EXPECT_EQ(cfg["hidden_act"], "gelu_new");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  EXPECT_EQ(cfg["use_parallel_residual"], true);
  EXPECT_EQ(cfg["attention_bias"], true);
  EXPECT_EQ(cfg["rotary_emb_base"].get<double>(), 500.0);
  EXPECT_EQ(static_cast<int>(12 * cfg["rotary_pct"].get<double>()), 4);  // Python's int(x * pct)
  EXPECT_TRUE(cfg["rope_scaling"].is_null());
  for (const char* key : {"hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "vocab_size", "max_position_embeddings",
                          "layer_norm_eps", "initializer_range"}) {
    EXPECT_TRUE(cfg.contains(key)) << key;
  }
  // Untied, erf GELU, sequential, no attention biases, the whole head rotated.
  auto plain = random_model("neox_plain", common +
                                              "mlp: gelu_exact\ntied_embeddings: false\n"
                                              "qkv_bias: false\no_bias: false\n");
  ASSERT_TRUE(plain);
  cfg = export_and_check(*plain, out_dir("random_neox_plain"), "gpt_neox", {}, ids);
  ASSERT_FALSE(cfg.is_null());
  EXPECT_EQ(cfg["hidden_act"], "gelu");
  EXPECT_EQ(cfg["rotary_pct"].get<double>(), 1.0);
  EXPECT_EQ(cfg["attention_bias"], false);
  EXPECT_EQ(cfg["use_parallel_residual"], false);
  EXPECT_TRUE(fs::exists(fs::path(out_dir("random_neox_plain")) / "model.safetensors"));
  auto ck = io::HfCheckpoint::open(out_dir("random_neox_plain")).value();
  EXPECT_TRUE(ck.contains("embed_out.weight"));  // the Hub's Pythia name
  EXPECT_FALSE(ck.contains("gpt_neox.layers.0.attention.query_key_value.bias"));
}

TEST_F(HfExport, RwkvRandomCard) {
  auto model = random_model("rwkv_narrow",
                            "block: rwkv\nn_layer: 3\nd_model: 32\nd_ff: 72\nvocab_size: 50\n"
                            "max_seq_len: 40\nnorm: layernorm\nnorm_eps: 1.0e-4\n"
                            "pos_encoding: none\ntied_embeddings: false\n"
                            "rwkv_attention_hidden_size: 16\nrwkv_rescale_every: 0\n");
  ASSERT_TRUE(model);
  const json cfg =
      export_and_check(*model, out_dir("random_rwkv_narrow"), "", {}, random_ids(50, 2, 7));
  ASSERT_FALSE(cfg.is_null());
  EXPECT_EQ(cfg["architectures"][0], "RwkvForCausalLM");
  EXPECT_EQ(cfg["attention_hidden_size"], 16);
  EXPECT_EQ(cfg["intermediate_size"], 72);
  EXPECT_EQ(cfg["context_length"], 40);
  EXPECT_EQ(cfg["rescale_every"], 0);  // written: RwkvConfig's default is 6
  EXPECT_EQ(cfg["layer_norm_epsilon"].get<double>(), 1e-4);
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
}

TEST_F(HfExport, MoeRandomCards) {
  const std::string common =
      "n_layer: 2\nd_model: 32\nn_head: 4\nn_kv_head: 2\nd_ff: 48\nvocab_size: 61\n"
      "max_seq_len: 32\nmoe_experts: 3\nmoe_top_k: 2\nmoe_d_ff: 20\nmoe_z_loss_coef: 0\n";
  // Mixtral: explicit head_dim, a window longer than the inputs.
  auto mixtral = random_model("mixtral_window", common +
                                                    "head_dim: 16\nsliding_window: 16\n"
                                                    "rope_theta: 1000000\nmoe_aux_loss_coef: 0.05\n");
  ASSERT_TRUE(mixtral);
  const Tensor ids = random_ids(61, 2, 8);
  json cfg = export_and_check(*mixtral, out_dir("random_mixtral_window"), "", {}, ids);
  ASSERT_FALSE(cfg.is_null());
  EXPECT_EQ(cfg["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(cfg["num_local_experts"], 3);
  EXPECT_EQ(cfg["num_experts_per_tok"], 2);
  EXPECT_EQ(cfg["intermediate_size"], 20);  // the experts' width
  EXPECT_EQ(cfg["head_dim"], 16);
  EXPECT_EQ(cfg["sliding_window"], 16);
  EXPECT_EQ(cfg["output_router_logits"], true);
  EXPECT_EQ(cfg["router_aux_loss_coef"].get<double>(), 0.05);
  EXPECT_EQ(cfg["router_jitter_noise"].get<double>(), 0.0);
  auto ck = io::HfCheckpoint::open(out_dir("random_mixtral_window")).value();
  EXPECT_TRUE(ck.contains("model.layers.1.block_sparse_moe.experts.2.w3.weight"));
  EXPECT_TRUE(ck.contains("model.layers.0.block_sparse_moe.gate.weight"));

  // Qwen2-MoE: two shared experts of 10 are its one of 20; no aux loss.
  auto qwen = random_model("qwen2_moe_shared", common +
                                                   "qkv_bias: true\nmoe_norm_topk_prob: false\n"
                                                   "moe_shared_experts: 2\nmoe_shared_d_ff: 10\n"
                                                   "moe_aux_loss_coef: 0\n");
  ASSERT_TRUE(qwen);
  cfg = export_and_check(*qwen, out_dir("random_qwen2_moe_shared"), "", {}, ids);
  ASSERT_FALSE(cfg.is_null());
  EXPECT_EQ(cfg["architectures"][0], "Qwen2MoeForCausalLM");
  EXPECT_EQ(cfg["num_experts"], 3);
  EXPECT_EQ(cfg["moe_intermediate_size"], 20);
  EXPECT_EQ(cfg["intermediate_size"], 48);
  EXPECT_EQ(cfg["shared_expert_intermediate_size"], 20);
  EXPECT_EQ(cfg["norm_topk_prob"], false);
  EXPECT_EQ(cfg["qkv_bias"], true);
  EXPECT_EQ(cfg["decoder_sparse_step"], 1);
  EXPECT_EQ(cfg["mlp_only_layers"], json::array());
  EXPECT_EQ(cfg["output_router_logits"], false);
  EXPECT_FALSE(cfg.contains("head_dim"));  // Qwen2MoeConfig has none
  ck = io::HfCheckpoint::open(out_dir("random_qwen2_moe_shared")).value();
  EXPECT_TRUE(ck.contains("model.layers.0.mlp.experts.1.up_proj.weight"));
  EXPECT_TRUE(ck.contains("model.layers.0.mlp.shared_expert_gate.weight"));
  EXPECT_FALSE(ck.contains("model.layers.0.mlp.experts.gate_up_proj"));
}

TEST_F(HfExport, MambaRandomCardSharded) {
  auto model = random_model("mamba_biases",
                            "block: mamba\nn_layer: 2\nd_model: 24\nvocab_size: 40\n"
                            "max_seq_len: 64\npos_encoding: none\ntied_embeddings: false\n"
                            "mamba_d_state: 6\nmamba_d_conv: 3\nmamba_dt_rank: 3\n"
                            "mamba_proj_bias: true\nmamba_conv_bias: false\n");
  ASSERT_TRUE(model);
  io::HfSaveOptions opt;
  opt.max_shard_bytes = 8 * 1024;  // several shards and an index
  const json cfg =
      export_and_check(*model, out_dir("random_mamba_biases"), "", opt, random_ids(40, 2, 7));
  ASSERT_FALSE(cfg.is_null());
  EXPECT_TRUE(fs::exists(fs::path(out_dir("random_mamba_biases")) / io::kHfIndexFile));
  EXPECT_EQ(cfg["time_step_rank"], 3);
  EXPECT_EQ(cfg["use_bias"], true);
  EXPECT_EQ(cfg["use_conv_bias"], false);
  EXPECT_EQ(cfg["conv_kernel"], 3);
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
}

// A card the requested family cannot hold fails naming the key, before
// anything is written.
TEST_F(HfExport, UnexportableCardsWriteNothing) {
  auto neox = random_model("neox", "n_layer: 1\nd_model: 16\nn_head: 2\nd_ff: 24\nvocab_size: 20\n"
                                   "max_seq_len: 8\nnorm: layernorm\nmlp: gelu_exact\n"
                                   "mlp_bias: true\n");
  ASSERT_TRUE(neox);
  const std::pair<const char*, const char*> cases[] = {
      {"llama", "key 'norm'"}, {"rwkv", "key 'block'"}, {"mixtral", "key 'norm'"},
      {"gemma", "unsupported model_type 'gemma' for export"}};
  for (const auto& [mt, what] : cases) {
    io::HfSaveOptions opt;
    opt.model_type = mt;
    const std::string out = path(std::string("bad_") + mt);
    const Status s = save_hf_model(*neox, out, opt);
    ASSERT_FALSE(s.ok()) << mt;
    EXPECT_HAS(s.error().message(), what);
    EXPECT_FALSE(fs::exists(out)) << mt;
  }
}

}  // namespace
}  // namespace el
