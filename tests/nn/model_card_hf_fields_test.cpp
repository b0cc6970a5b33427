// Tests of the model card keys added for Hugging Face checkpoints: o_bias,
// sliding_window, rope_scaling and its parameters (parsed strictly, written
// only when set, validated with the key named), check_sequence_length, and
// that the trainer refuses a sequence longer than a card's sliding window.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/hf_test_util.h"
#include "models/decoder_lm.h"
#include "nn/model_card.h"
#include "train/trainer.h"

namespace el {
namespace {

const std::string kBase = R"(name: t
n_layer: 2
d_model: 32
n_head: 4
d_ff: 48
vocab_size: 61
max_seq_len: 64
)";

std::string error_of(const std::string& extra) {
  auto r = parse_model_card(kBase + extra, "t.yaml");
  EXPECT_FALSE(r.ok()) << extra;
  return r.ok() ? std::string() : r.error().message();
}

TEST(ModelCardHfFields, ParseAndRoundTrip) {
  const std::string extra = R"(o_bias: true
qkv_bias: true
sliding_window: 32
rope_scaling: llama3
rope_scaling_factor: 8
rope_low_freq_factor: 1
rope_high_freq_factor: 4
rope_original_max_seq_len: 16
)";
  auto r = parse_model_card(kBase + extra, "t.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const ModelCard& c = r.value();
  EXPECT_TRUE(c.o_bias);
  EXPECT_EQ(c.sliding_window, 32);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::llama3);
  EXPECT_FLOAT_EQ(c.rope_scaling_factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_original_max_seq_len, 16);
  const std::string yaml = model_card_to_yaml(c);
  auto back = parse_model_card(yaml, "t.yaml");
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back.value(), c);
  EXPECT_EQ(model_card_to_yaml(back.value()), yaml);
  EXPECT_STREQ(rope_scaling_name(ModelCard::RopeScaling::linear), "linear");
}

TEST(ModelCardHfFields, DefaultsAreNotWritten) {
  // Cards without the new keys keep their exact text (and config hashes).
  const ModelCard c = parse_model_card(kBase, "t.yaml").value();
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.rope_scaling, ModelCard::RopeScaling::none);
  const std::string yaml = model_card_to_yaml(c);
  for (const char* key : {"o_bias", "sliding_window", "rope_scaling", "rope_low"})
    EXPECT_EQ(yaml.find(key), std::string::npos) << key;
  EXPECT_EQ(yaml.substr(yaml.size() - 16), "qkv_bias: false\n");
}

TEST(ModelCardHfFields, RopeScalingErrorsNameTheKey) {
  EXPECT_HAS(error_of("rope_scaling: yarn\n"), "t.yaml:8");
  EXPECT_HAS(error_of("rope_scaling: yarn\n"), "'none', 'linear', 'llama3'");
  EXPECT_HAS(error_of("rope_scaling: linear\n"),
             "rope_scaling_factor must be a positive number with rope_scaling linear, got 0");
  EXPECT_HAS(error_of("rope_scaling_factor: 2\n"),
             "t.yaml:8: rope_scaling_factor is set (2) but rope_scaling none does not use it");
  EXPECT_HAS(error_of("rope_scaling: linear\nrope_scaling_factor: 2\nrope_low_freq_factor: 1\n"),
             "t.yaml:10: rope_low_freq_factor is set (1) but rope_scaling linear does not use it");
  const std::string l3 = "rope_scaling: llama3\nrope_scaling_factor: 8\n";
  EXPECT_HAS(error_of(l3 + "rope_low_freq_factor: 1\nrope_high_freq_factor: 4\n"),
             "rope_original_max_seq_len must be a positive number with rope_scaling llama3");
  EXPECT_HAS(error_of(l3 + "rope_low_freq_factor: 4\nrope_high_freq_factor: 2\n"
                           "rope_original_max_seq_len: 8192\n"),
             "t.yaml:11: rope_high_freq_factor (2) must be greater than rope_low_freq_factor (4)");
  EXPECT_HAS(error_of("pos_encoding: none\nrope_scaling: linear\nrope_scaling_factor: 2\n"),
             "rope_scaling linear needs pos_encoding: rope");
  EXPECT_HAS(error_of("sliding_window: -1\n"), "t.yaml:8: sliding_window must be >= 0");
  EXPECT_HAS(error_of("o_bias: yes\n"), "t.yaml:8");
}

TEST(ModelCardHfFields, CheckSequenceLength) {
  ModelCard c = parse_model_card(kBase + "sliding_window: 32\n", "t.yaml").value();
  EXPECT_TRUE(check_sequence_length(c, 32).ok());
  Status st = check_sequence_length(c, 33);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "t.yaml: key 'sliding_window': seq_len 33 exceeds sliding_window 32");
  EXPECT_HAS(st.error().message(), "use --seq-len 32 or less");
  st = check_sequence_length(c, 65);
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "t.yaml: key 'max_seq_len': seq_len 65 exceeds max_seq_len 64");
}

TEST(ModelCardHfFields, OBiasAddsAParameter) {
  ModelCard c = parse_model_card(kBase + "qkv_bias: true\no_bias: true\n", "t.yaml").value();
  auto m = DecoderLM::create(c, Device::cpu(), 1).value();
  bool found = false;
  for (const auto& p : m->parameters()) found = found || p.name == "model.layers.1.self_attn.o_proj.bias";
  EXPECT_TRUE(found);
  EXPECT_EQ(m->num_parameters(), count_parameters(c).total);
}

TEST(ModelCardHfFields, TrainerRefusesSequencesPastTheSlidingWindow) {
  namespace fs = std::filesystem;
  const fs::path card = fs::path(::testing::TempDir()) /
                        ("el_sliding_" + std::to_string(::getpid()) + ".yaml");
  hftest::write_text(card, kBase + "sliding_window: 16\n");
  TrainConfig cfg;
  cfg.model = card.string();
  cfg.data_dir = "/nonexistent";  // the check comes before the data is read
  cfg.seq_len = 32;
  auto r = run_training(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "seq_len 32 exceeds sliding_window 16");
  fs::remove(card);
}

}  // namespace
}  // namespace el
