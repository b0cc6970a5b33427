// pos_encoding_test.cpp — the positional-encoding variants of a model card
// (rope, none, sinusoidal, learned, alibi; nn/pos_encoding.h, models/decoder_lm):
// each is selectable from YAML and round-trips; the sinusoidal table against
// the closed form; the learned table is a counted, trained, saved and loaded
// parameter; cached generation (prefill, decode, chunks, rows at different
// positions) equals the full forward for every encoding; the encodings
// differ; bad values and learned past max_seq_len fail with clear errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "autograd/tape.h"
#include "common/test_cards.h"
#include "models/decoder_lm.h"
#include "nn/kv_cache.h"
#include "nn/pos_encoding.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace el {
namespace {

const char* const kEncodings[] = {"rope", "none", "sinusoidal", "learned", "alibi"};

// The small test card with pos_encoding replaced by `pe`.
std::string card_yaml(const std::string& pe, int max_seq_len = 32) {
  std::string y = test::small_card_yaml("pe", 48, 61, max_seq_len, "qkv_bias: false\n");
  const std::string from = "pos_encoding: rope";
  y.replace(y.find(from), from.size(), "pos_encoding: " + pe);
  return y;
}

ModelCard card_for(const std::string& pe, int max_seq_len = 32) {
  auto c = parse_model_card(card_yaml(pe, max_seq_len), "pe.yaml");
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message());
  return c.value();
}

// Weights with a larger spread than the init so logits are far from uniform.
std::unique_ptr<DecoderLM> make_model(const std::string& pe) {
  auto m = DecoderLM::create(card_for(pe), Device::cpu(), 5).value();
  Rng rng(17);
  for (auto& p : m->parameters()) {
    Tensor t = p.tensor;
    if (p.name.find("norm") == std::string::npos) init_normal(t, rng, 0.3f);
  }
  return m;
}

std::string error_text(const Status& st) { return st.ok() ? "(ok)" : st.error().message(); }

TEST(PosEncoding, EachValueParsesAndRoundTrips) {
  for (const char* pe : kEncodings) {
    const ModelCard c = card_for(pe);
    EXPECT_STREQ(pos_encoding_name(c.pos_encoding), pe);
    const std::string yaml = model_card_to_yaml(c);
    EXPECT_NE(yaml.find(std::string("pos_encoding: ") + pe + "\n"), std::string::npos) << yaml;
    auto back = parse_model_card(yaml, "pe.yaml");
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back.value(), c) << pe;
  }
}

TEST(PosEncoding, BadValueListsTheChoices) {
  auto c = parse_model_card(card_yaml("t5_bias"), "pe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find("key 'pos_encoding': unknown value 't5_bias'"),
            std::string::npos)
      << c.error().message();
  EXPECT_NE(c.error().message().find("'rope', 'none', 'sinusoidal', 'learned', 'alibi'"),
            std::string::npos)
      << c.error().message();
}

TEST(PosEncoding, SinusoidalTableMatchesTheClosedForm) {
  const int64_t P = 50, C = 32;
  const std::vector<float> t = sinusoidal_table_values(P, C);
  ASSERT_EQ(t.size(), static_cast<size_t>(P * C));
  auto closed = [&](int64_t pos, int64_t dim) {
    const double angle = pos / std::pow(10000.0, static_cast<double>(dim - dim % 2) / C);
    return dim % 2 == 0 ? std::sin(angle) : std::cos(angle);
  };
  const std::pair<int64_t, int64_t> at[] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {7, 4},
                                            {7, 5}, {49, 30}, {49, 31}, {23, 17}};
  for (const auto& [pos, dim] : at) {
    EXPECT_NEAR(t[static_cast<size_t>(pos * C + dim)], closed(pos, dim), 1e-6)
        << "pos " << pos << " dim " << dim;
  }
  EXPECT_FLOAT_EQ(t[0 * C + 0], 0.0f);  // sin(0)
  EXPECT_FLOAT_EQ(t[0 * C + 1], 1.0f);  // cos(0)
  EXPECT_NEAR(t[1 * C + 0], std::sin(1.0), 1e-7);
  // Odd width: the last column is a sin.
  const std::vector<float> odd = sinusoidal_table_values(3, 5);
  EXPECT_NEAR(odd[2 * 5 + 4], std::sin(2.0 / std::pow(10000.0, 4.0 / 5)), 1e-7);
  // No table parameter: the sinusoidal model has the rope model's parameters.
  auto m = DecoderLM::create(card_for("sinusoidal"), Device::cpu(), 1).value();
  EXPECT_EQ(m->num_parameters(), count_parameters(card_for("rope")).total);
}

// The model's table is scaled to the token embeddings' initial RMS (see
// sinusoidal_amplitude: unscaled, bf16 rounds the embeddings away).
TEST(PosEncoding, SinusoidalTableIsScaledToTheEmbeddingInit) {
  const int64_t P = 6, C = 8;
  const float amp = sinusoidal_amplitude(0.02f);
  EXPECT_FLOAT_EQ(amp, 0.02f * std::sqrt(2.0f));
  const std::vector<float> unit = sinusoidal_table_values(P, C);
  const std::vector<float> scaled =
      sinusoidal_table(P, C, DType::f32, Device::cpu(), amp).to_floats();
  ASSERT_EQ(scaled.size(), unit.size());
  double mean_square = 0;
  for (size_t i = 0; i < unit.size(); ++i) {
    EXPECT_FLOAT_EQ(scaled[i], amp * unit[i]) << i;
    mean_square += double(scaled[i]) * scaled[i];
  }
  // Each row's RMS is init_std: sin^2 + cos^2 = 1 per pair.
  EXPECT_NEAR(std::sqrt(mean_square / double(unit.size())), 0.02, 1e-6);
}

TEST(PosEncoding, LearnedTableIsACountedParameter) {
  const ModelCard card = card_for("learned");
  auto m = DecoderLM::create(card, Device::cpu(), 3).value();
  const auto& p = m->parameters();
  ASSERT_GE(p.size(), 2u);
  EXPECT_EQ(p[1].name, "model.embed_positions.weight");
  EXPECT_EQ(p[1].tensor.shape(), (Shape{32, 32}));  // [max_seq_len, C]
  int64_t allocated = 0;
  for (const auto& q : p) allocated += q.tensor.numel();
  EXPECT_EQ(allocated, count_parameters(card).total);
  EXPECT_EQ(m->num_parameters(), allocated);
  EXPECT_EQ(m->num_embedding_parameters(), count_parameters(card).embedding);
  EXPECT_EQ(count_parameters(card).embedding, count_parameters(card_for("rope")).embedding + 32 * 32);
  // Initialised N(0, init_std), not left at zero.
  double sq = 0;
  for (float x : p[1].tensor.to_floats()) sq += double(x) * x;
  const double std = std::sqrt(sq / (32 * 32));
  EXPECT_NEAR(std, card.init_std, 0.3 * card.init_std);
}

TEST(PosEncoding, LearnedTableTrainsSavesAndLoads) {
  auto m = DecoderLM::create(card_for("learned"), Device::cpu(), 3).value();
  Tensor table = m->parameters()[1].tensor;
  const std::vector<float> before = table.to_floats();
  Rng rng(9);
  std::vector<int32_t> ids(2 * 12), targets(2 * 12);
  for (auto& x : ids) x = static_cast<int32_t>(rng.below(61));
  for (auto& x : targets) x = static_cast<int32_t>(rng.below(61));
  AdamW opt(m->parameters(), AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f});
  Tensor loss = m->loss(Tensor::from_ints(ids, {2, 12}), Tensor::from_ints(targets, {2, 12}));
  tape().backward(loss);
  ASSERT_TRUE(table.has_grad());
  const std::vector<float> g = table.grad().to_floats();
  double row0 = 0, row20 = 0;  // positions used (0..11) get gradient, unused ones none
  for (int c = 0; c < 32; ++c) {
    row0 += std::abs(g[static_cast<size_t>(c)]);
    row20 += std::abs(g[static_cast<size_t>(20 * 32 + c)]);
  }
  EXPECT_GT(row0, 0.0);
  EXPECT_EQ(row20, 0.0);
  opt.step(1e-2f);
  opt.zero_grad();
  const std::vector<float> after = table.to_floats();
  EXPECT_NE(after[0], before[0]);

  // Save, load into a fresh model of the card, same table and logits.
  char tmpl[] = "/tmp/pe_ckpt_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/model.safetensors";
  CheckpointState state;
  state.model_card_yaml = model_card_to_yaml(m->card());
  ASSERT_TRUE(save_checkpoint(path, *m, nullptr, state).ok());
  auto fresh = DecoderLM::create(card_for("learned"), Device::cpu(), 99).value();
  EXPECT_NE(fresh->parameters()[1].tensor.to_floats(), after);
  auto loaded = load_checkpoint(path, *fresh, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(fresh->parameters()[1].tensor.to_floats(), after);
  NoGrad ng;
  const Tensor x = Tensor::from_ints(ids, {2, 12});
  EXPECT_EQ(fresh->forward(x).to_floats(), m->forward(x).to_floats());
  // A rope model's checkpoint lacks the table: loading it into a learned model fails.
  auto rope = DecoderLM::create(card_for("rope"), Device::cpu(), 1).value();
  const std::string rope_path = std::string(tmpl) + "/rope.safetensors";
  ASSERT_TRUE(save_checkpoint(rope_path, *rope, nullptr, state).ok());
  EXPECT_FALSE(load_checkpoint(rope_path, *fresh, nullptr).ok());
  std::filesystem::remove_all(tmpl);
}

// Prefill of a prompt, then decode steps, then a multi-token chunk after
// cached tokens: logits equal the uncached forward at every position.
TEST(PosEncoding, CachedGenerationMatchesTheFullForwardForEveryEncoding) {
  const std::vector<int32_t> seq = {3, 17, 42, 5, 9, 60, 1, 33, 12, 7, 28, 44, 2};
  const int64_t V = 61, P = 4, N = static_cast<int64_t>(seq.size());
  for (const char* pe : kEncodings) {
    auto m = make_model(pe);
    NoGrad ng;
    const std::vector<float> full = m->forward(Tensor::from_ints(seq, {1, N})).to_floats();
    auto cache = KvCache::create(m->card(), 1, 32, DType::f32, Device::cpu()).value();
    std::vector<float> got =
        m->forward_cached(Tensor::from_ints({seq.begin(), seq.begin() + P}, {1, P}), cache)
            .to_floats();
    cache.advance(P);
    for (int64_t t = P; t < 9; ++t) {  // decode one token at a time
      const std::vector<float> step =
          m->forward_cached(Tensor::from_ints({seq[static_cast<size_t>(t)]}, {1, 1}), cache)
              .to_floats();
      got.insert(got.end(), step.begin(), step.end());
      cache.advance(1);
    }
    const std::vector<float> chunk =  // positions 9..12 in one call (T > 1, not from zero)
        m->forward_cached(Tensor::from_ints({seq.begin() + 9, seq.end()}, {1, N - 9}), cache)
            .to_floats();
    got.insert(got.end(), chunk.begin(), chunk.end());
    ASSERT_EQ(got.size(), full.size()) << pe;
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::abs(got[i] - full[i]) > 3e-5f + 1e-5f * std::abs(full[i]) && ++bad < 4) {
        ADD_FAILURE() << pe << ": logit " << i << " (position " << i / V << ") cached " << got[i]
                      << " full " << full[i];
      }
    }
    EXPECT_EQ(bad, 0) << pe;
  }
}

// Rows of one batch at different positions (a right-padded ragged prefill,
// then decode): each row's decode logits equal its own full forward.
TEST(PosEncoding, RowsAtDifferentPositionsDecodeIndependently) {
  const std::vector<std::vector<int32_t>> prompts = {{5, 8, 13, 21, 34, 55}, {9, 2}, {40, 41, 42}};
  const int64_t V = 61, B = 3, Tp = 6;
  for (const char* pe : kEncodings) {
    auto m = make_model(pe);
    NoGrad ng;
    std::vector<int32_t> padded(static_cast<size_t>(B * Tp), 0), lens;
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = prompts[static_cast<size_t>(b)];
      std::copy(p.begin(), p.end(), padded.begin() + b * Tp);
      lens.push_back(static_cast<int32_t>(p.size()));
    }
    auto cache = KvCache::create(m->card(), B, 16, DType::f32, Device::cpu()).value();
    std::vector<int32_t> last;
    for (int32_t l : lens) last.push_back(l - 1);
    (void)m->forward_cached(Tensor::from_ints(padded, {B, Tp}), cache, last);
    cache.set_positions(lens);
    const std::vector<int32_t> next = {7, 11, 3};
    const std::vector<float> step = m->forward_cached(Tensor::from_ints(next, {B, 1}), cache).to_floats();
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> seq = prompts[static_cast<size_t>(b)];
      seq.push_back(next[static_cast<size_t>(b)]);
      const int64_t T = static_cast<int64_t>(seq.size());
      const std::vector<float> full = m->forward(Tensor::from_ints(seq, {1, T})).to_floats();
      for (int64_t i = 0; i < V; ++i) {
        EXPECT_NEAR(step[static_cast<size_t>(b * V + i)], full[static_cast<size_t>((T - 1) * V + i)],
                    3e-5f)
            << pe << " row " << b << " logit " << i;
      }
    }
  }
}

// The encodings change the model: same weights, different logits (none and
// alibi share every parameter, so the bias alone makes the difference).
TEST(PosEncoding, EncodingsGiveDifferentLogits) {
  auto max_diff = [](const std::vector<float>& a, size_t ia, const std::vector<float>& b,
                     size_t ib, size_t n) {
    float d = 0.f;
    for (size_t i = 0; i < n; ++i) d = std::max(d, std::abs(a[ia + i] - b[ib + i]));
    return d;
  };
  const std::vector<int32_t> seq = {3, 17, 42, 5, 9, 60};
  const std::vector<int32_t> same = {3, 3, 3, 3, 3, 3};
  const size_t V = 61;
  std::vector<std::vector<float>> logits, repeated;
  for (const char* pe : kEncodings) {
    auto m = make_model(pe);
    NoGrad ng;
    logits.push_back(m->forward(Tensor::from_ints(seq, {1, 6})).to_floats());
    repeated.push_back(m->forward(Tensor::from_ints(same, {1, 6})).to_floats());
  }
  for (size_t i = 0; i < logits.size(); ++i)
    for (size_t j = i + 1; j < logits.size(); ++j)
      EXPECT_GT(max_diff(logits[i], 0, logits[j], 0, logits[i].size()), 1e-3f)
          << kEncodings[i] << " vs " << kEncodings[j];
  // A repeated token: attention averages identical values whatever the
  // weights, so only an encoding added to the embedding (sinusoidal,
  // learned) tells the positions apart.
  for (size_t e = 0; e < repeated.size(); ++e) {
    const float d = max_diff(repeated[e], 0, repeated[e], 5 * V, V);
    if (e == 2 || e == 3) {
      EXPECT_GT(d, 1e-3f) << kEncodings[e];
    } else {
      EXPECT_LT(d, 1e-4f) << kEncodings[e];
    }
  }
}

TEST(PosEncoding, LearnedCannotRunPastMaxSeqLen) {
  const ModelCard learned = card_for("learned", 16);
  EXPECT_TRUE(check_sequence_length(learned, 16).ok());
  const std::string msg = error_text(check_sequence_length(learned, 17));
  EXPECT_NE(msg.find("seq_len 17 exceeds max_seq_len 16 of model card 'pe'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("pos_encoding: learned"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pe.yaml: key 'max_seq_len'"), std::string::npos) << msg;
  // The others keep the plain max_seq_len check (no mention of a table).
  for (const char* pe : {"rope", "none", "sinusoidal", "alibi"}) {
    const std::string m = error_text(check_sequence_length(card_for(pe, 16), 17));
    EXPECT_NE(m.find("seq_len 17 exceeds max_seq_len 16"), std::string::npos) << pe << ": " << m;
    EXPECT_EQ(m.find("learned"), std::string::npos) << pe << ": " << m;
  }
}

TEST(PosEncoding, AlibiAndSinusoidalAddNoParameters) {
  auto m = DecoderLM::create(card_for("alibi"), Device::cpu(), 1).value();
  EXPECT_EQ(m->num_parameters(), count_parameters(card_for("alibi")).total);
  EXPECT_EQ(count_parameters(card_for("alibi")).total, count_parameters(card_for("none")).total);
  for (const auto& p : m->parameters()) {
    EXPECT_EQ(p.name.find("alibi"), std::string::npos) << p.name;  // a constant, not a parameter
  }
}

}  // namespace
}  // namespace el
