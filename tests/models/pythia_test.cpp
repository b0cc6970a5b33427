// pythia_test.cpp — the GPT-NeoX (Pythia) layout built from the shared
// blocks: its card keys (parallel_residual, rotary_dims, mlp_bias, mlp
// gelu_exact) with their errors, config.json model_type gpt_neox, the fused
// query_key_value conversion, parameter counts, the gradient through a tiny
// Pythia block against finite differences, the cached forward against the
// full one, and checkpoints that do not match their config (named tensors).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/tape.h"
#include "common/hf_test_util.h"
#include "common/model_test_util.h"
#include "common/ops_harness.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/decoder_lm.h"
#include "models/hf_model.h"
#include "nn/blocks.h"
#include "nn/kv_cache.h"
#include "nn/rope_scaling.h"

namespace el {
namespace {

using test::random_ids;

namespace fs = std::filesystem;

// A tiny Pythia: head dim 8, a quarter of it rotated.
std::string pythia_yaml(const std::string& extra = "") {
  return "name: pythia_tiny\nn_layer: 2\nd_model: 32\nn_head: 4\nd_ff: 128\nvocab_size: 61\n"
         "max_seq_len: 32\nnorm: layernorm\nmlp: gelu_exact\nqkv_bias: true\no_bias: true\n"
         "mlp_bias: true\nparallel_residual: true\nrotary_dims: 2\n" +
         extra;
}

ModelCard pythia_card(const std::string& extra = "") {
  return parse_model_card(pythia_yaml(extra), "pythia.yaml").value();
}

std::string card_error(const std::string& yaml) {
  auto r = parse_model_card(yaml, "card.yaml");
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message();
}

TEST(PythiaCard, ParsesAndRoundTrips) {
  const ModelCard c = pythia_card();
  EXPECT_TRUE(c.parallel_residual);
  EXPECT_EQ(c.rotary_dims, 2);
  EXPECT_EQ(c.effective_rotary_dims(), 2);
  EXPECT_TRUE(c.mlp_bias);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::gelu_exact);
  const std::string yaml = model_card_to_yaml(c);
  EXPECT_HAS(yaml, "mlp: gelu_exact\n");
  EXPECT_HAS(yaml, "parallel_residual: true\nrotary_dims: 2\nmlp_bias: true\n");
  ModelCard back = parse_model_card(yaml, "pythia.yaml").value();
  EXPECT_EQ(back, c);
  // Defaults are not written: cards without the keys keep their text.
  ModelCard plain = c;
  plain.parallel_residual = plain.mlp_bias = false;
  plain.rotary_dims = 0;
  const std::string t = model_card_to_yaml(plain);
  for (const char* key : {"parallel_residual", "rotary_dims", "mlp_bias"}) {
    EXPECT_EQ(t.find(key), std::string::npos) << key;
  }
  EXPECT_EQ(plain.effective_rotary_dims(), 8);
}

TEST(PythiaCard, RotaryDimsErrorsNameTheField) {
  std::string odd = pythia_yaml();
  odd.replace(odd.find("rotary_dims: 2"), 14, "rotary_dims: 3");
  EXPECT_HAS(card_error(odd), "card.yaml:14: rotary_dims must be even");
  const std::string base =
      "name: x\nn_layer: 1\nd_model: 32\nn_head: 4\nd_ff: 8\nvocab_size: 8\nmax_seq_len: 8\n";
  EXPECT_HAS(card_error(base + "rotary_dims: 3\n"), "rotary_dims must be even and in [2, head_dim 8]");
  EXPECT_HAS(card_error(base + "rotary_dims: 10\n"), "got 10");
  EXPECT_HAS(card_error(base + "rotary_dims: -2\n"), "card.yaml:8: rotary_dims must be even");
  EXPECT_HAS(card_error(base + "pos_encoding: alibi\nrotary_dims: 4\n"),
             "rotary_dims (4) needs pos_encoding: rope");
  EXPECT_HAS(card_error(base + "mlp: gelu_fast\n"), "mlp");
  EXPECT_HAS(card_error(base + "parallel_residual: 3\n"), "parallel_residual");
  // validate_model_card names the field of a card built in code.
  ModelCard c = pythia_card();
  c.rotary_dims = 12;
  const Status s = validate_model_card(c);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message(), "pythia.yaml: key 'rotary_dims'");
  c.rotary_dims = 2;
  c.mlp = static_cast<ModelCard::Mlp>(7);
  EXPECT_HAS(validate_model_card(c).error().message(), "unknown mlp value 7");
}

TEST(PythiaCard, RotaryFrequenciesCoverTheRotatedDims) {
  const ModelCard c = pythia_card("rope_theta: 500\n");
  const std::vector<float> f = rope_inv_freq_values(c);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  ModelCard wide = pythia_card();
  wide.rotary_dims = 4;
  const std::vector<float> g = rope_inv_freq_values(wide);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_FLOAT_EQ(g[1], static_cast<float>(1.0 / 100.0));  // 10000^(-2/4)
}

// configs/models/pythia-*.yaml: the paper's attention-free Pythia sizes
// (hidden / layers / heads, FFN 4x, Qwen2.5 vocabulary) and the counts their
// comments state.
TEST(PythiaCard, BuiltinCardsHaveThePaperShapes) {
  const struct {
    const char* name;
    int d, layers, heads;
    int64_t params;
  } cards[] = {{"pythia-0.5b", 1024, 24, 16, 613476352},
               {"pythia-1.5b", 2048, 32, 16, 2233798656},
               {"pythia-3b", 2560, 32, 32, 3295564800},
               {"pythia-tiny", 128, 2, 4, 1445376}};
  for (const auto& e : cards) {
    auto r = find_model_card(e.name);
    ASSERT_TRUE(r.ok()) << r.error().message();
    const ModelCard& c = r.value();
    EXPECT_EQ(c.d_model, e.d) << e.name;
    EXPECT_EQ(c.n_layer, e.layers) << e.name;
    EXPECT_EQ(c.n_head, e.heads) << e.name;
    EXPECT_EQ(c.d_ff, 4 * e.d) << e.name;
    EXPECT_EQ(c.effective_rotary_dims() * 4, c.effective_head_dim()) << e.name;
    EXPECT_TRUE(c.parallel_residual && c.mlp_bias && c.qkv_bias && c.o_bias) << e.name;
    EXPECT_EQ(c.mlp, ModelCard::Mlp::gelu_exact) << e.name;
    EXPECT_EQ(c.norm, ModelCard::Norm::layernorm) << e.name;
    EXPECT_FALSE(c.tied_embeddings) << e.name;
    EXPECT_EQ(count_parameters(c).total, e.params) << e.name;
    if (std::string(e.name) != "pythia-tiny") {
      EXPECT_EQ(c.vocab_size, 151936) << e.name;
    }
  }
}

TEST(PythiaModel, ParameterCountsMatchTheBuiltModel) {
  for (int variant = 0; variant < 3; ++variant) {
    ModelCard c = pythia_card();
    c.tied_embeddings = variant == 1;
    if (variant == 2) c.mlp = ModelCard::Mlp::swiglu;  // gate/up/down, all with biases
    auto m = DecoderLM::create(c, Device::cpu(), 1).value();
    EXPECT_EQ(count_parameters(c).total, m->num_parameters()) << variant;
    EXPECT_EQ(m->parameters().size(), decoder_lm_tensor_specs(c).size()) << variant;
  }
  auto m = DecoderLM::create(pythia_card(), Device::cpu(), 1).value();
  std::vector<std::string> names;
  for (const auto& p : m->parameters())
    if (p.name.rfind("model.layers.0.mlp.", 0) == 0) names.push_back(p.name.substr(19));
  EXPECT_EQ(names, (std::vector<std::string>{"up_proj.weight", "up_proj.bias", "down_proj.weight",
                                             "down_proj.bias"}));
}

// x + attn(ln1(x)) + mlp(ln2(x)) (and the sequential form) through the block's
// ops: the gradient of the block input and of weights of every kind (norm
// weight and bias, dense and MLP weights and biases) against central
// differences. q/k/v stay stacked, so the partial rotary runs through
// split_qkv_rope and its backward.
TEST(PythiaModel, BlockGradientMatchesFiniteDifferences) {
  for (const bool parallel : {true, false}) {
    ModelCard card = pythia_card();
    card.parallel_residual = parallel;
    card.d_model = 16;
    card.n_head = 2;
    card.n_kv_head = 2;
    card.d_ff = 12;
    card.rotary_dims = 4;
    ASSERT_TRUE(validate_model_card(card).ok());
    auto block = std::make_shared<DecoderBlock>(card, Device::cpu());
    auto next = std::make_shared<Norm>(16, ModelCard::Norm::layernorm, 1e-5f, Device::cpu());
    const Tensor freq = rope_inv_freq_for(card, Device::cpu());
    auto& o = dynamic_cast<Linear&>(*block->self_attn->o_proj);
    auto& up = dynamic_cast<Linear&>(*block->mlp.up_proj);
    auto& down = dynamic_cast<Linear&>(*block->mlp.down_proj);
    std::vector<Tensor*> weights = {&block->input_layernorm.weight, &block->input_layernorm.bias,
                                    &block->post_attention_layernorm.bias, &o.weight, &o.bias,
                                    &up.weight, &up.bias, &down.weight};
    Rng rng(parallel ? 3 : 4);
    test::OpInstance inst;
    inst.inputs.push_back(test::random_tensor({2, 5, 16}, rng));
    for (Tensor* w : weights) {
      Tensor t = test::random_tensor(w->shape(), rng, 0.5f);
      if (w == &block->input_layernorm.weight) t = ops::add(t, Tensor::full(w->shape(), 1.0f));
      inst.inputs.push_back(t);
    }
    // Random q/k/v (stacked) so attention is not uniform.
    for (auto* slot : {block->self_attn->q_proj.get(), block->self_attn->k_proj.get(),
                       block->self_attn->v_proj.get()}) {
      auto& l = dynamic_cast<Linear&>(*slot);
      l.weight.copy_from(test::random_tensor(l.weight.shape(), rng, 0.5f));
      l.bias.copy_from(test::random_tensor(l.bias.shape(), rng, 0.2f));
    }
    inst.differentiable.assign(inst.inputs.size(), true);
    inst.max_fd_elements = 20;
    inst.run = [block, next, weights, freq](const std::vector<Tensor>& in) {
      for (size_t i = 0; i < weights.size(); ++i) *weights[i] = in[i + 1];
      const Tensor normed = block->input_layernorm.forward(in[0]);
      return block->forward(in[0], normed, *next, freq).normed;
    };
    EXPECT_TRUE(test::gradients_match(inst, 9)) << "parallel " << parallel;
  }
}

// Prefill, then decode steps (and chunks), each against the full forward.
TEST(PythiaModel, CachedForwardMatchesFullForward) {
  NoGrad no_grad;
  for (const bool parallel : {true, false}) {
    for (const DType dt : {DType::f32, DType::bf16}) {
      ModelCard card = pythia_card();
      card.parallel_residual = parallel;
      auto model = DecoderLM::create(card, Device::cpu(), 3, dt).value();
      const int64_t B = 2, T = 10, V = 61;
      const Tensor ids = random_ids(B, T, V, 5);
      const std::vector<float> full = model->forward(ids).to_floats();
      for (const int64_t chunk : {int64_t{1}, int64_t{3}}) {
        KvCache cache = KvCache::create(model->card(), B, T, dt, Device::cpu()).value();
        const std::vector<float> all = ids.to_floats();
        for (int64_t t0 = 0; t0 < T;) {
          const int64_t t1 = std::min(T, t0 == 0 ? int64_t{4} : t0 + chunk);
          std::vector<int32_t> step;
          std::vector<double> want;
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t t = t0; t < t1; ++t) {
              step.push_back(static_cast<int32_t>(all[b * T + t]));
              want.insert(want.end(), full.begin() + (b * T + t) * V,
                          full.begin() + (b * T + t + 1) * V);
            }
          }
          const Tensor logits = model->forward_cached(Tensor::from_ints(step, {B, t1 - t0}), cache);
          cache.advance(static_cast<int32_t>(t1 - t0));
          const test::Tolerance tol = dt == DType::f32 ? test::Tolerance{2e-5, 2e-4}
                                                       : test::Tolerance{0.05, 0.02};
          EXPECT_TRUE(test::all_close(logits.to_floats(), want, tol,
                                      fmt::format("parallel {} {} chunk {} tokens [{}, {})", parallel,
                                                  dtype_name(dt), chunk, t0, t1)));
          t0 = t1;
        }
      }
    }
  }
}

// ---- config.json and checkpoints -----------------------------------------------------

TEST(PythiaHf, QkvRowsGoFromPerHeadToStacked) {
  // H = 2, D = 2, bias-like rows of 1: head h holds q(2) k(2) v(2).
  std::vector<float> fused(12);
  for (int i = 0; i < 12; ++i) fused[i] = static_cast<float>(i);
  EXPECT_EQ(gpt_neox_qkv_to_stacked(fused, 2, 2, 1),
            (std::vector<float>{0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11}));
  // Rows of 2 move whole.
  std::vector<float> w(24);
  for (int i = 0; i < 24; ++i) w[i] = static_cast<float>(i);
  const std::vector<float> s = gpt_neox_qkv_to_stacked(w, 2, 2, 2);
  EXPECT_EQ(std::vector<float>(s.begin(), s.begin() + 8),
            (std::vector<float>{0, 1, 2, 3, 12, 13, 14, 15}));  // q of heads 0, 1
  EXPECT_EQ(std::vector<float>(s.begin() + 8, s.begin() + 12), (std::vector<float>{4, 5, 6, 7}));
}

nlohmann::json v4_config() {
  return {{"model_type", "gpt_neox"}, {"hidden_size", 64},       {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"intermediate_size", 256}, {"vocab_size", 128},
          {"rotary_pct", 0.25},       {"rotary_emb_base", 10000}, {"use_parallel_residual", true},
          {"hidden_act", "gelu"},     {"layer_norm_eps", 1e-5},   {"max_position_embeddings", 2048},
          {"rope_scaling", nullptr},  {"tie_word_embeddings", false},
          {"attention_dropout", 0.0}, {"hidden_dropout", 0.0},    {"eos_token_id", 0}};
}

std::string config_error(const nlohmann::json& j) {
  auto r = io::parse_hf_config(j.dump(), "m/config.json");
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.error().message();
}

TEST(PythiaHf, ReadsV4AndV5Configs) {
  const io::HfConfig v4 = io::parse_hf_config(v4_config().dump(), "m/config.json", "p").value();
  const ModelCard& c = v4.card;
  EXPECT_EQ(v4.model_type, "gpt_neox");
  EXPECT_EQ(c.norm, ModelCard::Norm::layernorm);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::gelu_exact);
  EXPECT_TRUE(c.qkv_bias && c.o_bias && c.mlp_bias && c.parallel_residual);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.rotary_dims, 4);
  EXPECT_EQ(c.d_ff, 256);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(v4.passthrough.at("eos_token_id"), "0");
  EXPECT_TRUE(validate_model_card(c).ok());
  nlohmann::json j = v4_config();
  j.erase("rotary_pct");
  j.erase("rotary_emb_base");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500.0},
                          {"partial_rotary_factor", 1.0}};
  j["use_parallel_residual"] = false;
  j["hidden_act"] = "gelu_new";
  j["attention_bias"] = false;
  const ModelCard v5 = io::parse_hf_config(j.dump(), "m/config.json").value().card;
  EXPECT_EQ(v5.rotary_dims, 0);  // the whole head
  EXPECT_FLOAT_EQ(v5.rope_theta, 500.f);
  EXPECT_EQ(v5.mlp, ModelCard::Mlp::gelu);
  EXPECT_FALSE(v5.parallel_residual || v5.qkv_bias || v5.o_bias);
}

TEST(PythiaHf, ConfigErrorsNameTheKey) {
  auto with = [](const char* key, nlohmann::json v) {
    nlohmann::json j = v4_config();
    j[key] = std::move(v);
    return j;
  };
  EXPECT_HAS(config_error(with("hidden_act", "relu")),
             "m/config.json: key 'hidden_act': hidden_act 'relu' is not supported for gpt_neox");
  EXPECT_HAS(config_error(with("rotary_pct", 0.1)), "key 'rotary_pct'");
  EXPECT_HAS(config_error(with("rotary_pct", 0.1)), "1 rotary dims of the head's 16");
  EXPECT_HAS(config_error(with("hidden_dropout", 0.1)), "key 'hidden_dropout'");
  EXPECT_HAS(config_error(with("num_attention_heads", 5)), "key 'num_attention_heads'");
  EXPECT_HAS(config_error(with("intermediate_size", 0)), "key 'intermediate_size'");
  EXPECT_HAS(config_error(with("hidden_size", 0)), "key 'hidden_size'");
  EXPECT_HAS(config_error(with("layer_norm_eps", -1e-5)), "key 'layer_norm_eps'");
  EXPECT_HAS(config_error(with("use_parallel_residual", "yes")), "key 'use_parallel_residual'");
  EXPECT_HAS(config_error(with("rope_scaling", {{"rope_type", "linear"}, {"factor", 2.0}})),
             "key 'rope_scaling.rope_type': rope type 'linear' is not supported for gpt_neox");
  nlohmann::json j = v4_config();
  j["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 1.5}};
  EXPECT_HAS(config_error(j), "key 'rope_parameters.partial_rotary_factor'");
  // A Pythia card is written back as a gpt_neox config.json (the round trips
  // are in hf_export_test.cpp); its options on a Llama-layout card are errors.
  auto e = io::hf_config_json(pythia_card());
  ASSERT_TRUE(e.ok()) << e.error().message();
  EXPECT_EQ(nlohmann::json::parse(e.value())["model_type"], "gpt_neox");
  ModelCard rms = pythia_card();
  rms.norm = ModelCard::Norm::rmsnorm;
  rms.mlp = ModelCard::Mlp::swiglu;
  EXPECT_HAS(io::hf_config_json(rms).error().message(), "key 'parallel_residual'");
  rms.parallel_residual = false;
  EXPECT_HAS(io::hf_config_json(rms).error().message(), "key 'rotary_dims'");
  io::HfConfigExport neox;
  neox.model_type = "gpt_neox";
  ModelCard llama = rms;
  llama.rotary_dims = 0;
  llama.mlp_bias = false;
  llama.qkv_bias = llama.o_bias = false;
  EXPECT_HAS(io::hf_config_json(llama, neox).error().message(),
             "key 'norm': norm rmsnorm cannot be exported as gpt_neox");
}

class PythiaCheckpoint : public hftest::TempDirTest {
 protected:
  // A copy of fixture tests/fixtures/pythia/<name> with config.json edited.
  std::string copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dst = dir_ / name;
    fs::remove_all(dst);
    fs::copy(fs::path(EL_TEST_DATA_DIR) / "pythia" / name, dst, fs::copy_options::recursive);
    nlohmann::json j = nlohmann::json::parse(hftest::read_text(dst / "config.json"));
    edit(j);
    hftest::write_text(dst / "config.json", j.dump(1));
    return dst.string();
  }
  std::string load_error(const std::string& dir) {
    auto r = load_hf_model(dir, Device::cpu());
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
  }
};

TEST_F(PythiaCheckpoint, TensorsThatDoNotMatchTheConfigAreNamed) {
  const std::string wide =
      copy("pythia_parallel", [](nlohmann::json& j) { j["intermediate_size"] = 64; });
  const std::string e = load_error(wide);
  EXPECT_HAS(e, "tensor 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight'");
  EXPECT_HAS(e, "expected [64, 64] from config.json, found [48, 64]");
  const std::string deep =
      copy("pythia_sequential", [](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  EXPECT_HAS(load_error(deep), "tensor 'gpt_neox.layers.2.input_layernorm.weight' is missing");
  const std::string shallow =
      copy("pythia_sequential", [](nlohmann::json& j) { j["num_hidden_layers"] = 1; });
  EXPECT_HAS(load_error(shallow), "unexpected tensor 'gpt_neox.layers.1.");
  EXPECT_HAS(load_error(shallow), "the gpt_neox model has no such parameter");
  io::HfLoadOptions allow;
  allow.allow_unknown_tensors = true;
  EXPECT_TRUE(load_hf_model(shallow, Device::cpu(), DType::f32, allow).ok());
  const std::string nobias =
      copy("pythia_parallel", [](nlohmann::json& j) { j["attention_bias"] = false; });
  EXPECT_HAS(load_error(nobias), "unexpected tensor 'gpt_neox.layers.0.attention.");
  // More layers than the checkpoint has tensors: refused at open, by key.
  const std::string absurd =
      copy("pythia_parallel", [](nlohmann::json& j) { j["num_hidden_layers"] = 2000000000; });
  EXPECT_HAS(load_error(absurd), "key 'num_hidden_layers': num_hidden_layers 2000000000 exceeds");
}

// The causal-mask buffers older checkpoints saved are skipped; other extra
// tensors are not.
TEST_F(PythiaCheckpoint, MaskBuffersAreIgnored) {
  const std::string d = copy("pythia_parallel", [](nlohmann::json&) {});
  const std::string weights = (fs::path(d) / "model.safetensors").string();
  auto f = io::SafetensorsFile::open(weights).value();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& n : f.names()) tensors.emplace_back(n, f.load(n).value());
  tensors.emplace_back("gpt_neox.layers.0.attention.masked_bias", Tensor::full({1}, -1e9f));
  tensors.emplace_back("gpt_neox.layers.1.attention.bias", Tensor::full({1, 1, 4, 4}, 1.f));
  ASSERT_TRUE(io::save_safetensors(weights + ".new", tensors, {{"format", "pt"}}).ok());
  fs::rename(weights + ".new", weights);
  EXPECT_TRUE(load_hf_model(d, Device::cpu()).ok());
  tensors.emplace_back("gpt_neox.layers.1.attention.extra", Tensor::full({1}, 1.f));
  ASSERT_TRUE(io::save_safetensors(weights, tensors, {{"format", "pt"}}).ok());
  EXPECT_HAS(load_error(d), "unexpected tensor 'gpt_neox.layers.1.attention.extra'");
  // The tensor list of model info --hf.
  const auto specs = hf_checkpoint_tensor_specs(pythia_card(), "gpt_neox");
  EXPECT_EQ(specs.front().name, "gpt_neox.embed_in.weight");
  EXPECT_EQ(specs.back().name, "embed_out.weight");
  EXPECT_EQ(specs[5].name, "gpt_neox.layers.0.attention.query_key_value.weight");
  EXPECT_EQ(specs[5].shape, (Shape{96, 32}));
}

}  // namespace
}  // namespace el
