// Tests of config.json -> ModelCard (io/hf_config.h): the three families as
// their published configs (transformers v4 form) and as transformers 5 writes
// them (rope_parameters), RoPE scaling, sliding windows, every error with the
// file and key it names, and the inverse mapping round trip.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/hf_test_util.h"
#include "io/hf_config.h"

namespace el::io {
namespace {

using json = nlohmann::json;

// Llama-3.2-1B's config.json as published (transformers 4.45).
const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

// Qwen2.5-7B.
const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
  "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28,
  "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
  "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 152064})";

// Mistral-7B-v0.1 (a 4096-token sliding window).
const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 32000})";

// Pythia-70m (GPT-NeoX, v4 keys).
const char* kPythia70m = R"({
  "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
  "hidden_act": "gelu", "hidden_size": 512, "initializer_range": 0.02,
  "intermediate_size": 2048, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
  "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
  "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
  "torch_dtype": "float16", "use_cache": true, "use_parallel_residual": true,
  "vocab_size": 50304})";

// RWKV-4-169m-pile.
const char* kRwkv169m = R"({
  "architectures": ["RwkvForCausalLM"], "attention_hidden_size": 768, "bos_token_id": 0,
  "context_length": 1024, "eos_token_id": 0, "hidden_size": 768, "intermediate_size": 3072,
  "layer_norm_epsilon": 1e-05, "model_type": "rwkv", "num_hidden_layers": 12,
  "rescale_every": 6, "tie_word_embeddings": false, "use_cache": true, "vocab_size": 50277})";

// Mixtral-8x7B-v0.1.
const char* kMixtral = R"({
  "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
  "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
  "rms_norm_eps": 1e-05, "rope_theta": 1e6, "router_aux_loss_coef": 0.02,
  "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "use_cache": true, "vocab_size": 32000})";

// Qwen1.5-MoE-A2.7B.
const char* kQwen2Moe = R"({
  "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
  "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
  "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408,
  "norm_topk_prob": false, "num_attention_heads": 16, "num_experts": 60,
  "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
  "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632,
  "sliding_window": 32768, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

HfConfig parse_ok(const std::string& text, const std::string& name = "m") {
  auto r = parse_hf_config(text, "dir/config.json", name);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? r.value() : HfConfig{};
}

// `base` with `key` replaced by `value` (JSON text), or removed if value is "".
std::string with(const char* base, const std::string& key, const std::string& value) {
  json j = json::parse(base);
  if (value.empty()) {
    j.erase(key);
  } else {
    j[key] = json::parse(value);
  }
  return j.dump();
}

std::string error_of(const std::string& text) {
  auto r = parse_hf_config(text, "dir/config.json", "m");
  EXPECT_FALSE(r.ok()) << "expected an error for " << text;
  return r.ok() ? std::string() : r.error().message();
}

TEST(HfConfig, Llama32) {
  const HfConfig h = parse_ok(kLlama32, "Llama-3.2-1B");
  const ModelCard& c = h.card;
  EXPECT_EQ(h.model_type, "llama");
  EXPECT_EQ(h.torch_dtype, "bfloat16");
  EXPECT_EQ(c.name, "Llama-3.2-1B");
  EXPECT_EQ(c.source_path, "dir/config.json");
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.n_layer, 16);
  EXPECT_EQ(c.n_head, 32);
  EXPECT_EQ(c.n_kv_head, 8);
  EXPECT_EQ(c.head_dim, 0);  // 64 = 2048 / 32: derived, as our own cards write it
  EXPECT_EQ(c.effective_head_dim(), 64);
  EXPECT_EQ(c.d_ff, 8192);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_seq_len, 131072);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.norm, ModelCard::Norm::rmsnorm);
  EXPECT_EQ(c.mlp, ModelCard::Mlp::swiglu);
  EXPECT_EQ(c.pos_encoding, ModelCard::PosEncoding::rope);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::llama3);
  EXPECT_FLOAT_EQ(c.rope_scaling_factor, 32.0f);
  EXPECT_FLOAT_EQ(c.rope_low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_original_max_seq_len, 8192);
  EXPECT_EQ(h.passthrough.at("eos_token_id"), "[128001,128008,128009]");
  EXPECT_EQ(h.passthrough.at("bos_token_id"), "128000");
  EXPECT_EQ(h.passthrough.count("pad_token_id"), 0u);
}

TEST(HfConfig, Qwen25HasQkvBiasAndNoWindowWhenUnused) {
  const ModelCard c = parse_ok(kQwen25).card;
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.n_kv_head, 4);
  EXPECT_EQ(c.effective_head_dim(), 128);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::none);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
}

TEST(HfConfig, Qwen2SlidingWindowOnlyWhenALayerSlides) {
  std::string t = with(kQwen25, "use_sliding_window", "true");
  // max_window_layers 28 of 28 layers: no layer slides.
  EXPECT_EQ(parse_ok(t).card.sliding_window, 0);
  EXPECT_EQ(parse_ok(with(t.c_str(), "max_window_layers", "21")).card.sliding_window, 131072);
  // v5's explicit layer_types win over max_window_layers.
  std::string lt = with(t.c_str(), "layer_types", R"(["full_attention", "sliding_attention"])");
  EXPECT_EQ(parse_ok(lt).card.sliding_window, 131072);
  lt = with(t.c_str(), "layer_types", R"(["full_attention"])");
  EXPECT_EQ(parse_ok(with(lt.c_str(), "max_window_layers", "0")).card.sliding_window, 0);
  EXPECT_HAS(error_of(with(t.c_str(), "layer_types", "3")), "key 'layer_types'");
  // An explicit null window: no layer slides whatever the other keys say.
  std::string nw = with(t.c_str(), "max_window_layers", "0");
  EXPECT_EQ(parse_ok(with(nw.c_str(), "sliding_window", "null")).card.sliding_window, 0);
  // Absent: Qwen2Config's default window, 4096.
  EXPECT_EQ(parse_ok(with(nw.c_str(), "sliding_window", "")).card.sliding_window, 4096);
}

TEST(HfConfig, MistralSlidingWindow) {
  const ModelCard c = parse_ok(kMistral).card;
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.max_seq_len, 32768);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(parse_ok(with(kMistral, "sliding_window", "null")).card.sliding_window, 0);
  // Absent: MistralConfig's default window (4096), as transformers reads it.
  std::string t = with(kMistral, "sliding_window", "");
  EXPECT_EQ(parse_ok(with(t.c_str(), "max_position_embeddings", "8192")).card.sliding_window, 4096);
  EXPECT_HAS(error_of(with(kMistral, "sliding_window", "0")),
             "dir/config.json: key 'sliding_window': must be a positive integer");
}

TEST(HfConfig, ExplicitHeadDimThatDiffersIsKept) {
  // Mistral-Nemo: hidden 5120, 32 heads of 128 (not 160).
  std::string t = with(kMistral, "hidden_size", "5120");
  t = with(t.c_str(), "head_dim", "128");
  const ModelCard c = parse_ok(t).card;
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.effective_head_dim(), 128);
  // null head_dim = derived.
  EXPECT_EQ(parse_ok(with(kMistral, "head_dim", "null")).card.head_dim, 0);
}

TEST(HfConfig, DefaultsForAbsentKeys) {
  const ModelCard c = parse_ok(R"({"model_type": "llama", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
      "vocab_size": 100})").card;
  EXPECT_EQ(c.n_kv_head, 4);
  EXPECT_EQ(c.max_seq_len, 2048);  // LlamaConfig's default
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::none);
  EXPECT_EQ(parse_ok(R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": null, "intermediate_size": 128,
      "vocab_size": 100})").card.n_kv_head, 4);
}

TEST(HfConfig, AttentionBiasGivesQkvAndOBias) {
  const ModelCard c = parse_ok(with(kLlama32, "attention_bias", "true")).card;
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
}

TEST(HfConfig, TransformersV5RopeParameters) {
  // transformers 5 moves rope_theta into rope_parameters.
  std::string t = with(kLlama32, "rope_scaling", "");
  t = with(t.c_str(), "rope_theta", "");
  t = with(t.c_str(), "rope_parameters",
           R"({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192})");
  ModelCard c = parse_ok(t).card;
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::llama3);
  EXPECT_FLOAT_EQ(c.rope_scaling_factor, 8.0f);
  c = parse_ok(with(kQwen25, "rope_parameters", R"({"rope_type": "default", "rope_theta": 1e6})"))
          .card;
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::none);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  // "dtype" (v5) is recorded like "torch_dtype" (v4).
  EXPECT_EQ(parse_ok(with(with(kQwen25, "torch_dtype", "").c_str(), "dtype", "\"float32\""))
                .torch_dtype,
            "float32");
}

TEST(HfConfig, LinearRopeScalingInBothSpellings) {
  for (const char* rs : {R"({"type": "linear", "factor": 2.0})",
                         R"({"rope_type": "linear", "factor": 2})"}) {
    const ModelCard c = parse_ok(with(kMistral, "rope_scaling", rs)).card;
    EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::linear) << rs;
    EXPECT_FLOAT_EQ(c.rope_scaling_factor, 2.0f);
    EXPECT_EQ(c.rope_low_freq_factor, 0.0f);  // llama3-only fields stay unset
  }
  EXPECT_EQ(parse_ok(with(kMistral, "rope_scaling", "null")).card.rope_scaling,
            ModelCard::RopeScaling::none);
}

TEST(HfConfig, UnsupportedRopeTypesNameTheKey) {
  EXPECT_HAS(error_of(with(kLlama32, "rope_scaling", R"({"type": "dynamic", "factor": 2.0})")),
             "dir/config.json: key 'rope_scaling.type': rope type 'dynamic' is not supported");
  const std::string yarn =
      error_of(with(kQwen25, "rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})"));
  EXPECT_HAS(yarn, "key 'rope_scaling.rope_type': rope type 'yarn' is not supported");
  EXPECT_HAS(yarn, "'default', 'linear', 'llama3'");
  EXPECT_HAS(error_of(with(kQwen25, "rope_parameters", R"({"rope_type": "yarn"})")),
             "key 'rope_parameters.rope_type'");
  EXPECT_HAS(error_of(with(kLlama32, "rope_scaling", R"({"rope_type": "lama3"})")),
             "unknown rope type 'lama3' (did you mean 'llama3'?)");
}

TEST(HfConfig, RopeScalingParameterErrors) {
  auto rs = [](const std::string& body) { return with(kLlama32, "rope_scaling", body); };
  EXPECT_HAS(error_of(rs(R"({"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192})")),
             "key 'rope_scaling.low_freq_factor': missing required key");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})")),
             "key 'rope_scaling.high_freq_factor': high_freq_factor (4) must be greater than "
             "low_freq_factor (4)");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0})")),
             "key 'rope_scaling.original_max_position_embeddings': missing required key");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "linear"})")), "key 'rope_scaling.factor'");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "linear", "factor": "2"})")),
             "key 'rope_scaling.factor': expected a number, got a string");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "linear", "factor": -2})")),
             "key 'rope_scaling.factor': must be a positive number");
  EXPECT_HAS(error_of(rs("[1, 2]")), "key 'rope_scaling': expected an object or null, got a list");
  EXPECT_HAS(error_of(rs(R"({"rope_type": "default", "partial_rotary_factor": 0.5})")),
             "key 'rope_scaling.partial_rotary_factor': partial_rotary_factor 0.5 is not supported");
  EXPECT_HAS(error_of(with(kLlama32, "rope_theta", "0")), "key 'rope_theta': must be a positive");
}

TEST(HfConfig, ModelTypeErrorsListTheSupportedOnes) {
  const std::string e = error_of(with(kLlama32, "model_type", "\"gemma\""));
  EXPECT_HAS(e, "dir/config.json: key 'model_type': unsupported model_type 'gemma'");
  EXPECT_HAS(e, "'llama', 'mistral', 'qwen2'");
  EXPECT_HAS(error_of(with(kLlama32, "model_type", "\"qwen\"")), "(did you mean 'qwen2'?)");
  EXPECT_HAS(error_of(with(kLlama32, "model_type", "")), "key 'model_type': missing model_type");
}

TEST(HfConfig, FeaturesTheEngineCannotRunAreErrors) {
  EXPECT_HAS(error_of(with(kLlama32, "hidden_act", "\"gelu\"")),
             "key 'hidden_act': hidden_act 'gelu' is not supported");
  EXPECT_HAS(error_of(with(kLlama32, "mlp_bias", "true")), "key 'mlp_bias'");
  EXPECT_HAS(error_of(with(kLlama32, "attention_dropout", "0.1")),
             "key 'attention_dropout': attention_dropout 0.1 is not supported");
  EXPECT_HAS(error_of(with(kQwen25, "quantization_config", R"({"quant_method": "gptq"})")),
             "key 'quantization_config': quantized checkpoints are not supported");
}

TEST(HfConfig, TypeAndShapeErrorsNameTheKey) {
  EXPECT_HAS(error_of(with(kLlama32, "hidden_size", "\"2048\"")),
             "dir/config.json: key 'hidden_size': expected an integer, got a string \"2048\"");
  EXPECT_HAS(error_of(with(kLlama32, "hidden_size", "2048.5")),
             "key 'hidden_size': expected an integer, got a non-integer number");
  EXPECT_HAS(error_of(with(kLlama32, "num_hidden_layers", "-1")),
             "key 'num_hidden_layers': must be a positive integer");
  EXPECT_HAS(error_of(with(kLlama32, "vocab_size", "")), "key 'vocab_size': missing required key");
  EXPECT_HAS(error_of(with(kLlama32, "intermediate_size", "99999999999")),
             "key 'intermediate_size': must be a positive integer below 2^31");
  EXPECT_HAS(error_of(with(kLlama32, "tie_word_embeddings", "1")),
             "key 'tie_word_embeddings': expected true or false, got an integer");
  EXPECT_HAS(error_of(with(kLlama32, "rms_norm_eps", "\"1e-5\"")), "key 'rms_norm_eps'");
  EXPECT_HAS(error_of(with(kLlama32, "num_key_value_heads", "5")),
             "key 'num_key_value_heads': num_attention_heads (32) must be divisible by "
             "num_key_value_heads (5)");
  std::string t = with(kMistral, "head_dim", "");
  EXPECT_HAS(error_of(with(t.c_str(), "num_attention_heads", "24")),
             "key 'num_attention_heads': hidden_size (4096) must be divisible by "
             "num_attention_heads (24)");
  EXPECT_HAS(error_of(with(kMistral, "head_dim", "127")), "key 'head_dim': head dim 127 must be even");
  EXPECT_HAS(error_of("{not json"), "dir/config.json: not valid JSON");
  EXPECT_HAS(error_of("[1]"), "dir/config.json: expected a JSON object, got a list");
}

TEST(HfConfig, LoadNamesTheCardAfterItsDirectory) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / ("el_hfcfg_" + std::to_string(::getpid())) /
                       "Qwen2.5-7B";
  fs::create_directories(dir);
  hftest::write_text(dir / "config.json", kQwen25);
  auto r = load_hf_config((dir / "config.json").string());
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->card.name, "Qwen2.5-7B");
  EXPECT_EQ(r->card.source_path, (dir / "config.json").string());
  auto missing = load_hf_config((dir / "nope.json").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.error().message(), "nope.json");
  fs::remove_all(dir.parent_path());
}

TEST(HfConfig, DtypeNames) {
  EXPECT_STREQ(hf_torch_dtype_name(DType::bf16), "bfloat16");
  EXPECT_EQ(dtype_from_hf_name("float16"), DType::f16);
  EXPECT_EQ(dtype_from_hf_name("float32"), DType::f32);
  EXPECT_FALSE(dtype_from_hf_name("int8").has_value());
}

// ---- the inverse mapping ---------------------------------------------------------------

TEST(HfConfigExportTest, RoundTripsEveryFamily) {
  std::string qwen_sliding = with(kQwen25, "use_sliding_window", "true");
  qwen_sliding = with(qwen_sliding.c_str(), "max_window_layers", "0");
  std::string mistral_linear = with(kMistral, "rope_scaling", R"({"type": "linear", "factor": 4})");
  for (const std::string& text : {std::string(kLlama32), std::string(kQwen25), std::string(kMistral),
                                  with(kLlama32, "attention_bias", "true"), qwen_sliding,
                                  mistral_linear, with(kMistral, "head_dim", "256")}) {
    const HfConfig h = parse_ok(text);
    HfConfigExport ex;
    ex.torch_dtype = h.torch_dtype;
    ex.passthrough = h.passthrough;
    auto out = hf_config_json(h.card, ex);
    ASSERT_TRUE(out.ok()) << out.error().message();
    const HfConfig back = parse_ok(out.value());
    EXPECT_EQ(back.card, h.card) << out.value();
    EXPECT_EQ(back.model_type, h.model_type);  // inferred from the card
    EXPECT_EQ(back.torch_dtype, h.torch_dtype);
    EXPECT_EQ(back.passthrough, h.passthrough);
  }
}

TEST(HfConfigExportTest, WritesTransformersKeys) {
  const HfConfig h = parse_ok(kLlama32);
  HfConfigExport ex;
  ex.torch_dtype = "bfloat16";
  const json j = json::parse(hf_config_json(h.card, ex).value());
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["head_dim"], 64);
  EXPECT_EQ(j["rms_norm_eps"].get<double>(), 1e-5);  // shortest form, not 9.99999974e-06
  EXPECT_EQ(j["rope_theta"].get<double>(), 500000.0);
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(j["rope_scaling"]["original_max_position_embeddings"], 8192);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_TRUE(j["rope_scaling"].is_object());
  const json q = json::parse(hf_config_json(parse_ok(kQwen25).card).value());
  EXPECT_EQ(q["model_type"], "qwen2");
  EXPECT_EQ(q["use_sliding_window"], false);
  EXPECT_TRUE(q["sliding_window"].is_null());
  EXPECT_TRUE(q["rope_scaling"].is_null());
  EXPECT_FALSE(q.contains("torch_dtype"));
}

TEST(HfConfigExportTest, CardsNoFamilyCanHoldAreErrors) {
  ModelCard c = parse_ok(kLlama32).card;
  c.source_path = "cards/x.yaml";
  auto err = [](const ModelCard& card, const std::string& model_type = "") {
    HfConfigExport ex;
    ex.model_type = model_type;
    auto r = hf_config_json(card, ex);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.error().message();
  };
  ModelCard d = c;
  d.norm = ModelCard::Norm::layernorm;
  EXPECT_HAS(err(d), "cards/x.yaml: key 'norm': norm layernorm cannot be exported");
  d = c;
  d.mlp = ModelCard::Mlp::gelu;
  EXPECT_HAS(err(d), "key 'mlp'");
  d = c;
  d.pos_encoding = ModelCard::PosEncoding::none;
  EXPECT_HAS(err(d), "key 'pos_encoding'");
  d = c;
  d.o_bias = true;
  EXPECT_HAS(err(d), "key 'o_bias': o_bias without qkv_bias");
  d = c;
  d.qkv_bias = true;
  EXPECT_HAS(err(d, "mistral"), "mistral has no attention biases");
  EXPECT_HAS(err(d, "llama"), "llama's attention_bias sets q/k/v and o");
  d = c;
  d.sliding_window = 128;
  EXPECT_HAS(err(d, "llama"), "key 'sliding_window'");
  EXPECT_HAS(err(c, "qwen2"), "qwen2 needs qkv_bias true");
  EXPECT_HAS(err(c, "gemma"), "unsupported model_type 'gemma'");
  d = c;
  d.sliding_window = 128;  // inferred: mistral
  EXPECT_EQ(json::parse(hf_config_json(d).value())["model_type"], "mistral");
}

// The families beyond the Llama layout, as published: written back with the
// same values under the same keys, and read back to the same card.
TEST(HfConfigExportTest, RoundTripsTheOtherFamilies) {
  // {config, keys whose value the card does not hold}
  const std::pair<const char*, std::vector<std::string>> cases[] = {
      {kPythia70m, {}},
      {kRwkv169m, {}},
      // output_router_logits false: transformers adds no balance loss, so
      // the coefficient is 0 for the card and written as such.
      {kMixtral, {"router_aux_loss_coef"}},
      // use_sliding_window false: the window keys change nothing.
      {kQwen2Moe, {"router_aux_loss_coef", "sliding_window", "max_window_layers"}}};
  for (const auto& [text, unheld] : cases) {
    const HfConfig h = parse_ok(text);
    SCOPED_TRACE(h.model_type);
    HfConfigExport ex;
    ex.torch_dtype = h.torch_dtype;
    ex.passthrough = h.passthrough;
    auto out = hf_config_json(h.card, ex);
    ASSERT_TRUE(out.ok()) << out.error().message();
    const HfConfig back = parse_ok(out.value());
    EXPECT_EQ(back.card, h.card) << out.value();
    EXPECT_EQ(back.model_type, h.model_type);  // inferred from the card
    const json orig = json::parse(text), j = json::parse(out.value());
    for (const auto& [key, value] : orig.items()) {
      if (key == "transformers_version" || value.is_null() ||
          std::find(unheld.begin(), unheld.end(), key) != unheld.end()) {
        continue;
      }
      ASSERT_TRUE(j.contains(key)) << key << " not written:\n" << out.value();
      if (value.is_number()) {
        EXPECT_EQ(j[key].get<double>(), value.get<double>()) << key;
      } else {
        EXPECT_EQ(j[key], value) << key;
      }
    }
  }
}

TEST(HfConfigExportTest, OtherFamiliesNameTheKeyTheyCannotHold) {
  auto err = [](const ModelCard& card, const std::string& model_type = "") {
    HfConfigExport ex;
    ex.model_type = model_type;
    auto r = hf_config_json(card, ex);
    EXPECT_FALSE(r.ok()) << model_type;
    return r.ok() ? std::string() : r.error().message();
  };
  const ModelCard neox = parse_ok(kPythia70m).card;
  ModelCard d = neox;
  d.n_kv_head = 4;
  EXPECT_HAS(err(d), "key 'n_kv_head'");
  d = neox;
  d.mlp_bias = false;
  EXPECT_HAS(err(d), "key 'mlp_bias': mlp_bias false cannot be exported as gpt_neox");
  d = neox;
  d.o_bias = false;
  EXPECT_HAS(err(d), "key 'o_bias'");
  d = neox;
  d.rope_scaling = ModelCard::RopeScaling::linear;
  d.rope_scaling_factor = 2.0f;
  EXPECT_HAS(err(d), "key 'rope_scaling'");
  d = neox;
  d.sliding_window = 64;
  EXPECT_HAS(err(d), "key 'sliding_window'");
  d = neox;
  d.head_dim = 32;
  EXPECT_HAS(err(d), "key 'head_dim'");
  d = neox;
  d.mlp = ModelCard::Mlp::swiglu;  // inferred as llama, which has no LayerNorm
  EXPECT_HAS(err(d), "key 'norm'");
  EXPECT_HAS(err(d, "gpt_neox"), "key 'mlp': mlp swiglu cannot be exported as gpt_neox");
  EXPECT_HAS(err(neox, "qwen2"), "key 'norm'");

  const ModelCard rwkv = parse_ok(kRwkv169m).card;
  EXPECT_HAS(err(rwkv, "gpt_neox"), "key 'block': block rwkv cannot be exported as model_type "
                                    "gpt_neox");
  EXPECT_HAS(err(rwkv, "mamba"), "key 'block'");
  EXPECT_HAS(err(parse_ok(kLlama32).card, "rwkv"), "key 'block'");
  EXPECT_HAS(err(parse_ok(kLlama32).card, "mamba"), "key 'block'");
  EXPECT_HAS(err(parse_ok(kLlama32).card, "mixtral"), "key 'moe_experts'");

  const ModelCard mixtral = parse_ok(kMixtral).card;
  EXPECT_HAS(err(mixtral, "llama"), "key 'moe_experts': a mixture-of-experts card cannot be "
                                    "exported as llama");
  d = mixtral;
  d.moe_router = ModelCard::MoeRouter::sigmoid;
  EXPECT_HAS(err(d), "key 'moe_router'");
  d = mixtral;
  d.moe_norm_topk_prob = false;
  EXPECT_HAS(err(d), "key 'moe_norm_topk_prob'");
  d = mixtral;
  d.qkv_bias = true;
  EXPECT_HAS(err(d, "mixtral"), "mixtral has no attention biases");
  const ModelCard qwen = parse_ok(kQwen2Moe).card;
  d = qwen;
  d.qkv_bias = false;
  EXPECT_HAS(err(d, "mixtral"), "key 'moe_shared_experts'");
  EXPECT_HAS(err(mixtral, "qwen2_moe"), "key 'moe_shared_experts'");
  d = qwen;
  d.o_bias = true;
  EXPECT_HAS(err(d), "key 'o_bias'");
  d = qwen;
  d.head_dim = 64;
  EXPECT_HAS(err(d), "key 'head_dim'");
}

}  // namespace
}  // namespace el::io
