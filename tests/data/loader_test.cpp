// loader_test.cpp — DataLoader: window contents, reproducibility, resume,
// sequential validation batches and errors.
#include "data/loader.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "data/data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::TempDir;

constexpr int kVocab = 100000;

// Two shards whose token = base + position, so a window identifies itself:
// shard a holds 0..999, shard b holds 50000..50499.
struct Shards {
  TempDir dir;
  std::vector<std::string> paths;
  Shards() {
    std::vector<uint32_t> a(1000), b(500);
    std::iota(a.begin(), a.end(), 0u);
    std::iota(b.begin(), b.end(), 50000u);
    paths = {dir.file("a.bin"), dir.file("b.bin")};
    write_shard(paths[0], a, kVocab).check();
    write_shard(paths[1], b, kVocab).check();
  }
};

std::vector<int32_t> ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

DataLoader open_ok(const std::vector<std::string>& paths, int64_t B, int64_t T, uint64_t seed = 1) {
  auto r = DataLoader::open(paths, kVocab, B, T, seed);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return std::move(r.value());
}

std::vector<int32_t> random_inputs(DataLoader& dl) {
  Tensor x, y;
  dl.next_random(x, y);
  return ints(x);
}

TEST(DataLoader, RandomWindowsAreContiguousAndInsideOneShard) {
  Shards s;
  DataLoader dl = open_ok(s.paths, 4, 16);
  EXPECT_EQ(dl.num_tokens(), 1500);
  std::set<int32_t> starts_b;
  for (int step = 0; step < 50; ++step) {
    Tensor x, y;
    dl.next_random(x, y);
    ASSERT_EQ(x.shape(), (Shape{4, 16}));
    ASSERT_EQ(x.dtype(), DType::i32);
    ASSERT_TRUE(x.device().is_cpu());
    ASSERT_EQ(y.shape(), (Shape{4, 16}));
    const auto xi = ints(x), yi = ints(y);
    for (int b = 0; b < 4; ++b) {
      const int32_t first = xi[b * 16];
      const bool in_b = first >= 50000;
      if (in_b) starts_b.insert(first);
      for (int t = 0; t < 16; ++t) {
        EXPECT_EQ(xi[b * 16 + t], first + t);
        EXPECT_EQ(yi[b * 16 + t], first + t + 1);  // targets shifted by one
      }
      EXPECT_LE(yi[b * 16 + 15], in_b ? 50499 : 999);  // never crosses a shard end
    }
  }
  EXPECT_FALSE(starts_b.empty());  // both shards are sampled
}

TEST(DataLoader, BatchesAreFreshTensors) {
  Shards s;
  DataLoader dl = open_ok(s.paths, 2, 8);
  Tensor x, y;
  dl.next_random(x, y);
  Tensor kept = x;
  const auto before = ints(kept);
  dl.next_random(x, y);
  EXPECT_FALSE(x.same(kept));
  EXPECT_EQ(ints(kept), before);  // the earlier batch is not overwritten
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedOtherBatches) {
  Shards s;
  DataLoader a = open_ok(s.paths, 2, 8, 5);
  DataLoader b = open_ok(s.paths, 2, 8, 5);
  DataLoader c = open_ok(s.paths, 2, 8, 6);
  bool differs = false;
  for (int i = 0; i < 10; ++i) {
    const auto xa = random_inputs(a);
    EXPECT_EQ(xa, random_inputs(b));
    differs |= xa != random_inputs(c);
  }
  EXPECT_TRUE(differs);
}

TEST(DataLoader, StateResumeContinuesWithTheSameBatches) {
  Shards s;
  DataLoader a = open_ok(s.paths, 3, 10, 11);
  for (int i = 0; i < 3; ++i) random_inputs(a);
  Tensor x, y;
  a.next_sequential(x, y);
  const std::string saved = a.state();
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 4; ++i) expected.push_back(random_inputs(a));
  ASSERT_TRUE(a.next_sequential(x, y));
  const auto expected_seq = ints(x);

  DataLoader b = open_ok(s.paths, 3, 10, 999);  // the seed is overridden by the state
  ASSERT_TRUE(b.set_state(saved).ok());
  EXPECT_EQ(b.snapshot().random_batches, 3);
  EXPECT_EQ(b.snapshot().sequential_position, 1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(random_inputs(b), expected[i]);
  ASSERT_TRUE(b.next_sequential(x, y));
  EXPECT_EQ(ints(x), expected_seq);
  EXPECT_EQ(b.snapshot(), a.snapshot());
  // The JSON round trip is exact.
  EXPECT_EQ(DataLoaderState::from_json(a.state()).value(), a.snapshot());
}

TEST(DataLoader, SequentialWalksFixedWindowsThenStops) {
  Shards s;
  // T = 100: shard a (1000 tokens) has (1000-1)/100 = 9 windows, shard b
  // (500) has 4: 13 windows, B = 4 -> 3 full batches, the 13th window dropped.
  DataLoader dl = open_ok(s.paths, 4, 100);
  EXPECT_EQ(dl.num_sequential_batches(), 3);
  std::vector<int32_t> firsts;
  Tensor x, y;
  while (dl.next_sequential(x, y)) {
    const auto xi = ints(x), yi = ints(y);
    for (int b = 0; b < 4; ++b) {
      firsts.push_back(xi[b * 100]);
      EXPECT_EQ(yi[b * 100 + 99], xi[b * 100] + 100);
    }
  }
  const std::vector<int32_t> want = {0,   100, 200, 300,   400,   500,
                                     600, 700, 800, 50000, 50100, 50200};
  EXPECT_EQ(firsts, want);
  EXPECT_FALSE(dl.next_sequential(x, y));  // stays finished until reset()
  dl.reset();
  ASSERT_TRUE(dl.next_sequential(x, y));
  EXPECT_EQ(ints(x)[0], 0);
  // Sequential batches do not disturb the random stream.
  DataLoader fresh = open_ok(s.paths, 4, 100);
  EXPECT_EQ(random_inputs(dl), random_inputs(fresh));
}

TEST(DataLoader, FewerWindowsThanBatchGivesNoSequentialBatch) {
  Shards s;
  DataLoader dl = open_ok(s.paths, 20, 100);  // 13 windows < B = 20
  EXPECT_EQ(dl.num_sequential_batches(), 0);
  Tensor x, y;
  EXPECT_FALSE(dl.next_sequential(x, y));
  EXPECT_FALSE(x.defined());
}

TEST(DataLoaderErrors, StateFromAnotherLoaderIsRefused) {
  Shards s;
  DataLoader a = open_ok(s.paths, 2, 8);
  DataLoader b = open_ok(s.paths, 4, 8);
  expect_error(b.set_state(a.state()),
               {"data loader state is for B=2 T=8 over 1500 tokens", "this loader has B=4 T=8"});
  DataLoader c = open_ok({s.paths[0]}, 2, 8);
  expect_error(c.set_state(a.state()), {"over 1500 tokens", "over 1000 tokens"});
}

TEST(DataLoaderErrors, MalformedStateJson) {
  expect_error(DataLoaderState::from_json("{"), {"data loader state", "malformed JSON"});
  expect_error(DataLoaderState::from_json(R"({"seq_len": 1})"), {"key 'batch_size'"});
  expect_error(DataLoaderState::from_json(
                   R"({"batch_size":1,"seq_len":1,"num_tokens":1,"random_batches":0,"sequential_position":0,"rng":[1,2]})"),
               {"key 'rng'", "5 unsigned integers"});
  Shards s;
  DataLoader dl = open_ok(s.paths, 4, 100);
  DataLoaderState st = dl.snapshot();
  st.sequential_position = 7;
  expect_error(dl.restore(st), {"sequential_position 7 of 3 batches"});
}

TEST(DataLoaderErrors, TooLittleDataAndBadArguments) {
  Shards s;
  expect_error(DataLoader::open(s.paths, kVocab, 2, 1000, 0),
               {"a.bin (+1 more shards)", "shards hold 1500 tokens", "seq_len + 1 = 1001"});
  expect_error(DataLoader::open({}, kVocab, 2, 8, 0), {"no token shards"});
  expect_error(DataLoader::open(s.paths, kVocab, 0, 8, 0), {"batch_size 0"});
  expect_error(DataLoader::open({s.dir.file("missing.bin")}, kVocab, 2, 8, 0),
               {"missing.bin", "cannot open token shard"});
}

TEST(DataLoaderErrors, BadShardIsReported) {
  TempDir dir;
  std::vector<uint32_t> tokens(1000);
  std::iota(tokens.begin(), tokens.end(), 0u);
  write_shard(dir.file("a.bin"), tokens, 0).check();  // vocab unknown in the header
  // Tokens reach 999: a model vocab of 600 is too small.
  expect_error(DataLoader::open({dir.file("a.bin")}, 600, 2, 8, 0),
               {"a.bin", "token id 600 at index 600"});
  // A shard written for a bigger vocab is refused from its header.
  Shards s;
  expect_error(DataLoader::open(s.paths, 600, 2, 8, 0), {"written for a vocab of 100000"});
}

}  // namespace
}  // namespace el::data
