// train_env.h — the training test environment shared by tests/train: a
// SentencePiece tokenizer and a prepared dataset made once per process from
// the prose fixture, and a tiny model card (plus one with another d_ff).
//
// Header-only on purpose: every tests/common/*.cpp is compiled into every
// test program, and test_ops/test_io link only their own layer, so a .cpp
// here calling into data/ and train/ would not link there. Inline functions
// are only emitted where used.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "common/test_cards.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "train/trainer.h"

namespace el::test {

class TrainEnv {
 public:
  static TrainEnv& get() {
    static TrainEnv env;
    return env;
  }
  std::string dir, data_dir, card_path, other_card_path;

 private:
  TrainEnv() {
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
    auto flush = [&] {
      if (para.empty()) return;
      nlohmann::json j = {{"text", para}};
      jsonl << j.dump() << "\n";
      para.clear();
    };
    while (std::getline(lines, line)) {
      if (line.empty())
        flush();
      else
        para += (para.empty() ? "" : " ") + line;
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
    for (int copy = 0; copy < 4; ++copy) {
      p.inputs.push_back(dir + "/docs" + std::to_string(copy) + ".jsonl");
    }
    p.tokenizer_path = dir + "/tok.model";
    p.out_dir = dir + "/data";
    p.val_fraction = 0.2;
    p.num_threads = 1;
    auto prepared = data::prepare_dataset(p);
    EXPECT_TRUE(prepared.ok()) << (prepared.ok() ? "" : prepared.error().message());
    data_dir = p.out_dir;
    const std::string card = small_card_yaml("trainer-test", 64, 400, 32, "qkv_bias: false\n");
    card_path = dir + "/card.yaml";
    std::ofstream(card_path) << card;
    other_card_path = dir + "/other.yaml";
    std::string other = card;
    other.replace(other.find("d_ff: 64"), 8, "d_ff: 96");
    std::ofstream(other_card_path) << other;
  }
};

// A short, fast run of the tiny card on the environment's dataset.
inline TrainConfig base_train_config() {
  TrainEnv& env = TrainEnv::get();
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

}  // namespace el::test
