// energy.h — energy counters the benchmark can read, and nothing else.
//
// AEC (average power) is only reported from a hardware energy COUNTER that
// integrates power in the hardware: a source is either readable and exact, or
// unavailable with a reason saying why. We never estimate energy from TDP,
// utilisation or a model; a machine without counters reports null + reason.
//
// Sources implement EnergySource. Today there is one:
//   RaplEnergySource — Linux powercap RAPL (Intel, and AMD Zen via the same
//   intel_rapl driver): the top-level package zones under
//   /sys/class/powercap/{intel-rapl,amd-rapl}:N, i.e. CPU package energy
//   (cores + uncore; DRAM is a subzone and is not added, psys is skipped
//   because it already contains the packages).
// The CUDA issue adds an NVML source (nvmlDeviceGetTotalEnergyConsumption, mJ
// per GPU) as another EnergySource; EnergyMeter just holds a list of them.
//
// Thread-safety: read_joules() updates the wrap-around state, so each source
// (and each EnergyMeter) must be read by one thread at a time; the Sampler is
// normally the only reader.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace el::metrics {

class EnergySource {
 public:
  virtual ~EnergySource() = default;
  // Short stable key used in JSON, e.g. "cpu_rapl", later "gpu0_nvml".
  virtual std::string name() const = 0;
  // Human-readable: what hardware and which counters, e.g.
  // "RAPL package-0 (intel-rapl:0) + package-1 (intel-rapl:1)".
  virtual std::string description() const = 0;
  virtual bool available() const = 0;
  // Why available() is false (empty when it is true), precise enough to act
  // on: the path and errno, or what is missing.
  virtual const std::string& unavailable_reason() const = 0;
  // Joules consumed since the source was opened (monotonic, wrap-around of the
  // hardware counter already handled). nullopt if unavailable or if this read
  // failed; last_error() then says why.
  virtual std::optional<double> read_joules() = 0;
  virtual const std::string& last_error() const = 0;
};

// Linux powercap RAPL package domains. `root` is the powercap directory, a
// parameter so tests can point it at a fake tree.
class RaplEnergySource final : public EnergySource {
 public:
  static constexpr const char* kDefaultRoot = "/sys/class/powercap";

  // Enumerates the package zones and takes the baseline reading. Never
  // fails: problems make the source unavailable with a reason.
  static std::unique_ptr<RaplEnergySource> open(const std::string& root = kDefaultRoot);

  std::string name() const override { return "cpu_rapl"; }
  std::string description() const override;
  bool available() const override { return reason_.empty(); }
  const std::string& unavailable_reason() const override { return reason_; }
  std::optional<double> read_joules() override;
  const std::string& last_error() const override { return last_error_; }

  struct Domain {
    std::string zone;          // directory name, e.g. "intel-rapl:0"
    std::string label;         // contents of `name`, e.g. "package-0"
    std::string energy_path;   // <root>/<zone>/energy_uj
    uint64_t max_range_uj = 0; // the counter wraps to 0 after this value
    uint64_t last_uj = 0;      // previous raw reading
    uint64_t total_uj = 0;     // accumulated since open()
  };
  const std::vector<Domain>& domains() const { return domains_; }

 private:
  RaplEnergySource() = default;
  std::string root_;
  std::vector<Domain> domains_;
  std::string reason_;
  std::string last_error_;
};

// Microjoules consumed between two raw readings of a counter that wraps to 0
// after max_range_uj (powercap's max_energy_range_uj). A reading lower than
// the previous one means exactly one wrap (readings are far more frequent than
// the wrap period, minutes even at full power).
uint64_t rapl_delta_uj(uint64_t prev_uj, uint64_t cur_uj, uint64_t max_range_uj);

// The unavailable-reason text for a failed read of `path` with errno `err`
// (exposed so the EACCES wording is testable when tests run as root).
std::string rapl_read_failure_reason(const std::string& path, int err);

// All energy sources of this process, summed.
class EnergyMeter {
 public:
  // The default sources of this build: RAPL at /sys/class/powercap (and, once
  // the CUDA backend registers it, NVML).
  static EnergyMeter open();

  EnergyMeter() { refresh_reason(); }
  explicit EnergyMeter(std::vector<std::unique_ptr<EnergySource>> sources);
  EnergyMeter(EnergyMeter&&) = default;
  EnergyMeter& operator=(EnergyMeter&&) = default;

  void add_source(std::unique_ptr<EnergySource> source);

  // True when at least one source is readable.
  bool available() const;
  // When no source is available: each source's reason, "name: reason; ...".
  // Empty when available() is true.
  const std::string& unavailable_reason() const { return reason_; }
  // Sum over the available sources of joules since each was opened; nullopt
  // when none is available or a read failed.
  std::optional<double> read_joules();
  // The available sources' descriptions joined by " + ", or "none".
  std::string source() const;

  const std::vector<std::unique_ptr<EnergySource>>& sources() const { return sources_; }

 private:
  void refresh_reason();
  std::vector<std::unique_ptr<EnergySource>> sources_;
  std::string reason_;
};

}  // namespace el::metrics
