// Tests of Hugging Face model directories (io/hf_checkpoint.h) at the io
// layer: single-file and sharded layouts, validation against expected
// tensors before loading (missing / wrong shape / wrong dtype / unknown
// tensors, each naming the tensor, shapes and file), a missing shard, a
// corrupt index, corrupt shard headers, a layer count beyond the tensors,
// and saving (sharding, index, config, stale files, atomicity).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/hf_test_util.h"
#include "io/hf_checkpoint.h"

namespace el::io {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const char* kConfig = R"({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
  "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 12,
  "vocab_size": 10, "tie_word_embeddings": TIED})";

std::string config_text(bool tied = false) {
  std::string s = kConfig;
  s.replace(s.find("TIED"), 4, tied ? "true" : "false");
  return s;
}

Tensor iota(const Shape& shape, float start, DType dtype = DType::f32) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + static_cast<float>(i) * 0.25f;
  Tensor t = Tensor::from_floats(v, shape);
  if (dtype == DType::f32) return t;
  Tensor out = Tensor::empty(shape, dtype);
  out.copy_from(t);
  return out;
}

using Named = std::vector<std::pair<std::string, Tensor>>;

class HfCheckpointTest : public hftest::TempDirTest {
 protected:
  // A model directory `name` with config.json and `tensors` in one file, or
  // split over shards (each entry of `shards` = the tensors of one shard).
  std::string make_dir(const std::string& name, const std::vector<Named>& shards,
                       bool tied = false) {
    const fs::path d = dir_ / name;
    fs::create_directories(d);
    hftest::write_text(d / "config.json", config_text(tied));
    if (shards.size() == 1) {
      save_safetensors((d / "model.safetensors").string(), shards[0]).check();
      return d.string();
    }
    json wm = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
      save_safetensors((d / file).string(), shards[i]).check();
      for (const auto& [n, t] : shards[i]) wm[n] = file;
    }
    hftest::write_text(d / "model.safetensors.index.json",
                       json{{"metadata", {{"total_size", 0}}}, {"weight_map", wm}}.dump());
    return d.string();
  }
  static Named tensors() {
    return {{"model.embed_tokens.weight", iota({10, 8}, 0.f)},
            {"model.norm.weight", iota({8}, 1.f)},
            {"lm_head.weight", iota({10, 8}, -3.f)}};
  }
  static std::vector<HfTensorSpec> specs() {
    return {{"model.embed_tokens.weight", {10, 8}}, {"model.norm.weight", {8}},
            {"lm_head.weight", {10, 8}}};
  }
  std::string open_error(const std::string& d) {
    auto ck = HfCheckpoint::open(d);
    EXPECT_FALSE(ck.ok());
    return ck.ok() ? std::string() : ck.error().message();
  }
  std::string validate_error(const HfCheckpoint& ck, const std::vector<HfTensorSpec>& s,
                             const HfLoadOptions& o = {}) {
    Status st = ck.validate(s, o);
    EXPECT_FALSE(st.ok());
    return st.ok() ? std::string() : st.error().message();
  }
};

TEST_F(HfCheckpointTest, OpensSingleFileAndLoadsWithDtypeConversion) {
  Named t = tensors();
  t[0].second = iota({10, 8}, 0.f, DType::bf16);  // a bf16 tensor into f32 parameters
  const std::string d = make_dir("m", {t});
  auto ck = HfCheckpoint::open(d);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->config().model_type, "llama");
  EXPECT_EQ(ck->config().card.name, "m");
  EXPECT_EQ(ck->weights_path(), d + "/model.safetensors");
  EXPECT_EQ(ck->files().size(), 1u);
  EXPECT_EQ(ck->tensor_names().size(), 3u);
  EXPECT_TRUE(ck->contains("model.norm.weight"));
  EXPECT_EQ(ck->total_bytes(), 10u * 8 * 2 + 8 * 4 + 10 * 8 * 4);
  EXPECT_EQ(ck->file_of("lm_head.weight").value(), d + "/model.safetensors");
  EXPECT_EQ(ck->info("model.embed_tokens.weight")->dtype, DType::bf16);
  EXPECT_HAS(ck->info("model.nrom.weight").error().message(), "did you mean 'model.norm.weight'");
  ASSERT_TRUE(ck->validate(specs()).ok());

  ParameterList params;
  for (const auto& s : specs()) params.push_back({s.name, Tensor::zeros(s.shape)});
  ASSERT_TRUE(ck->load_parameters(params).ok());
  EXPECT_EQ(params[0].tensor.to_floats(), iota({10, 8}, 0.f).to_floats());  // exact in bf16
  EXPECT_EQ(params[2].tensor.to_floats(), iota({10, 8}, -3.f).to_floats());
}

TEST_F(HfCheckpointTest, OpensShardsThroughTheIndex) {
  const Named t = tensors();
  const std::string d = make_dir("sharded", {{t[0]}, {t[1], t[2]}});
  auto ck = HfCheckpoint::open(d);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->weights_path(), d + "/model.safetensors.index.json");
  ASSERT_EQ(ck->files().size(), 2u);
  EXPECT_EQ(ck->file_of("lm_head.weight").value(), d + "/model-00002-of-00002.safetensors");
  ParameterList params;
  for (const auto& s : specs()) params.push_back({s.name, Tensor::zeros(s.shape)});
  ASSERT_TRUE(ck->load_parameters(params).ok());
  EXPECT_EQ(params[1].tensor.to_floats(), iota({8}, 1.f).to_floats());
}

TEST_F(HfCheckpointTest, MissingShardNamesTheShardAndTheIndex) {
  const Named t = tensors();
  const std::string d = make_dir("m", {{t[0]}, {t[1], t[2]}});
  fs::remove(fs::path(d) / "model-00002-of-00002.safetensors");
  const std::string e = open_error(d);
  EXPECT_HAS(e, d + "/model.safetensors.index.json");
  EXPECT_HAS(e, "shard 'model-00002-of-00002.safetensors' is missing");
  EXPECT_HAS(e, "the index places 2 tensor(s) in it");
  EXPECT_HAS(e, "lm_head.weight");
}

TEST_F(HfCheckpointTest, IndexErrors) {
  const Named t = tensors();
  const std::string d = make_dir("m", {{t[0]}, {t[1], t[2]}});
  const fs::path index = fs::path(d) / "model.safetensors.index.json";
  // The index says lm_head is in shard 1, which does not hold it.
  json j = json::parse(hftest::read_text(index));
  j["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  hftest::write_text(index, j.dump());
  std::string e = open_error(d);
  EXPECT_HAS(e, "key 'weight_map.lm_head.weight'");
  EXPECT_HAS(e, "the index places tensor 'lm_head.weight' in shard "
                "'model-00001-of-00002.safetensors', which does not contain it");
  j["weight_map"]["lm_head.weight"] = "../outside.safetensors";
  hftest::write_text(index, j.dump());
  EXPECT_HAS(open_error(d), "shard name '../outside.safetensors' is not a plain file name");
  j["weight_map"]["lm_head.weight"] = 3;
  hftest::write_text(index, j.dump());
  EXPECT_HAS(open_error(d), "key 'weight_map.lm_head.weight': expected a shard file name");
  hftest::write_text(index, R"({"metadata": {}})");
  EXPECT_HAS(open_error(d), "model.safetensors.index.json: key 'weight_map'");
  hftest::write_text(index, R"({"weight_map": {}})");
  EXPECT_HAS(open_error(d), "weight_map lists no tensors");
  hftest::write_text(index, "{oops");
  EXPECT_HAS(open_error(d), "model.safetensors.index.json: not valid JSON");
}

TEST_F(HfCheckpointTest, DirectoryErrors) {
  EXPECT_HAS(open_error(path("nope")), "no such directory");
  const fs::path d = dir_ / "empty";
  fs::create_directories(d);
  EXPECT_HAS(open_error(d.string()), "no config.json in the model directory");
  hftest::write_text(d / "config.json", config_text());
  EXPECT_HAS(open_error(d.string()), "no model.safetensors or model.safetensors.index.json");
  hftest::write_text(d / "pytorch_model.bin", "x");
  EXPECT_HAS(open_error(d.string()), "only PyTorch .bin weights are present");
  fs::remove(d / "pytorch_model.bin");
  hftest::write_text(d / "adapter_model.safetensors", "x");
  EXPECT_HAS(open_error(d.string()), "PEFT adapter directory");
  // Config errors come through with config.json's path and key.
  hftest::write_text(d / "config.json", R"({"model_type": "bert"})");
  EXPECT_HAS(open_error(d.string()), (d / "config.json").string() + ": key 'model_type'");
}

// A layer count no checkpoint of that size can hold (every layer has its own
// tensors) is refused at open, naming the key, before any caller lists the
// tensors it would expect: single file and sharded.
TEST_F(HfCheckpointTest, MoreLayersThanTensorsIsRefusedAtOpen) {
  const Named t = tensors();
  for (const std::vector<Named>& shards : {std::vector<Named>{t}, {{t[0]}, {t[1], t[2]}}}) {
    const std::string d = make_dir(shards.size() == 1 ? "single" : "sharded", shards);
    std::string cfg = config_text();
    cfg.replace(cfg.find("\"num_hidden_layers\": 1"), 22, "\"num_hidden_layers\": 2000000000");
    hftest::write_text(fs::path(d) / "config.json", cfg);
    const std::string e = open_error(d);
    EXPECT_HAS(e, (fs::path(d) / "config.json").string() + ": key 'num_hidden_layers'");
    EXPECT_HAS(e, "num_hidden_layers 2000000000 exceeds the 3 tensors of");
  }
}

TEST_F(HfCheckpointTest, CorruptShardHeadersNameTheShard) {
  const Named t = tensors();
  const std::string d = make_dir("m", {{t[0]}, {t[1], t[2]}});
  const fs::path shard = fs::path(d) / "model-00002-of-00002.safetensors";
  auto u64le = [](uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  };
  auto write_shard = [&](const std::string& header, size_t data_bytes) {
    hftest::write_text(shard, u64le(header.size()) + header + std::string(data_bytes, '\0'));
  };
  const std::string norm = R"("model.norm.weight":{"dtype":"F32","shape":[8],"data_offsets":)";
  const std::string head = R"("lm_head.weight":{"dtype":"F32","shape":[10,8],"data_offsets":)";
  // Overlapping ranges.
  write_shard("{" + norm + "[0,32]}," + head + "[16,336]}}", 336);
  std::string e = open_error(d);
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "overlap");
  // A range past the end of the file.
  write_shard("{" + norm + "[0,32]}," + head + "[32,352]}}", 100);
  e = open_error(d);
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "past the end of the data buffer");
  // An absurd header length.
  hftest::write_text(shard, u64le(uint64_t{1} << 62) + "{}");
  e = open_error(d);
  EXPECT_HAS(e, shard.string());
  EXPECT_HAS(e, "exceeds the 100000000 byte limit");
  // A header length past the end of a small file.
  hftest::write_text(shard, u64le(4096) + "{}");
  EXPECT_HAS(open_error(d), "runs past the end of the file");
}

TEST_F(HfCheckpointTest, ValidateNamesTensorShapesAndFile) {
  const std::string d = make_dir("m", {tensors()});
  const HfCheckpoint ck = HfCheckpoint::open(d).value();
  const std::string file = d + "/model.safetensors";
  auto s = specs();
  s[0].shape = {12, 8};  // the config says vocab 12, the file has 10 rows
  std::string e = validate_error(ck, s);
  EXPECT_HAS(e, file + ": tensor 'model.embed_tokens.weight'");
  EXPECT_HAS(e, "shape mismatch: expected [12, 8] from config.json, found [10, 8]");

  s = specs();
  s.push_back({"model.layers.0.mlp.up_proj.weight", {12, 8}});
  e = validate_error(ck, s);
  EXPECT_HAS(e, "tensor 'model.layers.0.mlp.up_proj.weight' is missing: the model expects "
                "shape [12, 8]");
  EXPECT_HAS(e, file);

  // Two problems: the first is described, the rest counted.
  s[0].shape = {1};
  EXPECT_HAS(validate_error(ck, s), "(and 1 more problem(s))");
}

TEST_F(HfCheckpointTest, UnknownTensorsAreErrorsUnlessAllowed) {
  Named t = tensors();
  t.push_back({"model.extra.weight", iota({2}, 0.f)});
  t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", iota({4}, 0.f)});
  const HfCheckpoint ck = HfCheckpoint::open(make_dir("m", {t})).value();
  const std::string e = validate_error(ck, specs());
  EXPECT_HAS(e, "tensor 'model.extra.weight'");
  EXPECT_HAS(e, "unexpected tensor 'model.extra.weight'");
  EXPECT_HAS(e, "--allow-unknown-tensors");
  EXPECT_TRUE(ck.validate(specs(), {.allow_unknown_tensors = true}).ok());  // inv_freq: known
}

TEST_F(HfCheckpointTest, TiedCheckpointMayCarryLmHead) {
  // Tied: lm_head.weight is not a parameter; a copy in the file is ignored.
  const HfCheckpoint ck = HfCheckpoint::open(make_dir("m", {tensors()}, /*tied=*/true)).value();
  auto s = specs();
  s.pop_back();
  EXPECT_TRUE(ck.validate(s).ok());
  const HfCheckpoint untied = HfCheckpoint::open(make_dir("u", {tensors()})).value();
  EXPECT_HAS(validate_error(untied, s), "unexpected tensor 'lm_head.weight'");
}

TEST_F(HfCheckpointTest, IntegerTensorsAreNotParameters) {
  Named t = tensors();
  t[1].second = Tensor::from_ints(std::vector<int32_t>(8, 1), {8});
  const HfCheckpoint ck = HfCheckpoint::open(make_dir("m", {t})).value();
  EXPECT_HAS(validate_error(ck, specs()), "tensor 'model.norm.weight': dtype I32 is not a float");
}

// ---- save ------------------------------------------------------------------------------

ModelCard tiny_card() {
  return parse_hf_config(config_text(), "config.json", "tiny").value().card;
}

ParameterList as_params(const Named& t) {
  ParameterList p;
  for (const auto& [n, x] : t) p.push_back({n, x});
  return p;
}

TEST_F(HfCheckpointTest, SavesSingleFileThatOpensAgain) {
  const std::string d = path("out");
  HfSaveOptions opt;
  opt.passthrough = {{"eos_token_id", "[1, 2]"}};
  ASSERT_TRUE(save_hf_checkpoint(d, tiny_card(), as_params(tensors()), opt).ok());
  auto ck = HfCheckpoint::open(d);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->config().card.d_model, 8);
  EXPECT_EQ(ck->config().torch_dtype, "float32");
  EXPECT_EQ(ck->config().passthrough.at("eos_token_id"), "[1,2]");
  EXPECT_EQ(ck->files().size(), 1u);
  EXPECT_TRUE(ck->validate(specs()).ok());
  const SafetensorsFile f = SafetensorsFile::open(d + "/model.safetensors").value();
  EXPECT_EQ(f.metadata().at("format"), "pt");  // transformers requires it
  EXPECT_EQ(f.load("lm_head.weight")->to_floats(), iota({10, 8}, -3.f).to_floats());
  for (const auto& e : fs::directory_iterator(d))  // no temporary files left
    EXPECT_TRUE(e.path().filename() == "config.json" ||
                e.path().filename() == "model.safetensors") << e.path();
}

TEST_F(HfCheckpointTest, SavesShardsWithIndexAndRemovesStaleFiles) {
  const std::string d = path("out");
  // Single file first, then sharded into the same directory: the old
  // model.safetensors must go (loaders prefer it over an index).
  ASSERT_TRUE(save_hf_checkpoint(d, tiny_card(), as_params(tensors())).ok());
  HfSaveOptions opt;
  opt.max_shard_bytes = 340;  // embed 320 B | norm 32 B | lm_head 320 B: 3 shards
  ASSERT_TRUE(save_hf_checkpoint(d, tiny_card(), as_params(tensors()), opt).ok());
  EXPECT_FALSE(fs::exists(fs::path(d) / "model.safetensors"));
  const json index = json::parse(hftest::read_text(fs::path(d) / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 320 + 32 + 320);
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");
  auto ck = HfCheckpoint::open(d);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->files().size(), 3u);
  EXPECT_TRUE(ck->validate(specs()).ok());
  // Back to one file: the index and shards go.
  ASSERT_TRUE(save_hf_checkpoint(d, tiny_card(), as_params(tensors())).ok());
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(d)) {
    ++n;
    EXPECT_TRUE(e.path().filename() == "config.json" ||
                e.path().filename() == "model.safetensors") << e.path();
  }
  EXPECT_EQ(n, 2u);
}

TEST_F(HfCheckpointTest, SaveErrors) {
  const std::string d = path("out");
  Named t = tensors();
  t[1].second = iota({8}, 0.f, DType::bf16);
  Status st = save_hf_checkpoint(d, tiny_card(), as_params(t));
  ASSERT_FALSE(st.ok());
  EXPECT_HAS(st.error().message(), "tensor 'model.norm.weight': dtype bf16 differs");
  t = tensors();
  t.push_back(t[0]);
  EXPECT_HAS(save_hf_checkpoint(d, tiny_card(), as_params(t)).error().message(),
             "parameter name given twice");
  ModelCard c = tiny_card();
  c.norm = ModelCard::Norm::layernorm;
  EXPECT_HAS(save_hf_checkpoint(d, c, as_params(tensors())).error().message(),
             "key 'norm': norm layernorm cannot be exported");
  EXPECT_FALSE(fs::exists(d));  // nothing written for a card that cannot be exported
  EXPECT_HAS(save_hf_checkpoint(d, tiny_card(), {}).error().message(), "no parameters");
}

}  // namespace
}  // namespace el::io
