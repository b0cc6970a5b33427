// sft_trainer_test.cpp — run_finetune end to end on tiny shapes: the config
// checks and their messages, every method on a random-weight card with
// synthetic samples (trainable counts, the frozen base left bit-identical,
// the metrics), the schedule (steps from epochs, gradient accumulation,
// timing warm-up, evaluations, the learning-rate curve), SFT data on the e2e
// fixture (an HF Llama + tokenizer.json: outputs, --merge, --eval-only with
// an adapter) and the report's JSON keys.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_cards.h"
#include "data/tokenizer_factory.h"
#include "finetune/lora.h"
#include "finetune/peft_io.h"
#include "finetune/sft_trainer.h"
#include "io/safetensors.h"
#include "models/decoder_lm.h"

namespace el::finetune {
namespace {

namespace fs = std::filesystem;

// A temporary directory with a tiny model card, made once per process and
// removed at exit. The card (vocab 400) is smaller than the e2e tokenizer's
// 1010 ids on purpose (the vocab-mismatch test).
struct Env {
  std::string dir, card_path;
  Env() {
    char tmpl[] = "/tmp/el_sft_trainer_test_XXXXXX";
    dir = mkdtemp(tmpl);
    card_path = dir + "/card.yaml";
    std::ofstream(card_path) << test::small_card_yaml("sft-trainer-test", 64, 400, 32, "qkv_bias: false\n");
  }
  ~Env() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& name) const { return dir + "/" + name; }
};

Env& env() {
  static Env e;
  return e;
}

const std::string kE2e = std::string(EL_TEST_DATA_DIR) + "/e2e";

// A few fast steps of the card on synthetic samples: [4, 16] batches.
FinetuneConfig synthetic_config(Method m) {
  FinetuneConfig c;
  c.card = env().card_path;
  c.synthetic_samples = 8;
  c.seq_len = 16;
  c.batch_size = 4;
  c.steps = 3;
  c.lr = 1e-3f;
  c.method = m;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.freeze.k = 1;
  c.sample_interval_ms = 10;
  return c;
}

// The base model run_finetune builds from the card (same seed, f32, CPU).
std::unique_ptr<DecoderLM> fresh_base(const FinetuneConfig& c) {
  ModelCard card = find_model_card(c.card).value();
  return DecoderLM::create(card, Device::cpu(), c.seed).value();
}

// Bit-level equality of two f32 tensors' values.
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// gmock is not linked: a substring check that shows both strings on failure.
::testing::AssertionResult has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

bool is_slot_weight(const std::string& name) {
  return name.size() > 12 && name.compare(name.size() - 12, 12, "_proj.weight") == 0;
}

// Sums over the card's projection weights [out, in]: r * (in + out), + out for DoRA.
int64_t expected_adapter_parameters(const DecoderLM& base, int64_t r, bool dora) {
  int64_t n = 0;
  for (const NamedParameter& p : base.parameters()) {
    if (!is_slot_weight(p.name)) continue;
    const int64_t out = p.tensor.shape()[0], in = p.tensor.shape()[1];
    n += r * (in + out) + (dora ? out : 0);
  }
  return n;
}

::testing::AssertionResult error_is(const Status& s, const std::string& where, const std::string& what) {
  if (s.ok()) return ::testing::AssertionFailure() << "no error; expected one at '" << where << "'";
  const std::string msg = s.error().message();
  if (msg.find(where) == std::string::npos || msg.find(what) == std::string::npos) {
    return ::testing::AssertionFailure() << "'" << msg << "' lacks '" << where << "' or '" << what << "'";
  }
  return ::testing::AssertionSuccess();
}

void expect_metrics(const FinetuneReport& r) {
  const nlohmann::json& m = r.metrics;
  for (const char* key : {"samples_per_second", "tokens_per_second", "st_samples_per_param_per_second",
                          "al_seconds", "train_loss", "val_loss", "memory_energy", "samples", "steps",
                          "evals", "total_parameters", "trainable_parameters", "optimizer_steps"}) {
    EXPECT_TRUE(m.contains(key)) << key;
  }
  ASSERT_TRUE(m["samples_per_second"].is_number());
  const double sps = m["samples_per_second"].get<double>();
  EXPECT_GT(sps, 0);
  EXPECT_NEAR(m["st_samples_per_param_per_second"].get<double>(), sps / double(r.total_parameters),
              1e-12 * sps);
  EXPECT_TRUE(m["train_loss"].is_number());
  EXPECT_TRUE(std::isfinite(m["train_loss"].get<double>()));
  EXPECT_TRUE(m["val_loss"].is_number());
  EXPECT_TRUE(m["memory_energy"].contains("amu_live_gb"));
  EXPECT_TRUE(m["al_seconds"].contains("mean"));
  EXPECT_EQ(m["optimizer_steps"].get<int64_t>(), static_cast<int64_t>(r.steps.size()));
}

// ---- 1. the config checks

TEST(FinetuneConfigCheck, AcceptsTheBaseConfigs) {
  for (Method m : {Method::full, Method::freeze, Method::lora, Method::lora_plus, Method::rslora,
                   Method::dora, Method::pissa}) {
    Status s = validate_finetune_config(synthetic_config(m));
    EXPECT_TRUE(s.ok()) << method_name(m) << ": " << s.error().message();
  }
}

TEST(FinetuneConfigCheck, EachErrorNamesItsField) {
  const FinetuneConfig base = synthetic_config(Method::lora);
  auto with = [&](auto edit) {
    FinetuneConfig c = base;
    edit(c);
    return validate_finetune_config(c);
  };
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.card.clear(); }), "finetune config",
                       "0 model sources given"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.hf_dir = "/x"; }), "finetune config",
                       "2 model sources given"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.synthetic_samples = 0; }), "finetune config: data",
                       "no training data"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.synthetic_samples = -1; }),
                       "finetune config: synthetic_samples", ">= 0"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.seq_len = 0; }), "finetune config: seq_len",
                       "fixed sequence length"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.synthetic_samples = 0; c.data = {"x.jsonl"}; }),
                       "finetune config: tokenizer", "needs a tokenizer"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.batch_size = 0; }), "finetune config", "batch_size (0)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.grad_accum = 0; }), "finetune config", "grad_accum (0)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.epochs = 0; }), "finetune config", "epochs (0)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.steps = -2; }), "finetune config", "steps (-2)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.eval_every = -1; }), "finetune config", "eval_every (-1)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.lr = 0; }), "finetune config: lr", "positive"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.lr = NAN; }), "finetune config: lr", "positive"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.warmup_ratio = 1.0f; }), "finetune config: warmup_ratio",
                       "[0, 1)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.warmup_ratio = -0.1f; }),
                       "finetune config: warmup_ratio", "[0, 1)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.val_fraction = 1.0; }), "finetune config: val_fraction",
                       "[0, 1)"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.method = Method::lora_plus; c.loraplus_ratio = 0; }),
                       "finetune config: loraplus_ratio", "positive"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.method = Method::lora_plus; c.loraplus_ratio = -2; }),
                       "finetune config: loraplus_ratio", "positive"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.method = Method::full; c.merge = true; c.out_dir = "/o"; }),
                       "finetune config: merge", "method 'full' has none"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.merge = true; }), "finetune config: merge",
                       "--merge needs --out DIR"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.method = Method::full; c.adapter_dir = "/a"; }),
                       "finetune config: adapter_dir", "method 'full' trains none"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) { c.method = Method::freeze; c.adapter_dir = "/a"; }),
                       "finetune config: adapter_dir", "method 'freeze' trains none"));
  EXPECT_TRUE(error_is(with([](FinetuneConfig& c) {
                         c.synthetic_samples = 0;
                         c.tokenizer = "t.json";
                         c.data = {"x.jsonl"};
                         c.val_fraction = 0;
                         c.eval_only = true;
                       }),
                       "finetune config: val_fraction", "--eval-only needs a validation split"));
  // The LoRA settings are checked for adapter methods only.
  EXPECT_FALSE(with([](FinetuneConfig& c) { c.lora.r = 0; }).ok());
  EXPECT_TRUE(with([](FinetuneConfig& c) { c.method = Method::full; c.lora.r = 0; }).ok());
  // run_finetune checks first: nothing is loaded.
  FinetuneConfig bad = base;
  bad.batch_size = 0;
  auto r = run_finetune(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.error().message(), "batch_size (0)"));
}

TEST(FinetuneConfigCheck, ParseMethod) {
  for (Method m : {Method::full, Method::freeze, Method::lora, Method::lora_plus, Method::rslora,
                   Method::dora, Method::pissa}) {
    auto p = parse_method(method_name(m));
    ASSERT_TRUE(p.ok()) << method_name(m);
    EXPECT_EQ(*p, m);
  }
  EXPECT_EQ(parse_method("lora+").value(), Method::lora_plus);
  EXPECT_EQ(parse_method("loraplus").value(), Method::lora_plus);
  auto bad = parse_method("qlora");
  ASSERT_FALSE(bad.ok());
  const std::string msg = bad.error().message();
  EXPECT_TRUE(has(msg, "unknown fine-tuning method 'qlora'"));
  for (const char* name : {"full", "freeze", "lora", "lora_plus", "rslora", "dora", "pissa"}) {
    EXPECT_TRUE(has(msg, name));
  }
  EXPECT_TRUE(method_uses_adapters(Method::dora));
  EXPECT_FALSE(method_uses_adapters(Method::freeze));
}

// ---- 2. every method on a random-weight card with synthetic samples

class EveryMethod : public ::testing::TestWithParam<Method> {};

TEST_P(EveryMethod, TrainsWhatItShouldAndLeavesTheRestAlone) {
  const Method m = GetParam();
  FinetuneConfig c = synthetic_config(m);
  c.out_dir = env().path(std::string("out_") + method_name(m));
  c.merge = method_uses_adapters(m);
  int on_step = 0, on_eval = 0;
  TrainCallbacks cb;
  cb.on_step = [&](const StepRecord&, const TrainConfig& t) {
    ++on_step;
    EXPECT_EQ(t.steps, 3);
  };
  cb.on_eval = [&](const EvalRecord&) { ++on_eval; };
  auto run = run_finetune(c, cb);
  ASSERT_TRUE(run.ok()) << run.error().message();
  const FinetuneReport& r = *run;
  EXPECT_EQ(on_step, 3);
  EXPECT_EQ(on_eval, 1);
  ASSERT_EQ(r.steps.size(), 3u);
  ASSERT_EQ(r.step_samples.size(), 3u);
  for (size_t i = 0; i < r.steps.size(); ++i) {
    EXPECT_EQ(r.steps[i].step, static_cast<int64_t>(i) + 1);
    EXPECT_TRUE(std::isfinite(r.steps[i].loss)) << i;
    EXPECT_TRUE(std::isfinite(r.steps[i].grad_norm)) << i;
    EXPECT_EQ(r.step_samples[i], 4);
    EXPECT_EQ(r.steps[i].tokens, 4 * 16);
  }
  ASSERT_EQ(r.evals.size(), 1u);
  EXPECT_EQ(r.evals[0].step, 3);
  EXPECT_TRUE(std::isfinite(r.final_val_loss()));
  EXPECT_EQ(r.data["kind"], "synthetic");
  EXPECT_EQ(r.data["train_samples"], 8);
  EXPECT_EQ(r.data["val_samples"], 4);  // max(batch, samples / 10)
  expect_metrics(r);

  const auto base = fresh_base(c);
  const int64_t base_total = base->num_parameters();
  if (m == Method::full) {
    EXPECT_EQ(r.total_parameters, base_total);
    EXPECT_EQ(r.trainable_parameters, base_total);
    EXPECT_EQ(r.adapted_modules, 0);
  } else if (m == Method::freeze) {
    int64_t last_layer = 0;
    for (const NamedParameter& p : base->parameters()) {
      if (p.name.rfind("model.layers.1.", 0) == 0) last_layer += p.tensor.numel();
    }
    EXPECT_EQ(r.total_parameters, base_total);
    EXPECT_EQ(r.trainable_parameters, last_layer);  // k = 1: only the last layer
    EXPECT_LT(r.trainable_parameters, base_total);
  } else {
    const int64_t adapters = expected_adapter_parameters(*base, 4, m == Method::dora);
    // 2 layers x r 4 x sum(in + out) = 2 x 4 x 512 (+ 2 x 256 magnitudes for DoRA)
    EXPECT_EQ(adapters, m == Method::dora ? 4096 + 512 : 4096);
    EXPECT_EQ(r.trainable_parameters, adapters);
    EXPECT_EQ(r.total_parameters, base_total + adapters);
    EXPECT_EQ(r.adapted_modules, 14);
  }

  // What was written against the base the run started from: frozen weights
  // bit-identical, trained ones moved.
  ASSERT_FALSE(r.output.empty());
  ASSERT_TRUE(fs::exists(c.out_dir + "/config.json"));
  auto file = io::SafetensorsFile::open(c.out_dir + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.error().message();
  if (c.merge) {
    ASSERT_TRUE(fs::exists(c.out_dir + "/adapter/" + kPeftConfigFile));
    ASSERT_TRUE(fs::exists(c.out_dir + "/adapter/" + kPeftWeightsFile));
  }
  // The adapted model rebuilt from the untouched base and the saved adapter.
  std::unique_ptr<DecoderLM> rebuilt;
  if (c.merge) {
    rebuilt = fresh_base(c);
    auto loaded = load_peft_adapter(*rebuilt, c.out_dir + "/adapter");
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    merge_lora(*rebuilt);
  }
  int moved = 0;
  for (const NamedParameter& p : base->parameters()) {
    ASSERT_TRUE(file->contains(p.name)) << p.name;
    const std::vector<float> saved = file->load(p.name).value().to_floats();
    const std::vector<float> before = p.tensor.to_floats();
    const bool changed = !same_bits(saved, before);
    moved += changed;
    if (m == Method::freeze) {
      EXPECT_EQ(changed, p.name.rfind("model.layers.1.", 0) == 0) << p.name;
    } else if (c.merge) {
      if (is_slot_weight(p.name)) {
        // merged = f(base W, trained adapter): equal bits only if W stayed put.
        const NamedParameter* q = nullptr;
        for (const NamedParameter& x : rebuilt->parameters()) {
          if (x.name == p.name) q = &x;
        }
        ASSERT_NE(q, nullptr) << p.name;
        EXPECT_TRUE(same_bits(saved, q->tensor.to_floats())) << p.name << ": the frozen base changed";
        EXPECT_TRUE(changed) << p.name << ": the adapter did not train";
      } else {
        EXPECT_FALSE(changed) << p.name << ": a frozen weight changed";
      }
    }
  }
  if (m == Method::full) {
    EXPECT_EQ(moved, static_cast<int>(base->parameters().size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, EveryMethod,
                         ::testing::Values(Method::full, Method::freeze, Method::lora, Method::lora_plus,
                                           Method::rslora, Method::dora, Method::pissa),
                         [](const auto& info) { return std::string(method_name(info.param)); });

TEST(FinetuneRun, FullFineTuningLowersTheLossOnARepeatedSet) {
  FinetuneConfig c = synthetic_config(Method::full);
  c.synthetic_samples = 4;  // one batch, seen every step
  c.steps = 20;
  c.lr = 1e-2f;
  c.warmup_ratio = 0;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->steps.size(), 20u);
  const double first = r->steps.front().loss;
  const double last = r->metrics["train_loss"].get<double>();  // mean of the last tenth
  EXPECT_NEAR(first, std::log(400.0), 0.5);  // random init: about uniform
  EXPECT_LT(last, first - 1.0) << "loss " << first << " -> " << last;
  for (const StepRecord& s : r->steps) EXPECT_TRUE(std::isfinite(s.loss));
}

TEST(FinetuneRun, LoraPlusAtRatioOneIsLora) {
  FinetuneConfig lora = synthetic_config(Method::lora);
  FinetuneConfig plus = synthetic_config(Method::lora_plus);
  plus.loraplus_ratio = 1.0f;
  auto a = run_finetune(lora), b = run_finetune(plus);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->final_val_loss(), b->final_val_loss());
  plus.loraplus_ratio = 16.0f;  // lora_B at 16x: another trajectory
  auto c = run_finetune(plus);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->final_val_loss(), c->final_val_loss());
}

TEST(FinetuneRun, EvalOnlyMeasuresTheModelAsLoaded) {
  FinetuneConfig c = synthetic_config(Method::full);
  c.eval_only = true;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->steps.empty());
  ASSERT_EQ(r->evals.size(), 1u);
  EXPECT_EQ(r->evals[0].step, 0);
  EXPECT_NEAR(r->final_val_loss(), std::log(400.0), 0.5);
  EXPECT_TRUE(r->metrics["samples_per_second"].is_null());
  EXPECT_TRUE(r->metrics["train_loss"].is_null());
  EXPECT_EQ(r->metrics["optimizer_steps"], 0);
  // No method is applied to a model that is only evaluated (LoRA would add adapters).
  FinetuneConfig lora = synthetic_config(Method::lora);
  lora.eval_only = true;
  auto l = run_finetune(lora);
  ASSERT_TRUE(l.ok()) << l.error().message();
  EXPECT_EQ(l->adapted_modules, 0);
  EXPECT_EQ(l->total_parameters, r->total_parameters);
}

// Synthetic samples longer than the card's context are a config error, not
// an exception from the model's EL_ENSURE.
TEST(FinetuneRun, SyntheticSeqLenAboveTheContextIsAnError) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.seq_len = 64;  // the card's max_seq_len is 32
  Result<FinetuneReport> r = make_error("not run");
  EXPECT_NO_THROW(r = run_finetune(c));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.error().message(), "max_seq_len"));
}

// ---- 3. the schedule

TEST(FinetuneSchedule, StepsFromEpochsAndAccumulation) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 0;
  c.synthetic_samples = 10;  // batches of 4, 4, 2 per epoch
  c.epochs = 3;
  c.grad_accum = 2;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  // ceil(3 epochs x 3 batches / 2) = 5 steps; the 10th micro-batch starts epoch 4.
  ASSERT_EQ(r->steps.size(), 5u);
  EXPECT_EQ(r->step_samples, (std::vector<int64_t>{8, 6, 6, 8, 6}));  // padding rows not counted
  EXPECT_EQ(r->metrics["optimizer_steps"], 5);
}

TEST(FinetuneSchedule, AccumulationKeepsTheSamplesPerStep) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 0;
  c.synthetic_samples = 8;
  c.batch_size = 2;
  auto one = run_finetune(c);
  c.grad_accum = 2;
  auto two = run_finetune(c);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(one->step_samples, (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(two->step_samples, (std::vector<int64_t>{4, 4}));  // 2 x B
  for (const StepRecord& s : two->steps) EXPECT_EQ(s.tokens, 2 * 2 * 16);
}

TEST(FinetuneSchedule, TimingWarmupLeavesOutTheFirstSteps) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 4;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const nlohmann::json& al = r->metrics["al_seconds"];
  EXPECT_EQ(al["n"], 3);  // steps - 1
  double sum = 0;
  int64_t samples = 0;
  for (size_t i = 1; i < r->steps.size(); ++i) {
    sum += r->steps[i].seconds;
    samples += r->step_samples[i];
  }
  EXPECT_NEAR(al["mean"].get<double>(), sum / 3, 1e-9);
  EXPECT_NEAR(r->metrics["samples_per_second"].get<double>(), double(samples) / sum,
              1e-6 * double(samples) / sum);
  c.timing_warmup_steps = 0;
  auto all = run_finetune(c);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->metrics["al_seconds"]["n"], 4);
  c.steps = 1;  // a single step is timed even inside the warm-up
  c.timing_warmup_steps = 1;
  auto single = run_finetune(c);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->metrics["al_seconds"]["n"], 1);
}

TEST(FinetuneSchedule, EvaluatesEveryNStepsAndAtTheEnd) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 5;
  c.eval_every = 2;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  std::vector<int64_t> at;
  for (const EvalRecord& e : r->evals) at.push_back(e.step);
  EXPECT_EQ(at, (std::vector<int64_t>{2, 4, 5}));
  EXPECT_EQ(r->metrics["evals"].size(), 3u);
  c.steps = 6;
  c.eval_every = 3;  // the end is an eval step already: no duplicate
  r = run_finetune(c);
  ASSERT_TRUE(r.ok());
  at.clear();
  for (const EvalRecord& e : r->evals) at.push_back(e.step);
  EXPECT_EQ(at, (std::vector<int64_t>{3, 6}));
  for (const EvalRecord& e : r->evals) EXPECT_EQ(e.tokens, 4 * 15);  // 4 samples, 15 targets each
}

TEST(FinetuneSchedule, LinearWarmupThenCosineToZero) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 8;
  c.warmup_ratio = 0.25f;  // 2 warm-up steps (0.25 is exact in float)
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const double lr = c.lr, pi = std::acos(-1.0);
  std::vector<double> want = {lr / 2, lr};
  for (int k = 0; k < 6; ++k) want.push_back(lr * 0.5 * (1 + std::cos(pi * k / 6)));  // down to 0
  ASSERT_EQ(r->steps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(r->steps[i].lr, want[i], 1e-9) << "step " << i + 1;
}

// warmup = ceil(ratio * steps) as LLaMA-Factory / transformers compute it in
// double: 0.1 of 10 steps is 1 step (the float 0.1f is 0.10000000149, and
// ceil(1.0000000149) would make it 2).
TEST(FinetuneSchedule, DefaultWarmupRatioOfTenSteps) {
  FinetuneConfig c = synthetic_config(Method::lora);
  c.steps = 10;
  c.warmup_ratio = 0.1f;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_NEAR(r->steps[0].lr, c.lr, 1e-9) << "one warm-up step: the first step is at the peak";
  EXPECT_NEAR(r->steps[1].lr, c.lr, 1e-9);
}

// ---- 4. SFT data: the e2e fixture (HF Llama + tokenizer.json)

class SftFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = data::load_text_tokenizer(kE2e + "/tiny_chat");
    if (!tok.ok()) {
      const std::string msg = tok.error().message();
      if (msg.find("support not built") != std::string::npos) GTEST_SKIP() << msg;
      FAIL() << msg;
    }
  }
  static FinetuneConfig config(Method m) {
    FinetuneConfig c;
    c.hf_dir = kE2e + "/tiny_chat";
    c.data = {kE2e + "/tiny_chat_sft.jsonl"};
    c.val_fraction = 0.2;
    c.method = m;
    c.batch_size = 4;
    c.epochs = 1;
    c.lr = 1e-2f;
    c.lora.r = 4;
    c.lora.alpha = 8;
    c.sample_interval_ms = 10;
    return c;
  }
};

TEST_F(SftFixture, LoraRunDescribesTheDataAndWritesAPeftAdapter) {
  FinetuneConfig c = config(Method::lora);
  c.out_dir = env().path("sft_lora");
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const nlohmann::json& d = r->data;
  EXPECT_EQ(d["kind"], "sft");
  EXPECT_EQ(d["template"], "alpaca");
  EXPECT_EQ(d["records"], 24);
  EXPECT_EQ(d["bad_records"], 0);
  EXPECT_EQ(d["dropped"], 0);
  const int64_t train = d["train_samples"], val = d["val_samples"];
  EXPECT_EQ(train + val, 24);
  EXPECT_GT(val, 0);
  EXPECT_GT(train, val);
  EXPECT_GT(d["train_loss_tokens"].get<int64_t>(), 0);
  EXPECT_LT(d["train_loss_tokens"].get<int64_t>(), d["train_tokens"].get<int64_t>());  // prompts masked
  EXPECT_GT(d["max_length"].get<int64_t>(), 0);
  EXPECT_TRUE(has(d["summary"].get<std::string>(), "tiny_chat_sft.jsonl"));
  EXPECT_EQ(static_cast<int64_t>(r->steps.size()), (train + 3) / 4);  // one epoch of batches of 4
  EXPECT_EQ(std::accumulate(r->step_samples.begin(), r->step_samples.end(), int64_t{0}), train);
  EXPECT_EQ(r->adapted_modules, 14);
  expect_metrics(*r);
  EXPECT_TRUE(fs::exists(c.out_dir + "/" + kPeftConfigFile));
  EXPECT_TRUE(fs::exists(c.out_dir + "/" + kPeftWeightsFile));
  EXPECT_FALSE(fs::exists(c.out_dir + "/model.safetensors"));
  EXPECT_TRUE(has(r->output, "PEFT adapter"));

  // The adapter loaded back and only evaluated: the run's final validation loss.
  FinetuneConfig e = config(Method::lora);
  e.adapter_dir = c.out_dir;
  e.eval_only = true;
  auto ev = run_finetune(e);
  ASSERT_TRUE(ev.ok()) << ev.error().message();
  EXPECT_TRUE(ev->steps.empty());
  EXPECT_EQ(ev->adapted_modules, 14);
  EXPECT_NEAR(ev->final_val_loss(), r->final_val_loss(), 1e-5);
  // ... and differs from the base model's (the adapter did train).
  FinetuneConfig b = config(Method::full);
  b.eval_only = true;
  auto base = run_finetune(b);
  ASSERT_TRUE(base.ok()) << base.error().message();
  EXPECT_GT(std::abs(base->final_val_loss() - r->final_val_loss()), 1e-3);
}

TEST_F(SftFixture, MergeWritesAWholeCheckpointAndTheAdapter) {
  FinetuneConfig c = config(Method::dora);
  c.out_dir = env().path("sft_merged");
  c.merge = true;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}) {
    EXPECT_TRUE(fs::exists(c.out_dir + "/" + f)) << f;
  }
  EXPECT_TRUE(has(r->output, "merged model"));
  // The merged checkpoint, evaluated as a plain model: the same loss.
  FinetuneConfig e = config(Method::full);
  e.hf_dir = c.out_dir;
  e.eval_only = true;
  auto ev = run_finetune(e);
  ASSERT_TRUE(ev.ok()) << ev.error().message();
  EXPECT_NEAR(ev->final_val_loss(), r->final_val_loss(), 1e-5);
}

TEST_F(SftFixture, FullFineTuningWritesAHfDirectoryWithTheTokenizer) {
  FinetuneConfig c = config(Method::full);
  c.epochs = 2;
  c.out_dir = env().path("sft_full");
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_LT(r->metrics["train_loss"].get<double>(), r->steps.front().loss);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
    EXPECT_TRUE(fs::exists(c.out_dir + "/" + f)) << f;
  }
  EXPECT_FALSE(fs::exists(c.out_dir + "/" + kPeftConfigFile));
  EXPECT_TRUE(has(r->output, "Hugging Face model"));
}

TEST_F(SftFixture, ATokenizerBiggerThanTheModelIsAnError) {
  FinetuneConfig c = config(Method::lora);
  c.hf_dir.clear();
  c.card = env().card_path;  // vocab 400
  c.tokenizer = kE2e + "/tiny_chat";  // 1010 ids
  auto r = run_finetune(c);
  ASSERT_FALSE(r.ok());
  const std::string msg = r.error().message();
  EXPECT_TRUE(has(msg, c.tokenizer));
  EXPECT_TRUE(has(msg, "the tokenizer has 1010 ids but the model's vocab_size is 400"));
}

TEST_F(SftFixture, SamplesLongerThanSeqLenAreAnError) {
  FinetuneConfig c = config(Method::lora);
  c.seq_len = 4;
  auto r = run_finetune(c);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(has(r.error().message(), "finetune config: seq_len"));
  EXPECT_TRUE(has(r.error().message(), "more than --seq-len 4"));
}

// ---- 5. the report

TEST(FinetuneReportJson, HasTheDocumentedKeys) {
  FinetuneConfig c = synthetic_config(Method::dora);
  c.steps = 2;
  auto r = run_finetune(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const nlohmann::json j = report_to_json(c, *r);
  for (const char* key : {"axis", "config", "model", "card", "parameters", "trainable_parameters",
                          "adapted_modules", "val_loss", "train_loss", "data", "output", "metrics"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j.size(), 12u);
  EXPECT_EQ(j["axis"], "finetune");
  EXPECT_EQ(j["model"], env().card_path);
  EXPECT_EQ(j["card"], "sft-trainer-test");
  EXPECT_EQ(j["parameters"], r->total_parameters);
  EXPECT_EQ(j["trainable_parameters"], r->trainable_parameters);
  EXPECT_EQ(j["adapted_modules"], 14);
  EXPECT_DOUBLE_EQ(j["val_loss"].get<double>(), r->final_val_loss());
  EXPECT_EQ(j["train_loss"], r->metrics["train_loss"]);
  EXPECT_EQ(j["output"], "");
  EXPECT_EQ(j["config"]["method"], "dora");
  EXPECT_EQ(j["config"]["lora_r"], 4);
  EXPECT_EQ(j["config"]["synthetic_samples"], 8);
  EXPECT_EQ(j["data"]["kind"], "synthetic");
  EXPECT_EQ(j["metrics"]["method"], "dora");
  EXPECT_EQ(j["metrics"]["steps"].size(), 2u);
  EXPECT_TRUE(j.dump().size() > 0);  // serialisable (no NaN objects)
}

}  // namespace
}  // namespace el::finetune
