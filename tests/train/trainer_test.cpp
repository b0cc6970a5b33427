// End-to-end tests of the training loop on real text (the prose fixture):
// loss goes down, resume continues bit-for-bit, bad checkpoints and NaNs are
// reported with the step/tensor at fault.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace el {
namespace {

namespace fs = std::filesystem;

// A tokenizer and dataset made once per process from the fixture prose.
class TrainerEnv {
 public:
  static TrainerEnv& get() {
    static TrainerEnv env;
    return env;
  }
  std::string dir, data_dir, card_path, other_card_path;

 private:
  TrainerEnv() {
    char tmpl[] = "/tmp/el_trainer_test_XXXXXX";
    dir = mkdtemp(tmpl);
    const std::string prose = std::string(EL_TEST_DATA_DIR) + "/data/prose.txt";
    // One JSON Lines document per paragraph, so there is a validation split.
    std::ifstream in(prose);
    std::stringstream ss;
    ss << in.rdbuf();
    std::ofstream jsonl(dir + "/docs.jsonl");
    std::string text = ss.str(), para;
    std::istringstream lines(text);
    std::string line;
    int docs = 0;
    auto flush = [&] {
      if (para.empty()) return;
      nlohmann::json j = {{"text", para}};
      jsonl << j.dump() << "\n";
      ++docs;
      para.clear();
    };
    while (std::getline(lines, line)) {
      if (line.empty()) flush(); else para += (para.empty() ? "" : " ") + line;
    }
    flush();
    jsonl.close();
    for (int copy = 0; copy < 4; ++copy) {  // more text: the fixture four times
      std::ifstream src(dir + "/docs.jsonl");
      std::ofstream dst(dir + "/docs" + std::to_string(copy) + ".jsonl");
      dst << src.rdbuf();
    }
    data::TokenizerTrainOptions t;
    t.input_files = {prose};
    t.model_prefix = dir + "/tok";
    t.vocab_size = 400;
    t.num_threads = 1;
    train_tokenizer(t).check();
    data::PrepareOptions p;
    for (int copy = 0; copy < 4; ++copy) p.inputs.push_back(dir + "/docs" + std::to_string(copy) + ".jsonl");
    p.tokenizer_path = dir + "/tok.model";
    p.out_dir = dir + "/data";
    p.val_fraction = 0.2;
    p.num_threads = 1;
    auto prepared = data::prepare_dataset(p);
    EXPECT_TRUE(prepared.ok()) << (prepared.ok() ? "" : prepared.error().message());
    data_dir = p.out_dir;
    const std::string card = R"(name: trainer-test
n_layer: 2
d_model: 32
n_head: 4
n_kv_head: 2
d_ff: 64
vocab_size: 400
max_seq_len: 32
norm: rmsnorm
norm_eps: 1.0e-5
pos_encoding: rope
rope_theta: 10000
mlp: swiglu
tied_embeddings: true
init_std: 0.02
qkv_bias: false
)";
    card_path = dir + "/card.yaml";
    std::ofstream(card_path) << card;
    other_card_path = dir + "/other.yaml";
    std::string other = card;
    other.replace(other.find("d_ff: 64"), 8, "d_ff: 96");
    std::ofstream(other_card_path) << other;
  }
};

TrainConfig base_config() {
  TrainerEnv& env = TrainerEnv::get();
  TrainConfig c;
  c.model = env.card_path;
  c.data_dir = env.data_dir;
  c.batch_size = 2;
  c.seq_len = 16;
  c.grad_accum = 2;
  c.steps = 8;
  c.lr = 3e-3f;
  c.min_lr = 3e-4f;
  c.warmup_steps = 2;
  c.eval_batches = 4;
  c.sample_interval_ms = 20;
  c.calibration_seconds = 0.02;
  return c;
}

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
  TrainerEnv& env = TrainerEnv::get();
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
  TrainerEnv& env = TrainerEnv::get();
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
