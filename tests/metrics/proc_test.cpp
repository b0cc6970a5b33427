// Tests for metrics/proc.h: /proc readers and PlatformInfo on this machine.
#include "metrics/proc.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/timer.h"

namespace el::metrics {
namespace {

TEST(Proc, RssGrowsWhenPagesAreTouched) {
  const int64_t before = process_rss_bytes().value();
  EXPECT_GT(before, 0);
  std::vector<char> big(64 << 20, 1);  // touched: resident
  const int64_t after = process_rss_bytes().value();
  EXPECT_GT(after, before + (48 << 20)) << "before " << before << " after " << after;
  EXPECT_EQ(big[12345], 1);
}

TEST(Proc, CpuTimeAdvancesWithWork) {
  // Spin until 30 ms of CPU time have been charged to us; on a loaded shared
  // machine that can take several times longer in wall time, hence the loop.
  const double c0 = process_cpu_seconds().value();
  Stopwatch sw;
  volatile double x = 0;
  double c1 = c0;
  while (c1 - c0 < 0.03 && sw.seconds() < 10.0) {
    for (int i = 0; i < 100000; ++i) x = x + std::sqrt(x + 1.0);
    c1 = process_cpu_seconds().value();
  }
  EXPECT_GE(c1 - c0, 0.03);
  // CPU time of this (mostly single-threaded) spin cannot exceed wall time by
  // more than the other threads' share.
  EXPECT_LT(c1 - c0, sw.seconds() * 4 + 0.01);
}

TEST(Proc, SystemCpuBusyFraction) {
  const SystemCpuTimes a = read_system_cpu_times().value();
  EXPECT_GT(a.total, 0u);
  EXPECT_LE(a.busy, a.total);
  EXPECT_DOUBLE_EQ(system_cpu_busy_fraction({10, 100}, {40, 200}), 0.3);
  EXPECT_TRUE(std::isnan(system_cpu_busy_fraction(a, a)));
}

TEST(Proc, NvidiaDriverVersionFromBothModuleFlavours) {
  EXPECT_EQ(parse_nvidia_driver_version(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
                "GCC version:  gcc version 12.2.0\n"),
            "550.54.15");
  EXPECT_EQ(parse_nvidia_driver_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  "
                                        "Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Oct 30 2025\n"),
            "580.159.04");
  EXPECT_EQ(parse_nvidia_driver_version("garbage"), "");
  EXPECT_EQ(parse_nvidia_driver_version("Kernel Module for x86_64 release build"), "");
}

TEST(Proc, PlatformInfoIsFilled) {
  const PlatformInfo p = collect_platform_info();
  EXPECT_FALSE(p.cpu_model.empty());
  EXPECT_NE(p.cpu_model, "unknown");
  EXPECT_GE(p.physical_cores, 1);
  EXPECT_GE(p.logical_cpus, p.physical_cores);
  EXPECT_GE(p.usable_cpus, 1);
  EXPECT_LE(p.usable_cpus, p.logical_cpus);
  EXPECT_GT(p.mem_total_bytes, int64_t{256} << 20);
  EXPECT_FALSE(p.os.empty());
  EXPECT_EQ(p.kernel.rfind("Linux ", 0), 0u) << p.kernel;
  EXPECT_FALSE(p.compiler.empty());
  EXPECT_NE(p.compiler, "unknown");  // el_core defines EL_CXX_COMPILER publicly
  EXPECT_FALSE(p.build_type.empty());
  EXPECT_FALSE(p.git_commit.empty());

  const nlohmann::json j = to_json(p);
  for (const char* k : {"cpu_model", "physical_cores", "logical_cpus", "usable_cpus",
                        "mem_total_bytes", "os", "kernel", "compiler", "build_type",
                        "git_commit"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["logical_cpus"].get<int>(), p.logical_cpus);
  std::cout << "[ platform ] " << j.dump() << "\n";
}

}  // namespace
}  // namespace el::metrics
