// unigram_test.cpp — the unigram perplexity baseline.
#include "data/unigram.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "data/data_test_util.h"
#include "data/shard.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::TempDir;

TEST(Unigram, UniformDataGivesVocabSize) {
  const int V = 256;
  std::vector<uint32_t> train, val;
  for (int r = 0; r < 10; ++r)
    for (int v = 0; v < V; ++v) train.push_back(static_cast<uint32_t>(v));
  for (int v = 0; v < V; ++v) val.push_back(static_cast<uint32_t>(v));
  // Equal counts: p = (c+1)/(V*c+V) = 1/V exactly.
  EXPECT_NEAR(unigram_perplexity(train, val, V), V, 1e-9);

  // Random uniform tokens: close to V.
  Rng rng(3);
  std::vector<uint32_t> rt(200000), rv(20000);
  for (auto& t : rt) t = static_cast<uint32_t>(rng.below(V));
  for (auto& t : rv) t = static_cast<uint32_t>(rng.below(V));
  EXPECT_NEAR(unigram_perplexity(rt, rv, V), V, 0.01 * V);
}

TEST(Unigram, SkewedDataIsFarBelowVocab) {
  // One token always: p = (N+1)/(N+V) -> PPL close to 1.
  std::vector<uint32_t> train(100000, 7), val(1000, 7);
  const double ppl = unigram_perplexity(train, val, 4096);
  EXPECT_NEAR(ppl, (100000.0 + 4096) / 100001.0, 1e-9);
  // A token never seen in training pays the smoothing price: p = 1/(N+V).
  std::vector<uint32_t> unseen(1, 8);
  EXPECT_NEAR(unigram_perplexity(train, unseen, 4096), 100000.0 + 4096, 1e-6);
  EXPECT_TRUE(std::isnan(unigram_perplexity(train, {}, 4096)));
}

TEST(Unigram, ShardsMatchInMemory) {
  TempDir dir;
  Rng rng(1);
  std::vector<uint32_t> a(5000), b(3000), v(2000);
  for (auto& t : a) t = static_cast<uint32_t>(rng.below(50));
  for (auto& t : b) t = static_cast<uint32_t>(rng.below(100));
  for (auto& t : v) t = static_cast<uint32_t>(rng.below(100));
  write_shard(dir.file("a.bin"), a, 100).check();
  write_shard(dir.file("b.bin"), b, 100).check();
  write_shard(dir.file("v.bin"), v, 100).check();
  std::vector<uint32_t> train = a;
  train.insert(train.end(), b.begin(), b.end());
  auto r = unigram_perplexity({dir.file("a.bin"), dir.file("b.bin")}, {dir.file("v.bin")}, 100);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_NEAR(r.value(), unigram_perplexity(train, v, 100), 1e-9);
}

TEST(UnigramErrors, BadOrEmptyShards) {
  TempDir dir;
  write_shard(dir.file("t.bin"), {1, 2, 3}, 10).check();
  write_shard(dir.file("e.bin"), {}, 10).check();
  expect_error(unigram_perplexity({dir.file("t.bin")}, {dir.file("e.bin")}, 10),
               {"e.bin", "validation shards hold no tokens"});
  expect_error(unigram_perplexity({dir.file("t.bin")}, {dir.file("t.bin")}, 3),
               {"t.bin", "written for a vocab of 10"});
  expect_error(unigram_perplexity({dir.file("missing.bin")}, {dir.file("t.bin")}, 10),
               {"missing.bin"});
}

}  // namespace
}  // namespace el::data
