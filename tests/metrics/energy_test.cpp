// Tests for metrics/energy.h: a fake powercap tree in a temp dir drives both
// the working and the unavailable code paths, whatever this machine has.
#include "metrics/energy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace el::metrics {
namespace {
namespace fs = std::filesystem;

class FakePowercap : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "el_powercap_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(root_, ec);
  }
  void write(const std::string& rel, const std::string& text) {
    fs::create_directories((fs::path(root_) / rel).parent_path());
    std::ofstream(fs::path(root_) / rel) << text << "\n";
  }
  // A zone directory with name, energy_uj and max_energy_range_uj.
  void zone(const std::string& z, const std::string& name, uint64_t uj, uint64_t max_uj) {
    write(z + "/name", name);
    write(z + "/energy_uj", std::to_string(uj));
    write(z + "/max_energy_range_uj", std::to_string(max_uj));
  }
  std::string root_;
};

TEST(RaplDelta, NoWrapAndWrap) {
  EXPECT_EQ(rapl_delta_uj(100, 350, 1000), 250u);
  EXPECT_EQ(rapl_delta_uj(900, 50, 1000), 150u);  // 100 to the top, then 50
  EXPECT_EQ(rapl_delta_uj(5, 5, 1000), 0u);
}

TEST_F(FakePowercap, SumsPackagesSkipsSubzonesPsysAndMmio) {
  zone("intel-rapl:0", "package-0", 1'000'000, 262'143'328'850);
  zone("intel-rapl:1", "package-1", 5'000'000, 262'143'328'850);
  zone("intel-rapl:0:0", "dram", 0, 1'000'000'000);         // subzone: inside package-0
  zone("intel-rapl:2", "psys", 0, 1'000'000'000);           // platform: contains packages
  zone("intel-rapl-mmio:0", "package-0", 0, 1'000'000'000); // same package, other interface
  write("intel-rapl/.keep", "");                            // the control-type dir

  auto src = RaplEnergySource::open(root_);
  ASSERT_TRUE(src->available()) << src->unavailable_reason();
  EXPECT_TRUE(src->unavailable_reason().empty());
  ASSERT_EQ(src->domains().size(), 2u);
  EXPECT_EQ(src->description(), "RAPL package-0 (intel-rapl:0) + package-1 (intel-rapl:1)");
  EXPECT_EQ(src->name(), "cpu_rapl");

  EXPECT_DOUBLE_EQ(*src->read_joules(), 0.0);  // baseline taken at open()
  zone("intel-rapl:0", "package-0", 3'500'000, 262'143'328'850);  // +2.5 J
  zone("intel-rapl:1", "package-1", 6'000'000, 262'143'328'850);  // +1.0 J
  zone("intel-rapl:0:0", "dram", 999'000'000, 1'000'000'000);     // ignored
  EXPECT_NEAR(*src->read_joules(), 3.5, 1e-9);
}

TEST_F(FakePowercap, HandlesWrapAround) {
  zone("intel-rapl:0", "package-0", 900'000, 1'000'000);
  auto src = RaplEnergySource::open(root_);
  ASSERT_TRUE(src->available()) << src->unavailable_reason();
  zone("intel-rapl:0", "package-0", 50'000, 1'000'000);  // wrapped: 100k + 50k uJ
  EXPECT_NEAR(*src->read_joules(), 0.15, 1e-12);
  zone("intel-rapl:0", "package-0", 250'000, 1'000'000);  // +200k uJ, accumulates
  EXPECT_NEAR(*src->read_joules(), 0.35, 1e-12);
}

TEST_F(FakePowercap, AmdRaplLayout) {
  zone("amd-rapl:0", "package-0", 0, 1'000'000'000);
  auto src = RaplEnergySource::open(root_);
  ASSERT_TRUE(src->available()) << src->unavailable_reason();
  zone("amd-rapl:0", "package-0", 2'000'000, 1'000'000'000);
  EXPECT_NEAR(*src->read_joules(), 2.0, 1e-12);
}

TEST_F(FakePowercap, MissingDirectoryIsUnavailableWithReason) {
  auto src = RaplEnergySource::open(root_ + "/does-not-exist");
  EXPECT_FALSE(src->available());
  EXPECT_NE(src->unavailable_reason().find("no RAPL powercap domains under"), std::string::npos);
  EXPECT_NE(src->unavailable_reason().find("does-not-exist"), std::string::npos);
  EXPECT_FALSE(src->read_joules().has_value());
  EXPECT_EQ(src->last_error(), src->unavailable_reason());
}

TEST_F(FakePowercap, NoPackageZonesIsUnavailable) {
  zone("intel-rapl:0", "psys", 0, 1'000'000);
  auto src = RaplEnergySource::open(root_);
  EXPECT_FALSE(src->available());
  EXPECT_NE(src->unavailable_reason().find("no RAPL powercap domains under " + root_ +
                                           " (virtual machine?)"),
            std::string::npos);
  EXPECT_NE(src->unavailable_reason().find("skipped non-package zones: intel-rapl:0 (psys)"),
            std::string::npos);
}

TEST_F(FakePowercap, UnparsableCounterIsUnavailable) {
  zone("intel-rapl:0", "package-0", 0, 1'000'000);
  write("intel-rapl:0/energy_uj", "12ab");
  auto src = RaplEnergySource::open(root_);
  EXPECT_FALSE(src->available());
  EXPECT_NE(src->unavailable_reason().find("could not parse '12ab'"), std::string::npos);
  EXPECT_NE(src->unavailable_reason().find("intel-rapl:0/energy_uj"), std::string::npos);
}

TEST_F(FakePowercap, MissingMaxRangeIsUnavailable) {
  write("intel-rapl:0/name", "package-0");
  write("intel-rapl:0/energy_uj", "5");
  auto src = RaplEnergySource::open(root_);
  EXPECT_FALSE(src->available());
  EXPECT_NE(src->unavailable_reason().find("max_energy_range_uj does not exist"),
            std::string::npos);
}

TEST_F(FakePowercap, ReadFailureMidRunKeepsState) {
  zone("intel-rapl:0", "package-0", 1'000'000, 1'000'000'000);
  auto src = RaplEnergySource::open(root_);
  ASSERT_TRUE(src->available());
  fs::remove(fs::path(root_) / "intel-rapl:0/energy_uj");
  EXPECT_FALSE(src->read_joules().has_value());
  EXPECT_NE(src->last_error().find("energy_uj does not exist"), std::string::npos);
  zone("intel-rapl:0", "package-0", 4'000'000, 1'000'000'000);
  EXPECT_NEAR(*src->read_joules(), 3.0, 1e-12);  // the interval is still covered
  EXPECT_TRUE(src->last_error().empty());
}

TEST(RaplReason, PermissionDeniedWording) {
  EXPECT_EQ(rapl_read_failure_reason("/sys/class/powercap/intel-rapl:0/energy_uj", EACCES),
            "permission denied reading /sys/class/powercap/intel-rapl:0/energy_uj (needs root or "
            "a udev rule)");
  EXPECT_NE(rapl_read_failure_reason("/x", EIO).find("cannot read /x"), std::string::npos);
}

TEST_F(FakePowercap, PermissionDeniedOnRealFile) {
  zone("intel-rapl:0", "package-0", 0, 1'000'000);
  const std::string path = root_ + "/intel-rapl:0/energy_uj";
  ::chmod(path.c_str(), 0);
  if (::access(path.c_str(), R_OK) == 0) GTEST_SKIP() << "running as root: mode 000 is readable";
  auto src = RaplEnergySource::open(root_);
  EXPECT_FALSE(src->available());
  EXPECT_EQ(src->unavailable_reason(),
            "permission denied reading " + path + " (needs root or a udev rule)");
}

// A source whose joules the test sets, to check EnergyMeter's bookkeeping.
class FakeSource final : public EnergySource {
 public:
  FakeSource(std::string name, bool ok, double* joules)
      : name_(std::move(name)), reason_(ok ? "" : "fake unavailable"), joules_(joules) {}
  std::string name() const override { return name_; }
  std::string description() const override { return "fake " + name_; }
  bool available() const override { return reason_.empty(); }
  const std::string& unavailable_reason() const override { return reason_; }
  std::optional<double> read_joules() override {
    if (!available()) return std::nullopt;
    return *joules_;
  }
  const std::string& last_error() const override { return error_; }

 private:
  std::string name_, reason_, error_;
  double* joules_;
};

TEST(EnergyMeter, SumsAvailableSourcesOnly) {
  double a = 2.0, b = 5.0;
  std::vector<std::unique_ptr<EnergySource>> v;
  v.push_back(std::make_unique<FakeSource>("cpu", true, &a));
  v.push_back(std::make_unique<FakeSource>("gpu0", false, &b));
  EnergyMeter m(std::move(v));
  EXPECT_TRUE(m.available());
  EXPECT_TRUE(m.unavailable_reason().empty());
  EXPECT_EQ(m.source(), "fake cpu");
  EXPECT_DOUBLE_EQ(*m.read_joules(), 2.0);
  double c = 1.5;
  m.add_source(std::make_unique<FakeSource>("gpu1", true, &c));
  EXPECT_DOUBLE_EQ(*m.read_joules(), 3.5);
  EXPECT_EQ(m.source(), "fake cpu + fake gpu1");
}

TEST(EnergyMeter, UnavailableCollectsReasons) {
  EnergyMeter empty;
  EXPECT_FALSE(empty.available());
  EXPECT_EQ(empty.unavailable_reason(), "no energy sources configured");
  EXPECT_EQ(empty.source(), "none");
  EXPECT_FALSE(empty.read_joules().has_value());

  EnergyMeter m;
  m.add_source(RaplEnergySource::open("/nonexistent/powercap"));
  EXPECT_FALSE(m.available());
  EXPECT_EQ(m.unavailable_reason().rfind("cpu_rapl: no RAPL powercap domains under /nonexistent", 0),
            0u);
}

// This machine: either a working meter or a non-empty reason, never a guess.
TEST(EnergyMeter, ThisMachineWorksOrSaysWhy) {
  EnergyMeter m = EnergyMeter::open();
  if (m.available()) {
    EXPECT_TRUE(m.read_joules().has_value());
    EXPECT_NE(m.source(), "none");
  } else {
    EXPECT_FALSE(m.unavailable_reason().empty());
    EXPECT_FALSE(m.read_joules().has_value());
  }
  std::cout << "[ energy ] source: " << m.source()
            << (m.available() ? "" : " — unavailable: " + m.unavailable_reason()) << "\n";
}

}  // namespace
}  // namespace el::metrics
