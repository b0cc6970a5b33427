// The quantized directory: save -> load is bit-identical, and every way a
// file can be wrong is an error naming it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/tape.h"
#include "data/shard.h"
#include "io/safetensors.h"
#include "quant/calibration.h"
#include "quant/quant_io.h"
#include "quant/quantize_model.h"
#include "quant_test_util.h"

namespace el::quant {
namespace {

namespace fs = std::filesystem;
using test::make_model;
using test::random_ids;

class QuantIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("el_quant_io_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A quantized tiny model saved under dir_/name; returns the model.
  std::unique_ptr<DecoderLM> save_model(const std::string& name, QuantMethod method, const QuantSpec& spec,
                                        bool qkv_bias = true) {
    auto m = make_model(test::untied_card(qkv_bias));
    QuantizeOptions o;
    o.spec = spec;
    o.method = method;
    o.include_lm_head = true;
    o.calibration = random_ids(4, 16, 61, 9);
    auto r = quantize_model(*m, o);
    EXPECT_TRUE(r.ok()) << r.error().message();
    std::ofstream(dir_ / "tok.model") << "not really a tokenizer";
    QuantizedSaveOptions s;
    s.method = quant_method_name(method);
    s.source = "unit test";
    s.copy_files = {{(dir_ / "tok.model").string(), "tokenizer.model"}};
    s.extra = {{"calibration", {{"samples", 4}}}};
    Status st = save_quantized_model(*m, (dir_ / name).string(), s);
    EXPECT_TRUE(st.ok()) << st.error().message();
    return m;
  }

  // Rewrites dir/model.safetensors through `edit` (tensors and metadata).
  void rewrite(const std::string& name,
               const std::function<void(std::vector<std::pair<std::string, Tensor>>&,
                                        std::map<std::string, std::string>&)>& edit) {
    const std::string path = (dir_ / name / kQuantizedWeightsFile).string();
    auto f = io::SafetensorsFile::open(path);
    ASSERT_TRUE(f.ok());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& n : f.value().names()) tensors.emplace_back(n, f.value().load(n).value());
    std::map<std::string, std::string> md = f.value().metadata();
    edit(tensors, md);
    ASSERT_TRUE(io::save_safetensors(path, tensors, md).ok());
  }

  Error load_error(const std::string& name) {
    auto r = load_quantized_model((dir_ / name).string(), Device::cpu());
    EXPECT_FALSE(r.ok());
    return r.ok() ? Error{} : r.error();
  }

  fs::path dir_;
};

TEST_F(QuantIo, SaveLoadIsBitIdenticalWithIdenticalLogits) {
  for (QuantMethod method : {QuantMethod::rtn, QuantMethod::gptq}) {
    for (bool sym : {true, false}) {
      const std::string name = fmt::format("{}_{}", quant_method_name(method), sym);
      auto m = save_model(name, method, QuantSpec{sym ? 4 : 8, 16, sym});
      for (const char* f : {"model.safetensors", "quant_config.json", "tokenizer.model"}) {
        EXPECT_TRUE(fs::exists(dir_ / name / f)) << f;
      }
      auto loaded = load_quantized_model((dir_ / name).string(), Device::cpu());
      ASSERT_TRUE(loaded.ok()) << loaded.error().message();
      const QuantizedModelFile& lf = loaded.value();
      EXPECT_EQ(lf.metadata.method, quant_method_name(method));
      EXPECT_EQ(lf.metadata.spec.bits, sym ? 4 : 8);
      EXPECT_EQ(lf.metadata.slots.size(), 15u);
      EXPECT_TRUE(lf.metadata.lm_head_quantized);
      EXPECT_EQ(lf.tokenizer_dir, (dir_ / name).string());
      const ParameterList& a = m->parameters();
      const ParameterList& b = lf.model->parameters();
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_EQ(a[i].name, b[i].name);
        ASSERT_EQ(a[i].tensor.dtype(), b[i].tensor.dtype()) << a[i].name;
        ASSERT_EQ(a[i].tensor.shape(), b[i].tensor.shape()) << a[i].name;
        ASSERT_EQ(std::memcmp(a[i].tensor.raw(), b[i].tensor.raw(), a[i].tensor.nbytes()), 0) << a[i].name;
      }
      const Tensor ids = random_ids(2, 16, 61, 4);
      NoGrad no_grad;
      EXPECT_EQ(m->forward(ids).to_floats(), lf.model->forward(ids).to_floats()) << name;
    }
  }
}

TEST_F(QuantIo, LoadsInAnotherActivationDtypeAndStoresAnother) {
  auto m = make_model(test::small_card());
  QuantizeOptions o;
  o.spec = QuantSpec{4, 0, true};  // per-channel
  ASSERT_TRUE(quantize_model(*m, o).ok());
  QuantizedSaveOptions s;
  s.dtype = DType::bf16;
  ASSERT_TRUE(save_quantized_model(*m, (dir_ / "b").string(), s).ok());
  auto meta = read_quantized_metadata((dir_ / "b").string());
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta.value().dtype, DType::bf16);
  EXPECT_EQ(meta.value().spec.group_size, 0);
  auto f = io::SafetensorsFile::open((dir_ / "b" / kQuantizedWeightsFile).string());
  EXPECT_EQ(f.value().info("model.embed_tokens.weight").value().dtype, DType::bf16);
  EXPECT_EQ(f.value().info("model.layers.0.mlp.down_proj.scales").value().shape, (Shape{32, 1}));
  auto loaded = load_quantized_model((dir_ / "b").string(), Device::cpu(), DType::f16);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded.value().model->parameters()[0].tensor.dtype(), DType::f16);
  EXPECT_TRUE(loaded.value().tokenizer_dir.empty());
  NoGrad no_grad;
  const Tensor logits = loaded.value().model->forward(random_ids(1, 8, 61, 1));
  EXPECT_EQ(logits.dtype(), DType::f16);
}

TEST_F(QuantIo, OtherFormatVersionIsAnError) {
  save_model("v", QuantMethod::rtn, QuantSpec{4, 16, true});
  rewrite("v", [](auto&, auto& md) { md["format_version"] = "2"; });
  const Error e = load_error("v");
  EXPECT_NE(e.where.find((dir_ / "v" / kQuantizedWeightsFile).string()), std::string::npos) << e.where;
  EXPECT_NE(e.where.find("format_version"), std::string::npos);
  EXPECT_NE(e.what.find("version '2' is not supported"), std::string::npos) << e.what;
  EXPECT_NE(e.what.find("reads version 1"), std::string::npos) << e.what;
  rewrite("v", [](auto&, auto& md) { md["format"] = "efficientllm.checkpoint.v1"; });
  EXPECT_NE(load_error("v").what.find("not an EfficientLLM quantized model"), std::string::npos);
}

TEST_F(QuantIo, MissingExtraMisshapenTensorsAreErrors) {
  save_model("m", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("m", [](auto& t, auto&) {
    t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "model.norm.weight"; }), t.end());
  });
  Error e = load_error("m");
  EXPECT_NE(e.what.find("missing tensor 'model.norm.weight'"), std::string::npos) << e.what;

  save_model("s", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("s", [](auto& t, auto&) {
    for (auto& [name, tensor] : t) {
      if (name == "model.layers.1.self_attn.k_proj.scales") tensor = Tensor::zeros({16, 4}, DType::f16);
    }
  });
  e = load_error("s");
  EXPECT_NE(e.what.find("'model.layers.1.self_attn.k_proj.scales' is F16 [16, 4] in the file, expected F16 [16, 2]"),
            std::string::npos)
      << e.what;

  save_model("d", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("d", [](auto& t, auto&) {
    for (auto& [name, tensor] : t) {
      if (name == "model.layers.0.mlp.up_proj.zeros") tensor = Tensor::zeros({48, 2}, DType::f16);
    }
  });
  EXPECT_NE(load_error("d").what.find("is F16 [48, 2] in the file, expected U8 [48, 2]"), std::string::npos);

  save_model("x", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("x", [](auto& t, auto&) { t.emplace_back("model.layers.0.extra", Tensor::zeros({2})); });
  EXPECT_NE(load_error("x").what.find("unexpected tensor 'model.layers.0.extra'"), std::string::npos);

  save_model("k", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("k", [](auto&, auto& md) { md["quantized_slots"] = "[\"model.norm\"]"; });
  EXPECT_NE(load_error("k").what.find("'model.norm' is not a projection"), std::string::npos);
  // A 2-D weight that is not a projection slot, with well-formed codes: found
  // once the model is built.
  save_model("e", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("e", [](auto& t, auto& md) {
    Shape shape;
    for (auto& [name, tensor] : t) {
      if (name == "model.embed_tokens.weight") shape = tensor.shape();
    }
    t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "model.embed_tokens.weight"; }),
            t.end());
    t.emplace_back("model.embed_tokens.qweight", Tensor::zeros({shape[0], shape[1] / 2}, DType::u8));
    t.emplace_back("model.embed_tokens.scales", Tensor::zeros({shape[0], shape[1] / 16}, DType::f16));
    t.emplace_back("model.embed_tokens.zeros", Tensor::zeros({shape[0], shape[1] / 16}, DType::u8));
    std::string slots = md["quantized_slots"];
    md["quantized_slots"] = "[\"model.embed_tokens\"," + slots.substr(1);
  });
  EXPECT_NE(load_error("e").what.find("'model.embed_tokens' is not a projection"), std::string::npos);
  rewrite("k", [](auto&, auto& md) { md["bits"] = "3"; });
  EXPECT_NE(load_error("k").what.find("bits 3 is not 4 or 8"), std::string::npos);
  save_model("g", QuantMethod::rtn, QuantSpec{4, 16, false});
  rewrite("g", [](auto&, auto& md) { md["group_size"] = "7"; });
  e = load_error("g");
  EXPECT_NE(e.what.find("not divisible by the group size 7"), std::string::npos) << e.what;
  EXPECT_FALSE(load_quantized_model((dir_ / "none").string(), Device::cpu()).ok());
}

// Every model family's projection slots (RWKV-4/6's key/value/receptance,
// Mamba's in/x/dt/out_proj, MLA's latent projections, NSA's, the MoE block's
// attention, Pythia's) quantize with GPTQ and round-trip: what was quantized
// is what loads.
TEST_F(QuantIo, EveryFamilySavesAndLoadsBitIdentical) {
  for (const char* card_name : {"tiny-rwkv", "tiny-rwkv6", "tiny-mamba", "tiny-mla", "tiny-nsa", "tiny-moe", "pythia-tiny"}) {
    auto card = find_model_card(card_name);
    ASSERT_TRUE(card.ok()) << card.error().message();
    auto m = make_model(card.value());
    QuantizeOptions o;
    o.spec = QuantSpec{4, 8, false};
    o.include_lm_head = true;
    o.method = QuantMethod::gptq;  // the capture wrappers must see every slot's input too
    o.calibration = random_ids(2, 16, static_cast<int>(card.value().vocab_size), 9);
    auto r = quantize_model(*m, o);
    ASSERT_TRUE(r.ok()) << card_name << ": " << r.error().message();
    EXPECT_GT(r.value().slots.size(), 0u) << card_name;
    const std::string dir = (dir_ / card_name).string();
    Status st = save_quantized_model(*m, dir);
    ASSERT_TRUE(st.ok()) << card_name << ": " << st.error().message();
    auto loaded = load_quantized_model(dir, Device::cpu());
    ASSERT_TRUE(loaded.ok()) << card_name << ": " << loaded.error().message();
    EXPECT_EQ(loaded.value().metadata.slots.size() + loaded.value().metadata.experts.size(),
              r.value().slots.size()) << card_name;
    const ParameterList& a = m->parameters();
    const ParameterList& b = loaded.value().model->parameters();
    ASSERT_EQ(a.size(), b.size()) << card_name;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i].name, b[i].name) << card_name;
      ASSERT_EQ(a[i].tensor.shape(), b[i].tensor.shape()) << a[i].name;
      ASSERT_EQ(std::memcmp(a[i].tensor.raw(), b[i].tensor.raw(), a[i].tensor.nbytes()), 0) << a[i].name;
    }
    const Tensor ids = random_ids(1, 12, static_cast<int>(card.value().vocab_size), 5);
    NoGrad no_grad;
    EXPECT_EQ(m->forward(ids).to_floats(), loaded.value().model->forward(ids).to_floats()) << card_name;
  }
}

TEST_F(QuantIo, SaveNeedsAQuantizedModel) {
  auto m = make_model(test::small_card());
  Status s = save_quantized_model(*m, (dir_ / "n").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().what.find("no quantized slot"), std::string::npos);
}

TEST_F(QuantIo, CalibrationFromShardsIsDeterministic) {
  fs::create_directories(dir_);
  std::vector<uint32_t> tokens(300);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i % 61);
  const std::string shard = (dir_ / "a.bin").string();
  ASSERT_TRUE(data::write_shard(shard, tokens, 61).ok());
  CalibrationOptions c;
  c.sources = {shard};
  c.samples = 5;
  c.seq_len = 16;
  c.vocab_size = 61;
  auto a = load_calibration(c), b = load_calibration(c);
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a.value().ids.shape(), (Shape{5, 16}));
  EXPECT_EQ(a.value().ids.to_floats(), b.value().ids.to_floats());
  const std::vector<float> v = a.value().ids.to_floats();
  for (int i = 1; i < 16; ++i) EXPECT_EQ(std::fmod(v[0] + i, 61.f), v[static_cast<size_t>(i)]);  // a window
  c.seq_len = 400;
  auto longer = load_calibration(c);
  ASSERT_FALSE(longer.ok());
  EXPECT_NE(longer.error().what.find("at most 300 tokens each, fewer than --calib-seq-len 400"), std::string::npos)
      << longer.error().what;
  c.sources = {"builtin"};
  c.seq_len = 16;
  auto no_tok = load_calibration(c);
  ASSERT_FALSE(no_tok.ok());
  EXPECT_NE(no_tok.error().hint.find("--tokenizer"), std::string::npos);
  c.vocab_size = 10;  // the shard's ids reach 60
  c.sources = {shard};
  EXPECT_FALSE(load_calibration(c).ok());
}

}  // namespace
}  // namespace el::quant
