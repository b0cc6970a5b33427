// Tests for metrics/stats.h and metrics/timer.h against hand-computed values.
#include "metrics/stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

#include <nlohmann/json.hpp>

#include "metrics/timer.h"

namespace el::metrics {
namespace {

TEST(Summarize, OddCount) {
  // sorted 1 2 3: mean 2, sample var ((1)+(0)+(1))/2 = 1;
  // p90 at position 0.9*2 = 1.8 -> 2 + 0.8*(3-2) = 2.8; p99 at 1.98 -> 2.98.
  const Summary s = summarize({3.0, 1.0, 2.0});
  EXPECT_EQ(s.n, 3u);
  EXPECT_DOUBLE_EQ(s.mean, 2.0);
  EXPECT_DOUBLE_EQ(s.median, 2.0);
  EXPECT_DOUBLE_EQ(s.stddev, 1.0);
  EXPECT_DOUBLE_EQ(s.min, 1.0);
  EXPECT_DOUBLE_EQ(s.max, 3.0);
  EXPECT_NEAR(s.p90, 2.8, 1e-12);
  EXPECT_NEAR(s.p99, 2.98, 1e-12);
}

TEST(Summarize, EvenCount) {
  // 1 2 3 4: mean 2.5, median (2+3)/2, var (2.25+0.25+0.25+2.25)/3 = 5/3;
  // p90 at 0.9*3 = 2.7 -> 3.7; p99 at 2.97 -> 3.97.
  const Summary s = summarize({4.0, 2.0, 1.0, 3.0});
  EXPECT_EQ(s.n, 4u);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_NEAR(s.stddev, std::sqrt(5.0 / 3.0), 1e-12);
  EXPECT_NEAR(s.p90, 3.7, 1e-12);
  EXPECT_NEAR(s.p99, 3.97, 1e-12);
}

TEST(Summarize, SingleValueHasNoStddev) {
  const Summary s = summarize({7.5});
  EXPECT_EQ(s.n, 1u);
  EXPECT_DOUBLE_EQ(s.mean, 7.5);
  EXPECT_DOUBLE_EQ(s.median, 7.5);
  EXPECT_DOUBLE_EQ(s.p90, 7.5);
  EXPECT_DOUBLE_EQ(s.p99, 7.5);
  EXPECT_TRUE(std::isnan(s.stddev));  // n-1 = 0: undefined, not 0
  const nlohmann::json j = to_json(s);
  EXPECT_TRUE(j["stddev"].is_null());
  EXPECT_DOUBLE_EQ(j["mean"].get<double>(), 7.5);
}

TEST(Summarize, EmptyIsAllNullInJson) {
  const Summary s = summarize({});
  EXPECT_EQ(s.n, 0u);
  EXPECT_TRUE(std::isnan(s.mean));
  EXPECT_TRUE(std::isnan(s.p99));
  const nlohmann::json j = to_json(s);
  EXPECT_EQ(j["n"].get<size_t>(), 0u);
  for (const char* k : {"mean", "median", "stddev", "min", "max", "p90", "p99"}) {
    EXPECT_TRUE(j[k].is_null()) << k;
  }
  EXPECT_EQ(j.dump().find("NaN"), std::string::npos);
}

TEST(Summarize, DropsNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Summary s = summarize({nan, 2.0, nan, 4.0});
  EXPECT_EQ(s.n, 2u);
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_DOUBLE_EQ(s.median, 3.0);
}

TEST(Quantile, InterpolatesAndClamps) {
  const std::vector<double> v{10, 20, 30, 40, 50};  // positions 0..4
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.0), 10);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.25), 20);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.3), 22);  // position 1.2
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 1.0), 50);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 2.0), 50);
  EXPECT_TRUE(std::isnan(quantile_sorted({}, 0.5)));
}

TEST(Timer, StopwatchMeasuresSleep) {
  Stopwatch sw;
  const double t0 = now_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double lap = sw.lap();
  EXPECT_GE(lap, 0.019);
  EXPECT_LT(lap, 1.0);
  EXPECT_GE(now_seconds() - t0, 0.019);
  EXPECT_LT(sw.seconds(), lap);  // lap() restarted it
}

}  // namespace
}  // namespace el::metrics
