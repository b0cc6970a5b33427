// Suite descriptions (bench/suite.h, bench/builtin_suites.h): the built-in
// specs, their cards, the step override, the calibration dtype rule and the
// validation errors. No suite is run here (gpu-lite is GPU-sized; quick is
// exercised end to end by `efficientllm bench --steps 20`).
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

#include "bench/builtin_suites.h"
#include "bench/runner.h"
#include "bench/suite.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"

namespace el::bench {
namespace {

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

TEST(BuiltinSuites, NamesAndLookup) {
  EXPECT_EQ(builtin_suite_names(), (std::vector<std::string>{"quick", "gpu-lite"}));
  for (const auto& name : builtin_suite_names()) {
    auto s = find_builtin_suite(name);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->name, name);
    EXPECT_FALSE(s->description.empty());
    const Status st = validate_suite_spec(s.value());
    EXPECT_TRUE(st.ok()) << st.error().message();
  }
}

TEST(BuiltinSuites, UnknownNameListsTheValidOnes) {
  auto s = find_builtin_suite("nonsense");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().where, "--suite");
  EXPECT_HAS(s.error().what, "unknown suite 'nonsense'");
  EXPECT_HAS(s.error().what, "quick");
  EXPECT_HAS(s.error().what, "gpu-lite");
}

TEST(BuiltinSuites, DefaultFollowsTheDevice) {
  EXPECT_EQ(default_suite_name(Device::cpu()), "quick");
  EXPECT_EQ(default_suite_name(Device::cuda(0)), "gpu-lite");
  EXPECT_EQ(default_suite_name(Device::cuda(1)), "gpu-lite");
}

// The quick suite's settings (the YAML twin is checked against it elsewhere).
TEST(BuiltinSuites, QuickSettings) {
  const SuiteSpec s = quick_suite();
  EXPECT_EQ(s.sized_for, DeviceKind::cpu);
  const char* const cards[] = {"tiny",          "tiny-gqa",         "tiny-mqa",
                               "tiny-mla",      "tiny-nsa",         "tiny-pe-absolute",
                               "tiny-pe-learnable", "tiny-pe-relative", "tiny-pe-none"};
  ASSERT_EQ(s.variants.size(), 13u);  // the last four: ArchitectureIIRowsAreThePapersPairsScaledDown
  EXPECT_EQ(s.variants[0].label, "MHA");
  EXPECT_EQ(s.variants[7].label, "PE relative");
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_EQ(s.variants[i].card, cards[i]);
    auto card = find_model_card(cards[i]);
    ASSERT_TRUE(card.ok()) << card.error().message();
    EXPECT_TRUE(validate_model_card(card.value()).ok()) << cards[i];
    EXPECT_EQ(card->vocab_size, s.vocab_size) << cards[i];
  }
  EXPECT_EQ(s.vocab_size, 4096);
  EXPECT_EQ(s.batch_size, 16);
  EXPECT_EQ(s.seq_len, 128);
  EXPECT_EQ(s.steps, 400);
  EXPECT_FLOAT_EQ(s.lr, 3e-3f);
  EXPECT_FLOAT_EQ(s.min_lr, 3e-4f);
  EXPECT_EQ(s.warmup_steps, 15);
  EXPECT_EQ(s.eval_batches, 32);
  EXPECT_EQ(s.precision, Precision::f32);
  EXPECT_FALSE(s.calibration_dtype.has_value());
  ASSERT_TRUE(s.mfu_probe.has_value());
  EXPECT_EQ(s.mfu_probe->card, "small");
  EXPECT_EQ(s.mfu_probe->batch_size, 8);
  EXPECT_EQ(s.mfu_probe->seq_len, 256);
  EXPECT_EQ(s.mfu_probe->steps, 3);
}

// quick's inference rows: the GQA model at every precision, int rows in f32
// activations (the CPU computes f32), a group size that divides its widths.
TEST(BuiltinSuites, QuickInfersThePretrainedGqaModelAtEveryPrecision) {
  const SuiteSpec s = quick_suite();
  ASSERT_EQ(s.infer.size(), 5u);  // then the architecture-II models in f32
  const InferSection& x = s.infer[0];
  EXPECT_EQ(x.model, "pretrained:GQA");
  std::vector<std::string> got;
  for (const auto& r : x.rows) got.push_back(r.precision + "/" + r.quant_method);
  EXPECT_EQ(got, (std::vector<std::string>{"f32/rtn", "bf16/rtn", "fp16/rtn", "int8/rtn", "int4/rtn", "int4/gptq"}));
  EXPECT_EQ(x.act_precision, "f32");
  EXPECT_EQ(x.batch_sizes, "1,4");
  EXPECT_EQ(x.group_size, 64);
  EXPECT_EQ(x.calib_samples, 32);
  EXPECT_EQ(x.calib_seq_len, 256);
  const ModelCard gqa = find_model_card("tiny-gqa").value();
  for (const auto& r : x.rows) {
    EXPECT_EQ(infer_card_problem(gqa, r.precision, x.group_size, x.prompt_len, x.gen_len), "") << r.label;
  }
}

// gpu-lite's inference rows: the 1.1B TinyLlama shape for speed (random
// weights, no task), the pretrained GQA model for quality.
TEST(BuiltinSuites, GpuLiteInfersThe11BShapeAndThePretrainedModel) {
  const SuiteSpec s = gpu_lite_suite();
  ASSERT_EQ(s.infer.size(), 6u);  // then the architecture-II models in bf16
  EXPECT_EQ(s.infer[0].model, "tinyllama-1.1b");
  EXPECT_EQ(s.infer[0].choice_task, "");
  EXPECT_EQ(s.infer[0].batch_sizes, "1,8,32");
  EXPECT_EQ(s.infer[0].prompt_len, 128);
  EXPECT_EQ(s.infer[0].gen_len, 256);
  ASSERT_EQ(s.infer[0].rows.size(), 4u);
  EXPECT_EQ(s.infer[1].model, "pretrained:GQA");
  EXPECT_EQ(s.infer[1].rows.back().quant_method, "gptq");
  const ModelCard c = find_model_card("tinyllama-1.1b").value();
  EXPECT_TRUE(validate_model_card(c).ok());
  EXPECT_EQ(c.n_layer, 22);
  EXPECT_EQ(c.d_model, 2048);
  EXPECT_EQ(c.n_head, 32);
  EXPECT_EQ(c.n_kv_head, 4);
  EXPECT_EQ(c.d_ff, 5632);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_seq_len, 2048);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(count_parameters(c).total, 1'100'048'384);  // TinyLlama-1.1B's count
  for (const auto& sec : s.infer) {
    std::string name = sec.model;  // a card, or "pretrained:<label>" of a variant
    for (const auto& v : s.variants) {
      if (sec.model == "pretrained:" + v.label) name = v.card;
    }
    const ModelCard card = find_model_card(name).value();
    for (const auto& r : sec.rows) {
      EXPECT_EQ(infer_card_problem(card, r.precision, sec.group_size, sec.prompt_len, sec.gen_len), "") << r.label;
    }
  }
}

TEST(BuiltinSuites, GpuLiteIsTheAttentionComparisonAtHalfABillion) {
  const SuiteSpec s = gpu_lite_suite();
  EXPECT_EQ(s.sized_for, DeviceKind::cuda);
  EXPECT_EQ(s.precision, Precision::bf16);
  EXPECT_EQ(s.vocab_size, 8192);
  EXPECT_EQ(s.batch_size, 16);
  EXPECT_EQ(s.seq_len, 1024);
  EXPECT_GT(s.steps, 0);
  EXPECT_EQ(s.warmup_steps, s.steps / 10);
  EXPECT_FLOAT_EQ(s.lr, 6e-4f);
  EXPECT_FLOAT_EQ(s.min_lr, 6e-5f);
  EXPECT_EQ(s.eval_batches, 16);
  EXPECT_FALSE(s.mfu_probe.has_value());

  struct Want { const char* label; const char* card; int kv; };
  const Want want[] = {{"MHA", "lite-mha", 14}, {"GQA", "lite-gqa", 2}, {"MQA", "lite-mqa", 1}};
  ASSERT_EQ(s.variants.size(), 13u);  // the last four: ArchitectureIIRowsAreThePapersPairsScaledDown
  // MLA, NSA and the positional encodings: lite-gqa's shape apart from what
  // they change, and the same token budget.
  const ModelCard gqa = find_model_card("lite-gqa").value();
  for (size_t i = 3; i < 9; ++i) {
    SCOPED_TRACE(s.variants[i].card);
    auto card = find_model_card(s.variants[i].card);
    ASSERT_TRUE(card.ok()) << card.error().message();
    EXPECT_TRUE(validate_model_card(card.value()).ok());
    EXPECT_EQ(card->n_layer, gqa.n_layer);
    EXPECT_EQ(card->d_model, gqa.d_model);
    EXPECT_EQ(card->d_ff, gqa.d_ff);
    EXPECT_EQ(card->vocab_size, s.vocab_size);
    EXPECT_EQ(card->max_seq_len, 1024);
    const TrainConfig c = variant_train_config(s, s.variants[i], Device::cuda(0), "/data");
    EXPECT_EQ(c.steps * c.batch_size * c.seq_len * c.grad_accum, s.steps * 16 * 1024);
  }
  for (const char* pe : {"lite-pe-absolute", "lite-pe-learnable", "lite-pe-relative", "lite-pe-none"}) {
    ModelCard card = find_model_card(pe).value();
    EXPECT_NE(card.pos_encoding, ModelCard::PosEncoding::rope) << pe;
    card.pos_encoding = gqa.pos_encoding;
    card.rope_theta = gqa.rope_theta;
    card.name = gqa.name;
    card.source_path = gqa.source_path;
    EXPECT_EQ(card, gqa) << pe;
  }
  // The lite cards are the paper's 0.5B Qwen2.5 shape; only the vocabulary,
  // the context and the KV heads differ.
  ModelCard qwen = find_model_card("qwen2.5-0.5b").value();
  int64_t budget = -1, previous_params = 0;
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(want[i].card);
    EXPECT_EQ(s.variants[i].label, want[i].label);
    EXPECT_EQ(s.variants[i].card, want[i].card);
    auto card = find_model_card(s.variants[i].card);
    ASSERT_TRUE(card.ok()) << card.error().message();
    EXPECT_TRUE(validate_model_card(card.value()).ok());
    EXPECT_EQ(card->n_kv_head, want[i].kv);
    EXPECT_EQ(card->vocab_size, s.vocab_size);
    EXPECT_EQ(card->max_seq_len, 1024);
    ModelCard expected = qwen;
    expected.name = card->name;
    expected.source_path = card->source_path;
    expected.vocab_size = 8192;
    expected.max_seq_len = 1024;
    expected.n_kv_head = want[i].kv;
    EXPECT_EQ(card.value(), expected) << model_card_to_yaml(card.value());

    // Same token budget for every variant.
    const TrainConfig c = variant_train_config(s, s.variants[i], Device::cuda(0), "/data");
    EXPECT_EQ(c.model, want[i].card);
    EXPECT_EQ(c.precision, Precision::bf16);
    const int64_t tokens = c.steps * c.batch_size * c.seq_len * c.grad_accum;
    if (budget < 0) budget = tokens;
    EXPECT_EQ(tokens, budget);
    EXPECT_EQ(tokens, s.steps * 16 * 1024);

    // Fewer KV heads, fewer parameters; all about a third of a billion.
    const int64_t params = count_parameters(card.value()).total;
    EXPECT_GT(params, 300'000'000);
    EXPECT_LT(params, 450'000'000);
    if (i > 0) {
      EXPECT_LT(params, previous_params);
    }
    previous_params = params;
  }
}

// Architecture axis II (paper Tables 5 and 6) in quick and gpu-lite: a
// mixture of experts against the dense GQA row, and Mamba / RWKV / Pythia
// against it as the Transformer, with the suite's vocabulary, context and
// token budget. The MoE keeps the paper's relation to the dense model (more
// parameters in total, fewer active per token: the paper's 0.5Bx8 has 1.74x
// and 0.52x the dense 1.5B's), and the cards' counts are the ones their
// headers state.
TEST(BuiltinSuites, ArchitectureIIRowsAreThePapersPairsScaledDown) {
  struct Want {
    SuiteSpec spec;
    const char *dense, *moe, *mamba, *rwkv, *pythia;
    int64_t moe_total, moe_active;
    double max_active_ratio;  // MoE active / dense total
    const char* infer_precision;
  };
  const Want wants[] = {
      {quick_suite(), "tiny-gqa", "tiny-0.6mx8-moe", "tiny-mamba", "tiny-rwkv", "pythia-tiny", 1'630'176, 745'440,
       0.85, "f32"},
      {gpu_lite_suite(), "lite-gqa", "lite-0.1bx8-moe", "lite-mamba", "lite-rwkv", "lite-pythia", 678'022'656,
       182'570'496, 0.55, "bf16"}};
  for (const Want& w : wants) {
    const SuiteSpec& s = w.spec;
    SCOPED_TRACE(s.name);
    ASSERT_EQ(s.variants.size(), 13u);
    EXPECT_EQ(s.variants[1].label, "GQA");
    EXPECT_EQ(s.variants[1].card, w.dense);
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"MoE", w.moe}, {"Mamba", w.mamba}, {"RWKV", w.rwkv}, {"Pythia", w.pythia}};
    for (size_t i = 0; i < rows.size(); ++i) {
      const SuiteVariant& v = s.variants[9 + i];
      EXPECT_EQ(v.label, rows[i].first);
      EXPECT_EQ(v.card, rows[i].second);
      auto card = find_model_card(v.card);
      ASSERT_TRUE(card.ok()) << card.error().message();
      EXPECT_TRUE(validate_model_card(card.value()).ok()) << v.card;
      EXPECT_EQ(card->vocab_size, s.vocab_size) << v.card;
      EXPECT_GE(card->max_seq_len, s.seq_len) << v.card;
      // The same token budget as every other variant.
      const TrainConfig c = variant_train_config(s, v, Device::cpu(), "/data");
      EXPECT_EQ(c.steps * c.batch_size * c.seq_len * c.grad_accum, s.steps * s.batch_size * s.seq_len);
      // Inferred after the GQA rows, at the suite's own precision.
      const InferSection& x = s.infer.at(s.infer.size() - rows.size() + i);
      EXPECT_EQ(x.model, "pretrained:" + v.label);
      ASSERT_EQ(x.rows.size(), 1u);
      EXPECT_EQ(x.rows[0].label, v.label + " " + w.infer_precision);
      EXPECT_EQ(x.rows[0].precision, w.infer_precision);
      // Every measurement setting as the GQA quality rows just before.
      SuiteSpec one, gqa;
      one.infer = {x};
      gqa.infer = {s.infer[s.infer.size() - rows.size() - 1]};
      nlohmann::json a = suite_spec_to_json(one)["infer"][0], b = suite_spec_to_json(gqa)["infer"][0];
      for (auto* j : {&a, &b}) {
        j->erase("model");
        j->erase("rows");
      }
      EXPECT_EQ(a, b);
    }
    const ModelCard dense = find_model_card(w.dense).value();
    const ModelCard moe = find_model_card(w.moe).value();
    EXPECT_EQ(moe.moe_experts, 8);
    EXPECT_EQ(moe.moe_top_k, 2);
    EXPECT_EQ(moe.n_kv_head, dense.n_kv_head);  // GQA, as the dense model
    const ParameterCounts d = count_parameters(dense), m = count_parameters(moe);
    EXPECT_EQ(m.total, w.moe_total);
    EXPECT_EQ(m.active, w.moe_active);
    EXPECT_GT(static_cast<double>(m.total) / static_cast<double>(d.total), 1.7);
    EXPECT_LT(static_cast<double>(m.total) / static_cast<double>(d.total), 1.9);
    EXPECT_LT(static_cast<double>(m.active) / static_cast<double>(d.total), w.max_active_ratio);
    EXPECT_EQ(find_model_card(w.mamba).value().block, ModelCard::Block::mamba);
    EXPECT_EQ(find_model_card(w.rwkv).value().block, ModelCard::Block::rwkv);
    EXPECT_TRUE(find_model_card(w.pythia).value().parallel_residual);
  }
  EXPECT_EQ(count_parameters(find_model_card("lite-pythia").value()).total, 319'088'640);
}

// paper-arch's attention-free cards at 0.5B and 3B, sized as the 1.5B ones:
// Mamba and RWKV within 1% of the Qwen2.5 Transformer of their size (the
// counts their headers state).
TEST(BuiltinSuites, PaperAttentionFreeCardsMatchTheTransformer) {
  const struct {
    const char *card, *transformer;
    int64_t params;
  } cards[] = {{"mamba-0.5b", "qwen2.5-0.5b", 495'613'952},   {"rwkv-0.5b", "qwen2.5-0.5b", 491'648'640},
               {"mamba-1.5b", "qwen2.5-1.5b", 1'553'928'192}, {"rwkv-1.5b", "qwen2.5-1.5b", 1'540'824'576},
               {"mamba-3b", "qwen2.5-3b", 3'069'829'120},     {"rwkv-3b", "qwen2.5-3b", 3'077'019'648}};
  for (const auto& c : cards) {
    SCOPED_TRACE(c.card);
    auto card = find_model_card(c.card);
    ASSERT_TRUE(card.ok()) << card.error().message();
    const ModelCard t = find_model_card(c.transformer).value();
    EXPECT_EQ(card->vocab_size, t.vocab_size);
    EXPECT_EQ(card->max_seq_len, t.max_seq_len);
    const int64_t n = count_parameters(card.value()).total;
    EXPECT_EQ(n, c.params);
    EXPECT_NEAR(static_cast<double>(n) / static_cast<double>(count_parameters(t).total), 1.0, 0.01);
  }
}

TEST(SuiteSpec, CalibrationDtypeFollowsTheTrainer) {
  const SuiteSpec quick = quick_suite();
  SuiteSpec lite = gpu_lite_suite();
  EXPECT_EQ(suite_calibration_dtype(quick, Device::cpu()), DType::f32);
  EXPECT_EQ(suite_calibration_dtype(quick, Device::cuda(0)), DType::f32);  // quick trains in f32
  EXPECT_EQ(suite_calibration_dtype(lite, Device::cpu()), DType::f32);     // the CPU computes bf16 in f32
  EXPECT_EQ(suite_calibration_dtype(lite, Device::cuda(0)), DType::bf16);
  lite.calibration_dtype = DType::f16;
  EXPECT_EQ(suite_calibration_dtype(lite, Device::cuda(0)), DType::f16);
}

TEST(SuiteSpec, StepOverride) {
  EXPECT_EQ(apply_step_override(quick_suite(), 0).steps, 400);
  const SuiteSpec q = apply_step_override(quick_suite(), 20);
  EXPECT_EQ(q.steps, 20);
  EXPECT_EQ(q.warmup_steps, 15);  // as before: the warmup still ends before the last step
  const SuiteSpec l = apply_step_override(gpu_lite_suite(), 20);
  EXPECT_EQ(l.steps, 20);
  EXPECT_EQ(l.warmup_steps, 2);  // the spec's warmup would outlast the run
}

TEST(SuiteSpec, ToJsonHoldsEveryField) {
  const nlohmann::json j = suite_spec_to_json(quick_suite());
  EXPECT_EQ(j["name"], "quick");
  EXPECT_EQ(j["sized_for"], "cpu");
  EXPECT_EQ(j["variants"].size(), 13u);
  EXPECT_EQ(j["variants"][1]["card"], "tiny-gqa");
  EXPECT_EQ(j["seq_len"], 128);
  EXPECT_EQ(j["precision"], "f32");
  EXPECT_TRUE(j["calibration_dtype"].is_null());
  EXPECT_EQ(j["mfu_probe"]["card"], "small");
  const nlohmann::json l = suite_spec_to_json(gpu_lite_suite());
  EXPECT_EQ(l["precision"], "bf16");
  EXPECT_EQ(l["sized_for"], "cuda");
  EXPECT_TRUE(l["mfu_probe"].is_null());
  ASSERT_EQ(j["infer"].size(), 5u);
  EXPECT_EQ(j["infer"][0]["model"], "pretrained:GQA");
  EXPECT_EQ(j["infer"][0]["rows"][5]["quant_method"], "gptq");
  EXPECT_EQ(j["infer"][0]["batch_sizes"], "1,4");
  EXPECT_EQ(l["infer"].size(), 6u);
}

std::string validation_error(const SuiteSpec& s) {
  const Status st = validate_suite_spec(s);
  return st.ok() ? std::string("(valid)") : st.error().message();
}

TEST(SuiteSpec, ValidationErrors) {
  SuiteSpec s = quick_suite();
  s.name = "a/b";
  EXPECT_HAS(validation_error(s), "letters, digits");
  s = quick_suite();
  s.variants.clear();
  EXPECT_HAS(validation_error(s), "no variants");
  s = quick_suite();
  s.steps = 0;
  EXPECT_HAS(validation_error(s), "steps (0) must be positive");
  s = quick_suite();
  s.min_lr = 1.0f;
  EXPECT_HAS(validation_error(s), "0 < min_lr <= lr");
  s = quick_suite();
  s.eval_batches = 0;
  EXPECT_HAS(validation_error(s), "eval_batches");
  s = quick_suite();
  s.variants[1].card = "no-such-card";
  const std::string e = validation_error(s);
  EXPECT_HAS(e, "suite 'quick': variant 'GQA'");
  EXPECT_HAS(e, "no-such-card");
  s = quick_suite();
  s.vocab_size = 8192;  // the tiny cards have 4096
  EXPECT_HAS(validation_error(s), "card 'tiny' has vocab_size 4096 but the suite's tokenizer has 8192 pieces");
  s = quick_suite();
  s.seq_len = 4096;
  EXPECT_HAS(validation_error(s), "max_seq_len 256 but the suite trains at seq_len 4096");
  s = quick_suite();
  s.mfu_probe->card = "lite-mha";  // vocab 8192
  EXPECT_HAS(validation_error(s), "mfu_probe");
  // The inference section.
  s = quick_suite();
  s.infer[0].model = "pretrained:XYZ";
  EXPECT_HAS(validation_error(s), "suite 'quick': infer[0]: 'pretrained:XYZ' names no variant of the suite");
  s = quick_suite();
  s.infer[0].model = "no-such-card";
  EXPECT_HAS(validation_error(s), "card 'no-such-card'");
  s = quick_suite();
  s.infer[0].rows[0].precision = "int3";
  EXPECT_HAS(validation_error(s), "row 'GQA f32': unknown precision 'int3'");
  s = quick_suite();
  s.infer[0].rows[1].label = "GQA f32";
  EXPECT_HAS(validation_error(s), "two rows are labelled 'GQA f32'");
  s = quick_suite();
  s.infer[0].group_size = 96;  // does not divide d_model 128
  EXPECT_HAS(validation_error(s), "row 'GQA int8 rtn': group_size 96 does not divide d_model = 128");
  s = quick_suite();
  s.infer[0].gen_len = 250;  // 64 + 250 > 256
  EXPECT_HAS(validation_error(s), "card 'tiny-gqa' allows max_seq_len 256 but prompt_len + gen_len is 64 + 250");
  s = quick_suite();
  s.infer[0].batch_sizes = "1,,4";
  EXPECT_HAS(validation_error(s), "batch_sizes '1,,4': '' is not a positive integer");
  s = quick_suite();
  s.infer[0].act_precision = "int8";
  EXPECT_HAS(validation_error(s), "unknown act_precision 'int8'");
  s = gpu_lite_suite();
  s.infer[0].rows[3].quant_method = "gptq";
  EXPECT_HAS(validation_error(s), "row '1.1B int4 rtn': GPTQ calibrates on text");
  s = quick_suite();
  s.infer[0].calib_samples = 0;
  EXPECT_HAS(validation_error(s), "calib_samples");
}

// An invalid spec fails before anything is written (not even the results
// directory or the data cache).
TEST(SuiteSpec, RunSuiteRejectsAnInvalidSpecFirst) {
  SuiteSpec s = quick_suite();
  s.variants[0].card = "no-such-card";
  SuiteOptions o;
  o.results_dir = "/tmp/el_suite_test_" + std::to_string(::getpid());
  auto r = run_suite(s, o);
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "no-such-card");
  EXPECT_FALSE(std::filesystem::exists(o.results_dir));
}

}  // namespace
}  // namespace el::bench
