// The suite runner's progress line (bench/progress.h): durations, the ETA
// arithmetic (estimates first, then measured speed), the line's format with
// and without a bar, and the plain lines written when stderr is not a terminal.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "bench/progress.h"

namespace el::bench {
namespace {

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(44.6), "45s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(60), "1m00s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3599), "59m59s");
  EXPECT_EQ(format_duration(3600 * 2 + 7 * 60 + 20), "2h07m");
  EXPECT_EQ(format_duration(86400 * 3 + 3600 * 4 + 5), "3d04h");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(kNaN), "?");
}

TEST(Progress, EtaFromEstimatesBeforeAnythingFinished) {
  EtaModel m({10, 20, 30});
  EXPECT_DOUBLE_EQ(m.speed_factor(), 1.0);
  EXPECT_DOUBLE_EQ(m.remaining(0, 0, -1), 60);
  // 4 s into the first, no fraction known yet: the rest of its estimate.
  EXPECT_DOUBLE_EQ(m.remaining(0, 4, -1), 56);
  // Running longer than estimated: that one counts as done, not negative.
  EXPECT_DOUBLE_EQ(m.remaining(0, 15, -1), 50);
  EXPECT_DOUBLE_EQ(m.remaining(3, 0, -1), 0);  // all done
}

TEST(Progress, EtaFollowsMeasuredSpeed) {
  EtaModel m({10, 20, 30});
  m.finish(0, 20);  // took twice its estimate
  EXPECT_DOUBLE_EQ(m.speed_factor(), 2.0);
  EXPECT_DOUBLE_EQ(m.remaining(1, 0, -1), 2 * 20 + 2 * 30);
  // The running experiment's own progress replaces its estimate: 10 s for
  // 25% leaves 30 s, plus the last one scaled.
  EXPECT_DOUBLE_EQ(m.remaining(1, 10, 0.25), 30 + 60);
  // Below 1% done the fraction is not trusted yet.
  EXPECT_DOUBLE_EQ(m.remaining(1, 1, 0.005), 40 - 1 + 60);
  m.finish(1, 10);  // then faster than estimated: (20 + 10) / (10 + 20)
  EXPECT_DOUBLE_EQ(m.speed_factor(), 1.0);
  EXPECT_DOUBLE_EQ(m.remaining(2, 0, -1), 30);
}

TEST(Progress, EtaWithoutEstimates) {
  EtaModel m({kNaN, 0, 20});
  // Nothing to go by for the first: unknown.
  EXPECT_TRUE(std::isnan(m.remaining(0, 0, -1)));
  // Its own fraction gives its rest, but the next one is still unknown.
  EXPECT_TRUE(std::isnan(m.remaining(0, 10, 0.5)));
  m.finish(0, 12);
  // The second has no estimate: the mean measured time (12 s) stands in;
  // the speed factor has no estimated experiment yet, so it stays 1.
  EXPECT_DOUBLE_EQ(m.speed_factor(), 1.0);
  EXPECT_DOUBLE_EQ(m.remaining(1, 2, -1), 10 + 20);
}

TEST(Progress, LineFormat) {
  ProgressView v;
  v.index = 2;
  v.total = 5;
  v.label = "GQA";
  v.detail = "rep 2/3";
  v.elapsed_s = 65;
  v.eta_s = 130;
  EXPECT_EQ(format_progress_line(v, 0), "[2/5] GQA rep 2/3  elapsed 1m05s  eta 2m10s");
  // The bar is the suite's time fraction: 65 / (65 + 130) = 1/3 of 12 cells.
  EXPECT_EQ(format_progress_line(v, 12), "[2/5] [####........]  33% GQA rep 2/3  elapsed 1m05s  eta 2m10s");
  v.detail.clear();
  v.eta_s = kNaN;
  EXPECT_EQ(format_progress_line(v, 4), "[2/5] [....]     GQA  elapsed 1m05s  eta ?");
  v.eta_s = 0;
  EXPECT_EQ(format_progress_line(v, 4), "[2/5] [####] 100% GQA  elapsed 1m05s  eta 0s");
}

// Not a terminal: a line when a row starts, at 25/50/75%, and when it ends; no
// carriage returns or escape sequences.
TEST(Progress, PlainLinesForLogs) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    SuiteProgress p(f, 3, EtaModel({100, 100}));
    p.set_tty(false);
    p.line("[1/3] MHA: cached (results/quick.jsonl:1)");
    p.begin(1, "GQA", 0);
    p.update(0.1, "loss 7.1");
    p.update(0.3, "loss 6.2");
    p.update(0.31, "loss 6.1");  // same quarter: no line
    p.update(0.8, "loss 5.0");
    p.end("ok");
  }
  std::rewind(f);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f)) text += buf;
  std::fclose(f);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\033'), std::string::npos);
  EXPECT_HAS(text, "[1/3] MHA: cached (results/quick.jsonl:1)\n");
  EXPECT_HAS(text, "[2/3] GQA started  elapsed 0s  eta 3m20s\n");
  EXPECT_HAS(text, "[2/3] GQA 25% loss 6.2  elapsed");
  EXPECT_HAS(text, "[2/3] GQA 75% loss 5.0  elapsed");
  EXPECT_HAS(text, "[2/3] GQA: ok in 0s  elapsed");
  EXPECT_EQ(text.find("50%"), std::string::npos) << text;  // 0.31 -> 0.8 crosses 50% without a stop there
  int lines = 0;
  for (char c : text) lines += c == '\n';
  EXPECT_EQ(lines, 5) << text;
}

// On a terminal the running line is redrawn in place and cleared before a
// permanent line.
TEST(Progress, TerminalRedrawsOneLine) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    SuiteProgress p(f, 2, EtaModel({10}));
    p.set_tty(true);
    p.begin(0, "MHA", 0);
    p.end("ok");
  }
  std::rewind(f);
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f)) text += buf;
  std::fclose(f);
  EXPECT_HAS(text, "\r\033[K[1/2] [");
  EXPECT_HAS(text, "MHA  elapsed 0s  eta 10s");
  EXPECT_HAS(text, "\r\033[K[1/2] MHA: ok in 0s");
}

}  // namespace
}  // namespace el::bench
