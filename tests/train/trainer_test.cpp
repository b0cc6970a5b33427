// End-to-end tests of the training loop on real text (the prose fixture):
// loss goes down, resume continues bit-for-bit, bad checkpoints and NaNs are
// reported with the step/tensor at fault.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/train_env.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace el {
namespace {

namespace fs = std::filesystem;

using test::TrainEnv;
TrainConfig base_config() { return test::base_train_config(); }

TEST(Trainer, LossDecreasesAndMetricsAreRecorded) {
  TrainConfig c = base_config();
  c.steps = 30;
  c.eval_every = 15;
  auto r = run_training(c);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const TrainReport& rep = r.value();
  ASSERT_EQ(rep.steps.size(), 30u);
  ASSERT_EQ(rep.evals.size(), 2u);
  EXPECT_LT(rep.steps.back().loss, rep.steps.front().loss - 0.5);
  EXPECT_NEAR(rep.evals.back().perplexity, std::exp(rep.evals.back().val_loss), 1e-6);
  const auto& m = rep.metrics;
  EXPECT_EQ(m["tokens_per_step"], 2 * 16 * 2);
  EXPECT_GT(m["tokens_per_second"].get<double>(), 0);
  EXPECT_GT(m["mfu"].get<double>(), 0);
  EXPECT_EQ(m["steps"].size(), 30u);        // raw per-step samples
  EXPECT_TRUE(m["samples"].contains("t_s"));  // raw sampler samples
  EXPECT_TRUE(m["memory_energy"].contains("amu_live_gb"));
}

TEST(Trainer, ResumeContinuesIdentically) {
  TrainEnv& env = TrainEnv::get();
  TrainConfig full = base_config();
  auto a = run_training(full);
  ASSERT_TRUE(a.ok()) << a.error().message();

  TrainConfig first = base_config();
  first.stop_after = 4;
  first.out_dir = env.dir + "/resume";
  auto b = run_training(first);
  ASSERT_TRUE(b.ok()) << b.error().message();
  ASSERT_EQ(b.value().steps.size(), 4u);

  TrainConfig second = base_config();
  second.resume = first.out_dir + "/checkpoint.safetensors";
  auto c = run_training(second);
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_EQ(c.value().steps.size(), 4u);
  EXPECT_EQ(c.value().steps.front().step, 5);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.value().steps[4 + i].loss, c.value().steps[i].loss) << "step " << 5 + i;
  }
  EXPECT_EQ(a.value().final_val_loss(), c.value().final_val_loss());
}

TEST(Trainer, CheckpointOfAnotherCardNamesTheTensor) {
  TrainEnv& env = TrainEnv::get();
  TrainConfig first = base_config();
  first.steps = 1;
  first.out_dir = env.dir + "/other";
  ASSERT_TRUE(run_training(first).ok());
  TrainConfig other = base_config();
  other.model = env.other_card_path;
  other.resume = first.out_dir + "/checkpoint.safetensors";
  auto r = run_training(other);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().what.find("[64, 32]"), std::string::npos) << r.error().message();
}

TEST(Trainer, NonFiniteLossStopsWithTheStep) {
  TrainConfig c = base_config();
  c.lr = 1e30f;
  c.min_lr = 1e30f;
  c.warmup_steps = 0;
  c.grad_clip = 0;
  auto r = run_training(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("non-finite"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().what.find("at step"), std::string::npos);
}

TEST(Trainer, RejectsBadConfigs) {
  TrainConfig c = base_config();
  c.seq_len = 64;  // the card allows 32
  auto r = run_training(c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("max_seq_len"), std::string::npos);
  c = base_config();
  c.data_dir = "/nonexistent/dataset";
  EXPECT_FALSE(run_training(c).ok());
  c = base_config();
  c.model = "no-such-card";
  EXPECT_FALSE(run_training(c).ok());
}

TEST(Checkpoint, NotACheckpointIsRejected) {
  auto r = read_checkpoint_state("/nonexistent.safetensors");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace el
