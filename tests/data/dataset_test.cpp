// dataset_test.cpp — prepare_dataset end to end, the manifest, and its errors.
#include "data/dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/data_test_util.h"
#include "data/sha256.h"
#include "data/shard.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::read_bytes;
using testing::shared_tokenizer_model;
using testing::TempDir;
using testing::write_text;
namespace fs = std::filesystem;

// 60 JSON Lines documents + 3 text files, in this order.
struct SmallCorpus {
  std::vector<std::string> docs;  // expected document texts in reading order
  std::vector<std::string> inputs;
};

SmallCorpus make_corpus(const TempDir& dir) {
  SmallCorpus c;
  std::string jsonl;
  for (int i = 0; i < 60; ++i) {
    const std::string text = "Entry " + std::to_string(i) +
                             ": the keeper wrote about the wind, the gulls and the ships.";
    c.docs.push_back(text);
    jsonl += nlohmann::json{{"text", text}, {"id", i}}.dump() + "\n";
  }
  write_text(dir.file("in/docs.jsonl"), jsonl);
  const std::vector<std::string> texts = {"A text file.\nWith two lines.\n",
                                          "Second file, one line.", "Third:\n\tindented\n"};
  for (size_t i = 0; i < texts.size(); ++i) {
    write_text(dir.file("in/t" + std::to_string(i) + ".txt"), texts[i]);
    c.docs.push_back(texts[i]);
  }
  c.inputs = {dir.file("in")};  // the directory: docs.jsonl sorts before t0..t2.txt
  return c;
}

PrepareOptions options_for(const TempDir& dir, const SmallCorpus& c) {
  PrepareOptions o;
  o.inputs = c.inputs;
  o.tokenizer_path = shared_tokenizer_model();
  o.out_dir = dir.file("out");
  o.val_fraction = 0.2;
  o.seed = 7;
  o.num_threads = 2;
  return o;
}

std::vector<uint32_t> read_shards(const std::vector<std::string>& paths, int vocab) {
  std::vector<uint32_t> all;
  for (const auto& p : paths) {
    auto s = TokenShard::open(p, vocab);
    EXPECT_TRUE(s.ok()) << s.error().message();
    if (!s.ok()) continue;
    for (size_t i = 0; i < s->size(); ++i) all.push_back((*s)[i]);
  }
  return all;
}

TEST(Prepare, EndToEndJsonlAndText) {
  TempDir dir;
  const SmallCorpus c = make_corpus(dir);
  const PrepareOptions o = options_for(dir, c);
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const Tokenizer tok = Tokenizer::load(o.tokenizer_path).value();

  // Expected streams: each document's ids + EOS, routed by the hash split.
  std::vector<uint32_t> want_train, want_val;
  int64_t train_docs = 0, val_docs = 0;
  for (size_t i = 0; i < c.docs.size(); ++i) {
    const bool val = is_validation_document(static_cast<int64_t>(i), o.seed, o.val_fraction);
    auto& dst = val ? want_val : want_train;
    (val ? val_docs : train_docs)++;
    for (int32_t id : tok.encode(c.docs[i])) dst.push_back(static_cast<uint32_t>(id));
    dst.push_back(static_cast<uint32_t>(tok.eos_id()));
  }
  ASSERT_GT(val_docs, 0);
  EXPECT_EQ(read_shards(r->train_shards, tok.vocab_size()), want_train);
  EXPECT_EQ(read_shards(r->val_shards, tok.vocab_size()), want_val);
  EXPECT_EQ(r->train_documents, train_docs);
  EXPECT_EQ(r->val_documents, val_docs);
  EXPECT_EQ(r->train_tokens, static_cast<int64_t>(want_train.size()));
  EXPECT_EQ(r->val_tokens, static_cast<int64_t>(want_val.size()));
  EXPECT_EQ(r->train_shards, std::vector<std::string>{dir.file("out/train_000000.bin")});
  EXPECT_EQ(r->val_shards, std::vector<std::string>{dir.file("out/val_000000.bin")});

  // The manifest on disk says the same.
  const auto j = nlohmann::json::parse(read_bytes(dir.file("out/dataset.json")));
  EXPECT_EQ(j["format"], "efficientllm-dataset");
  EXPECT_EQ(j["tokenizer"]["sha256"], sha256_file(o.tokenizer_path).value());
  EXPECT_EQ(j["tokenizer"]["vocab_size"], tok.vocab_size());
  EXPECT_EQ(j["tokenizer"]["eos_id"], 2);
  EXPECT_EQ(j["splits"]["train"]["tokens"], r->train_tokens);
  EXPECT_EQ(j["splits"]["val"]["documents"], val_docs);
  EXPECT_EQ(j["splits"]["train"]["shards"][0], "train_000000.bin");
  EXPECT_EQ(j["options"]["val_fraction"], 0.2);
  ASSERT_EQ(j["sources"].size(), 4u);
  EXPECT_EQ(j["sources"][0]["path"], dir.file("in/docs.jsonl"));
  EXPECT_EQ(j["sources"][0]["documents"], 60);
  EXPECT_EQ(j["sources"][1]["bytes"], static_cast<int64_t>(c.docs[60].size()));

  auto m = load_dataset_manifest(dir.file("out"));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->train_shards, r->train_shards);
  EXPECT_EQ(m->val_tokens, r->val_tokens);
  EXPECT_EQ(m->tokenizer_sha256, r->tokenizer_sha256);
  EXPECT_EQ(m->tokenizer_path, r->tokenizer_path);
  EXPECT_EQ(m->sources.size(), 4u);
  EXPECT_EQ(m->seed, 7u);
  EXPECT_TRUE(m->append_eos);
  const std::string text = describe(m.value());
  EXPECT_NE(text.find(fmt::format("train: {} documents, {} tokens in 1 shard(s)", train_docs,
                                  want_train.size())),
            std::string::npos)
      << text;
}

TEST(Prepare, ShardsSplitAtLimitAndOutputIsThreadIndependent) {
  TempDir dir;
  const SmallCorpus c = make_corpus(dir);
  PrepareOptions o = options_for(dir, c);
  o.max_tokens_per_shard = 100;
  o.num_threads = 1;
  auto one = prepare_dataset(o);
  ASSERT_TRUE(one.ok()) << one.error().message();
  ASSERT_GT(one->train_shards.size(), 3u);
  for (size_t i = 0; i < one->train_shards.size(); ++i) {
    auto s = TokenShard::open(one->train_shards[i], 0).value();
    if (i + 1 < one->train_shards.size()) {
      EXPECT_EQ(s.size(), 100u);
    }
    else EXPECT_LE(s.size(), 100u);
  }
  std::vector<std::string> bytes1;
  for (const auto& p : one->train_shards) bytes1.push_back(read_bytes(p));

  o.num_threads = 3;
  o.out_dir = dir.file("out3");
  auto three = prepare_dataset(o);
  ASSERT_TRUE(three.ok());
  ASSERT_EQ(three->train_shards.size(), one->train_shards.size());
  for (size_t i = 0; i < bytes1.size(); ++i) EXPECT_EQ(read_bytes(three->train_shards[i]), bytes1[i]);

  // Re-preparing into the first directory with bigger shards removes the
  // now-stale train_000001.bin ... files.
  o.out_dir = dir.file("out");
  o.max_tokens_per_shard = 1'000'000;
  auto big = prepare_dataset(o);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->train_shards.size(), 1u);
  EXPECT_TRUE(fs::exists(dir.file("out/train_000000.bin")));
  EXPECT_FALSE(fs::exists(dir.file("out/train_000001.bin")));
}

TEST(Prepare, ValidationAssignmentIsAHashOfIndexAndSeed) {
  int val = 0;
  for (int64_t i = 0; i < 100000; ++i) val += is_validation_document(i, 3, 0.05);
  EXPECT_NEAR(val / 100000.0, 0.05, 0.005);
  EXPECT_EQ(is_validation_document(123, 3, 0.05), is_validation_document(123, 3, 0.05));
  int differ = 0;
  for (int64_t i = 0; i < 1000; ++i)
    differ += is_validation_document(i, 1, 0.5) != is_validation_document(i, 2, 0.5);
  EXPECT_GT(differ, 300);
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  TempDir dir;
  EXPECT_EQ(sha256_file(write_text(dir.file("abc"), "abc")).value(), sha256_hex("abc"));
  expect_error(sha256_file(dir.file("none")), {"none", "cannot open"});
}

TEST(PrepareErrors, EmptyCorpus) {
  TempDir dir;
  PrepareOptions o;
  o.inputs = {write_text(dir.file("e.txt"), ""), write_text(dir.file("b.jsonl"), "\n")};
  o.tokenizer_path = shared_tokenizer_model();
  o.out_dir = dir.file("out");
  expect_error(prepare_dataset(o), {"empty corpus"});
  EXPECT_FALSE(fs::exists(dir.file("out/dataset.json")));
}

TEST(PrepareErrors, MalformedJsonLine) {
  TempDir dir;
  PrepareOptions o;
  o.inputs = {write_text(dir.file("d.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n")};
  o.tokenizer_path = shared_tokenizer_model();
  o.out_dir = dir.file("out");
  expect_error(prepare_dataset(o), {"d.jsonl:2", "malformed JSON line"});
}

TEST(PrepareErrors, MissingInputAndTokenizer) {
  TempDir dir;
  PrepareOptions o;
  o.inputs = {dir.file("nope.txt")};
  o.tokenizer_path = shared_tokenizer_model();
  o.out_dir = dir.file("out");
  expect_error(prepare_dataset(o), {"nope.txt", "does not exist"});
  o.inputs = {write_text(dir.file("a.txt"), "text")};
  o.tokenizer_path = dir.file("none.model");
  expect_error(prepare_dataset(o), {"none.model", "not found"});
}

TEST(PrepareErrors, NoValidationOrNoTrainingDocuments) {
  TempDir dir;
  PrepareOptions o;
  o.inputs = {write_text(dir.file("only.txt"), "a single document")};
  o.tokenizer_path = shared_tokenizer_model();
  o.out_dir = dir.file("out");
  o.val_fraction = 1e-9;
  expect_error(prepare_dataset(o), {"no validation documents", "raise val_fraction"});
  EXPECT_FALSE(fs::exists(dir.file("out/train_000000.bin")));  // cleaned up
  o.val_fraction = 0.999999999;
  expect_error(prepare_dataset(o), {"no training documents", "lower val_fraction"});
  o.val_fraction = 0.0;
  expect_error(prepare_dataset(o), {"val_fraction 0 must be in (0, 1)"});
}

TEST(PrepareErrors, OutputDirectoryNotWritable) {
  TempDir dir;
  PrepareOptions o;
  o.inputs = {write_text(dir.file("a.txt"), "text")};
  o.tokenizer_path = shared_tokenizer_model();
  // A regular file sits where a parent directory would have to be (works
  // even as root, where permission bits would not stop us).
  write_text(dir.file("blocker"), "x");
  o.out_dir = dir.file("blocker/out");
  expect_error(prepare_dataset(o), {"blocker/out", "cannot create output directory"});
}

TEST(ManifestErrors, MissingAndMalformed) {
  TempDir dir;
  expect_error(load_dataset_manifest(dir.path()), {"dataset.json", "manifest not found"});
  write_text(dir.file("dataset.json"), "{not json");
  expect_error(load_dataset_manifest(dir.path()), {"dataset.json", "malformed JSON"});
  write_text(dir.file("dataset.json"),
             R"({"format": "efficientllm-dataset", "format_version": 1, "tokenizer": {"path": "t"}})");
  expect_error(load_dataset_manifest(dir.path()), {"dataset.json: key 'tokenizer.sha256'", "missing"});
  write_text(dir.file("dataset.json"), R"({"format": "other"})");
  expect_error(load_dataset_manifest(dir.path()), {"key 'format'", "expected 'efficientllm-dataset'"});
}

}  // namespace
}  // namespace el::data
