// End-to-end tests of mixed precision on real text (the prose fixture, see
// tests/common/train_env.h): bf16/f16 models start from the rounded f32
// init, bf16 training tracks f32, f16 trains with dynamic loss scaling and
// backs off on overflow, and bf16/f16 checkpoints resume identically.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "autograd/tape.h"
#include "common/train_env.h"
#include "io/safetensors.h"
#include "models/decoder_lm.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace el {
namespace {

using test::base_train_config;
using test::TrainEnv;

Tensor rounded_to(const Tensor& t, DType dt) {
  Tensor r = Tensor::empty(t.shape(), dt);
  r.copy_from(t);
  return r;
}

TEST(MixedPrecisionModel, HalfParametersAreTheRoundedF32Init) {
  auto card = find_model_card(TrainEnv::get().card_path);
  ASSERT_TRUE(card.ok()) << card.error().message();
  auto f32 = DecoderLM::create(card.value(), Device::cpu(), 42);
  ASSERT_TRUE(f32.ok());
  const Tensor ids = Tensor::from_ints({1, 5, 9, 3, 7, 2, 8, 4}, {2, 4});
  const Tensor targets = Tensor::from_ints({5, 9, 3, 7, 2, 8, 4, 1}, {2, 4});
  NoGrad no_grad;
  const float loss32 = f32.value()->loss(ids, targets).item();
  for (DType dt : {DType::bf16, DType::f16}) {
    auto half = DecoderLM::create(card.value(), Device::cpu(), 42, dt);
    ASSERT_TRUE(half.ok());
    EXPECT_EQ(half.value()->param_dtype(), dt);
    const ParameterList& a = f32.value()->parameters();
    const ParameterList& b = half.value()->parameters();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(b[i].tensor.dtype(), dt) << b[i].name;
      EXPECT_EQ(b[i].tensor.to_floats(), rounded_to(a[i].tensor, dt).to_floats()) << b[i].name;
    }
    // Activations follow the embedding's dtype; the loss is f32 and close.
    const Tensor logits = half.value()->forward(ids);
    EXPECT_EQ(logits.dtype(), dt);
    const Tensor loss = half.value()->loss(ids, targets);
    EXPECT_EQ(loss.dtype(), DType::f32);
    EXPECT_NEAR(loss.item(), loss32, 0.01 * loss32) << dtype_name(dt);
  }
  auto bad = DecoderLM::create(card.value(), Device::cpu(), 42, DType::i32);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().what.find("parameter dtype i32 is not a float dtype"), std::string::npos)
      << bad.error().message();
}

TEST(MixedPrecisionTraining, Bf16ReducesTheLossAndTracksF32) {
  TrainConfig c = base_train_config();
  c.steps = 30;
  TrainConfig c16 = c;
  c16.precision = Precision::bf16;
  auto ref = run_training(c);
  auto bf = run_training(c16);
  ASSERT_TRUE(ref.ok()) << ref.error().message();
  ASSERT_TRUE(bf.ok()) << bf.error().message();
  const auto& s = bf.value().steps;
  ASSERT_EQ(s.size(), 30u);
  EXPECT_LT(s.back().loss, s.front().loss - 0.5);
  // Same seed, same data order, weights equal up to bf16 rounding: the loss
  // curves agree closely at first (and both learn).
  for (size_t i = 0; i < 5; ++i) {
    const double want = ref.value().steps[i].loss;
    EXPECT_NEAR(s[i].loss, want, 0.02 * want) << "step " << i + 1;
  }
  EXPECT_NEAR(bf.value().final_val_loss(), ref.value().final_val_loss(),
              0.05 * ref.value().final_val_loss());
  const auto& m = bf.value().metrics;
  EXPECT_EQ(m["precision"], "bf16");
  EXPECT_EQ(m["loss_scale_skipped_steps"], 0);  // bf16 needs no loss scaling
  EXPECT_TRUE(m["loss_scale_history"].empty());
  for (const auto& r : s) EXPECT_EQ(r.loss_scale, 1.0);
}

TEST(MixedPrecisionTraining, F16WithLossScalingTrains) {
  TrainConfig c = base_train_config();
  c.steps = 30;
  c.precision = Precision::f16;
  auto r = run_training(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const TrainReport& rep = r.value();
  ASSERT_EQ(rep.steps.size(), 30u);
  EXPECT_LT(rep.steps.back().loss, rep.steps.front().loss - 0.5);
  EXPECT_TRUE(std::isfinite(rep.final_val_loss()));
  const auto& m = rep.metrics;
  EXPECT_EQ(m["precision"], "f16");
  const auto& hist = m["loss_scale_history"];
  ASSERT_EQ(hist.size(), 30u);  // one raw sample per step
  EXPECT_EQ(hist[0]["scale"].get<double>(), 65536.0);
  EXPECT_EQ(hist[0]["step"], 1);
  int64_t skipped = 0;
  for (const auto& h : hist) skipped += h["skipped"].get<bool>() ? 1 : 0;
  EXPECT_EQ(m["loss_scale_skipped_steps"].get<int64_t>(), skipped);
  EXPECT_LT(skipped, 5);  // 2^16 suits this model: at most a few overflows
  // grad_norm is reported unscaled: comparable to the f32 run's.
  TrainConfig c32 = c;
  c32.precision = Precision::f32;
  auto r32 = run_training(c32);
  ASSERT_TRUE(r32.ok());
  EXPECT_NEAR(rep.steps[0].grad_norm, r32.value().steps[0].grad_norm,
              0.05 * r32.value().steps[0].grad_norm);
}

// A scale far too large makes the scaled f16 gradients overflow: those steps
// are skipped (no update, counted, grad_norm NaN) and the scale halves until
// the gradients fit; a short growth interval then doubles it again.
TEST(MixedPrecisionTraining, F16OverflowSkipsStepsAndBacksOff) {
  TrainEnv& env = TrainEnv::get();
  TrainConfig c = base_train_config();
  c.steps = 20;
  c.precision = Precision::f16;
  c.loss_scale_init = 4194304.0f;  // 2^22 (2^17 is the largest that fits here)
  c.loss_scale_growth_interval = 4;
  c.out_dir = env.dir + "/f16_overflow";
  auto r = run_training(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const TrainReport& rep = r.value();
  ASSERT_EQ(rep.steps.size(), 20u);
  const auto& hist = rep.metrics["loss_scale_history"];
  const int64_t skipped = rep.metrics["loss_scale_skipped_steps"].get<int64_t>();
  ASSERT_GE(skipped, 1);
  ASSERT_LT(skipped, 10);
  EXPECT_TRUE(rep.steps[0].skipped);
  EXPECT_TRUE(std::isnan(rep.steps[0].grad_norm));
  // The first steps overflow and halve the scale each time, until it fits.
  size_t leading = 0;
  while (leading < hist.size() && hist[leading]["skipped"].get<bool>()) ++leading;
  ASSERT_GE(leading, 1u);
  ASSERT_LT(leading, 10u);
  for (size_t i = 0; i < leading; ++i) {
    EXPECT_EQ(hist[i]["scale"].get<double>(), std::ldexp(1.0, 22 - static_cast<int>(i)));
  }
  EXPECT_EQ(hist[leading]["scale"].get<double>(), std::ldexp(1.0, 22 - static_cast<int>(leading)));
  EXPECT_FALSE(rep.steps[leading].skipped);
  EXPECT_TRUE(std::isfinite(rep.steps[leading].grad_norm));
  // After 4 finite steps the scale doubles (unless that overflowed again).
  bool grew = false;
  for (size_t i = 1; i < hist.size(); ++i) {
    grew |= hist[i]["scale"].get<double>() > hist[i - 1]["scale"].get<double>();
  }
  EXPECT_TRUE(grew) << hist.dump();
  EXPECT_LT(rep.steps.back().loss, rep.steps[leading].loss);
  // The checkpoint records the updates actually applied and the scaler state.
  auto st = read_checkpoint_state(rep.checkpoint);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_EQ(st.value().step, 20);
  EXPECT_EQ(st.value().optimizer_steps, 20 - skipped);
  EXPECT_GT(st.value().loss_scale, 0.f);
}

// Runs `full` to the end, and the same schedule split at step 4 through a
// checkpoint; the losses after the split must match bit for bit.
void expect_resume_identical(TrainConfig full, const std::string& name) {
  TrainEnv& env = TrainEnv::get();
  auto a = run_training(full);
  ASSERT_TRUE(a.ok()) << a.error().message();
  TrainConfig first = full;
  first.stop_after = 4;
  first.out_dir = env.dir + "/" + name;
  auto b = run_training(first);
  ASSERT_TRUE(b.ok()) << b.error().message();
  TrainConfig second = full;
  second.resume = first.out_dir + "/checkpoint.safetensors";
  auto c = run_training(second);
  ASSERT_TRUE(c.ok()) << c.error().message();
  const size_t rest = a.value().steps.size() - 4;
  ASSERT_EQ(c.value().steps.size(), rest);
  for (size_t i = 0; i < rest; ++i) {
    EXPECT_EQ(a.value().steps[4 + i].loss, c.value().steps[i].loss) << name << " step " << 5 + i;
    EXPECT_EQ(a.value().steps[4 + i].loss_scale, c.value().steps[i].loss_scale) << name;
  }
  EXPECT_EQ(a.value().final_val_loss(), c.value().final_val_loss()) << name;
}

TEST(MixedPrecisionCheckpoint, Bf16ResumeContinuesIdentically) {
  TrainConfig c = base_train_config();
  c.precision = Precision::bf16;
  expect_resume_identical(c, "resume_bf16");
  // The checkpoint holds bf16 parameters and their f32 masters.
  auto file = io::SafetensorsFile::open(TrainEnv::get().dir + "/resume_bf16/checkpoint.safetensors");
  ASSERT_TRUE(file.ok()) << file.error().message();
  const std::string name = "model.layers.0.mlp.gate_proj.weight";
  ASSERT_TRUE(file.value().contains(name));
  ASSERT_TRUE(file.value().contains("optimizer.master." + name));
  EXPECT_EQ(file.value().info(name).value().dtype, DType::bf16);
  EXPECT_EQ(file.value().info("optimizer.master." + name).value().dtype, DType::f32);
  // The parameter is its master rounded.
  auto p = file.value().load(name);
  auto master = file.value().load("optimizer.master." + name);
  ASSERT_TRUE(p.ok() && master.ok());
  EXPECT_EQ(p.value().to_floats(), rounded_to(master.value(), DType::bf16).to_floats());
}

TEST(MixedPrecisionCheckpoint, F16ResumeRestoresTheLossScaler) {
  TrainConfig c = base_train_config();
  c.precision = Precision::f16;
  c.loss_scale_init = 4194304.0f;  // 2^22: the first steps overflow and back off
  c.loss_scale_growth_interval = 3;
  expect_resume_identical(c, "resume_f16");
}

// A bf16 checkpoint continued in f32 starts from the exact f32 masters.
TEST(MixedPrecisionCheckpoint, F32ModelLoadsTheMastersOfABf16Run) {
  TrainEnv& env = TrainEnv::get();
  TrainConfig c = base_train_config();
  c.precision = Precision::bf16;
  c.steps = 2;
  c.out_dir = env.dir + "/bf16_to_f32";
  auto r = run_training(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto card = find_model_card(env.card_path);
  ASSERT_TRUE(card.ok());
  auto model = DecoderLM::create(card.value(), Device::cpu(), 1);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE(load_checkpoint(r.value().checkpoint, *model.value(), nullptr).ok());
  auto file = io::SafetensorsFile::open(r.value().checkpoint);
  ASSERT_TRUE(file.ok());
  const NamedParameter& p = model.value()->parameters()[1];
  auto master = file.value().load("optimizer.master." + p.name);
  ASSERT_TRUE(master.ok());
  EXPECT_EQ(p.tensor.to_floats(), master.value().to_floats()) << p.name;
}

TEST(MixedPrecisionCheckpoint, MalformedScalerMetadataIsReported) {
  const std::string path = TrainEnv::get().dir + "/bad_meta.safetensors";
  const std::vector<std::pair<std::string, Tensor>> tensors = {{"x", Tensor::zeros({1})}};
  auto write = [&](const char* key, const char* value) {
    std::map<std::string, std::string> md = {{"efficientllm.format", "efficientllm.checkpoint.v1"},
                                             {"efficientllm.step", "3"}};
    md[key] = value;
    ASSERT_TRUE(io::save_safetensors(path, tensors, md).ok());
  };
  write("efficientllm.loss_scale", "abc");
  auto r = read_checkpoint_state(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("'efficientllm.loss_scale' is not a number: 'abc'"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(r.error().where, path);
  write("efficientllm.loss_scale", "-2");
  r = read_checkpoint_state(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("must be a positive finite number, got '-2'"), std::string::npos)
      << r.error().message();
  write("efficientllm.optimizer_steps", "7x");
  r = read_checkpoint_state(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("'efficientllm.optimizer_steps' is not an integer: '7x'"),
            std::string::npos)
      << r.error().message();
  // Files without the optional keys (f32 runs of earlier versions) still load.
  write("efficientllm.loader_state", "{}");
  r = read_checkpoint_state(path);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value().optimizer_steps, -1);
  EXPECT_EQ(r.value().loss_scale, 0.f);
}

// Loss scaling absorbs gradient overflows, not divergence: a run whose loss
// goes non-finite still stops with the step, as in f32.
TEST(MixedPrecisionTraining, F16DivergenceStillStops) {
  TrainConfig c = base_train_config();
  c.precision = Precision::f16;
  c.loss_scale_init = 1.0f;  // the minimum: an overflow cannot be backed off
  c.lr = 1e30f;
  c.min_lr = 1e30f;
  c.warmup_steps = 0;
  c.grad_clip = 0;
  auto r = run_training(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("non-finite"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().what.find("at step"), std::string::npos) << r.error().message();
}

TEST(MixedPrecisionTraining, BadLossScaleConfigIsReported) {
  TrainConfig c = base_train_config();
  c.precision = Precision::f16;
  c.loss_scale_init = 0.5f;
  auto r = run_training(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("loss_scale_init (0.5)"), std::string::npos) << r.error().message();
  EXPECT_EQ(c.to_json()["precision"], "f16");
}

}  // namespace
}  // namespace el
