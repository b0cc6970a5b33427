#include "metrics/energy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace el::metrics {
namespace fs = std::filesystem;

namespace {

// Reads a small sysfs file. Returns the errno on failure (0 on success).
int read_small_file(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  if (n < 0) return err;
  out.assign(buf, static_cast<size_t>(n));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return 0;
}

// Parses a whole string as an unsigned decimal counter.
bool parse_u64(const std::string& s, uint64_t& v) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t r = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (r > (UINT64_MAX - d) / 10) return false;
    r = r * 10 + d;
  }
  v = r;
  return true;
}

// Reads and parses one counter file; on failure returns the reason.
std::optional<std::string> read_counter(const std::string& path, uint64_t& v) {
  std::string text;
  if (const int err = read_small_file(path, text); err != 0) {
    return rapl_read_failure_reason(path, err);
  }
  if (!parse_u64(text, v)) {
    return fmt::format("could not parse '{}' in {} as an unsigned integer", text.substr(0, 40), path);
  }
  return std::nullopt;
}

}  // namespace

uint64_t rapl_delta_uj(uint64_t prev_uj, uint64_t cur_uj, uint64_t max_range_uj) {
  if (cur_uj >= prev_uj) return cur_uj - prev_uj;
  // Wrapped: from prev up to the top of the range, then from 0 to cur.
  const uint64_t to_top = max_range_uj >= prev_uj ? max_range_uj - prev_uj : 0;
  return to_top + cur_uj;
}

std::string rapl_read_failure_reason(const std::string& path, int err) {
  if (err == EACCES || err == EPERM) {
    // Since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only.
    return fmt::format("permission denied reading {} (needs root or a udev rule)", path);
  }
  if (err == ENOENT) return fmt::format("{} does not exist", path);
  return fmt::format("cannot read {}: {}", path, std::strerror(err));
}

std::unique_ptr<RaplEnergySource> RaplEnergySource::open(const std::string& root) {
  std::unique_ptr<RaplEnergySource> src(new RaplEnergySource());
  src->root_ = root;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    src->reason_ = fmt::format(
        "no RAPL powercap domains under {} (the directory does not exist: a virtual machine, a "
        "container, or a kernel without intel_rapl)",
        root);
    return src;
  }

  // Top-level zones only: "intel-rapl:0" is a package, "intel-rapl:0:0" its
  // core/dram subzone (counted inside the package already) and
  // "intel-rapl-mmio:0" the same package through another interface.
  static const std::regex kTopZone(R"((intel-rapl|amd-rapl):[0-9]+)");
  std::vector<std::string> zones;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string zone = it->path().filename().string();
    if (std::regex_match(zone, kTopZone)) zones.push_back(zone);
  }
  if (ec) {
    src->reason_ = fmt::format("cannot list {}: {}", root, ec.message());
    return src;
  }
  std::sort(zones.begin(), zones.end());

  std::vector<std::string> skipped;
  for (const std::string& zone : zones) {
    const std::string dir = root + "/" + zone;
    Domain d;
    d.zone = zone;
    d.energy_path = dir + "/energy_uj";
    std::string label;
    if (read_small_file(dir + "/name", label) != 0 || label.empty()) label = zone;
    d.label = label;
    // psys (platform) already contains the packages: adding it double counts.
    if (label.rfind("psys", 0) == 0) {
      skipped.push_back(zone + " (" + label + ")");
      continue;
    }
    if (auto why = read_counter(dir + "/max_energy_range_uj", d.max_range_uj)) {
      src->reason_ = *why;
      return src;
    }
    if (d.max_range_uj == 0) {
      src->reason_ = fmt::format("{}/max_energy_range_uj is 0: cannot handle counter wrap", dir);
      return src;
    }
    if (auto why = read_counter(d.energy_path, d.last_uj)) {
      src->reason_ = *why;  // a partial sum would under-count, so all or none
      return src;
    }
    src->domains_.push_back(std::move(d));
  }
  if (src->domains_.empty()) {
    src->reason_ = fmt::format("no RAPL powercap domains under {} (virtual machine?)", root);
    if (!skipped.empty()) {
      src->reason_ += fmt::format("; skipped non-package zones: {}", fmt::join(skipped, ", "));
    }
  }
  return src;
}

std::string RaplEnergySource::description() const {
  if (domains_.empty()) return "RAPL (no domains)";
  std::vector<std::string> parts;
  for (const Domain& d : domains_) parts.push_back(d.label + " (" + d.zone + ")");
  return "RAPL " + fmt::format("{}", fmt::join(parts, " + "));
}

std::optional<double> RaplEnergySource::read_joules() {
  if (!available()) {
    last_error_ = reason_;
    return std::nullopt;
  }
  // Read every domain before updating any, so a failed read leaves the state
  // consistent and the next successful read still covers the whole interval.
  std::vector<uint64_t> now(domains_.size());
  for (size_t i = 0; i < domains_.size(); ++i) {
    if (auto why = read_counter(domains_[i].energy_path, now[i])) {
      last_error_ = *why;
      return std::nullopt;
    }
  }
  uint64_t total = 0;
  for (size_t i = 0; i < domains_.size(); ++i) {
    Domain& d = domains_[i];
    d.total_uj += rapl_delta_uj(d.last_uj, now[i], d.max_range_uj);
    d.last_uj = now[i];
    total += d.total_uj;
  }
  last_error_.clear();
  return static_cast<double>(total) * 1e-6;
}

// ---- EnergyMeter ---------------------------------------------------------------

EnergyMeter EnergyMeter::open() {
  EnergyMeter m;
  m.add_source(RaplEnergySource::open());
  return m;
}

EnergyMeter::EnergyMeter(std::vector<std::unique_ptr<EnergySource>> sources)
    : sources_(std::move(sources)) {
  refresh_reason();
}

void EnergyMeter::add_source(std::unique_ptr<EnergySource> source) {
  if (source) sources_.push_back(std::move(source));
  refresh_reason();
}

bool EnergyMeter::available() const {
  return std::any_of(sources_.begin(), sources_.end(),
                     [](const auto& s) { return s->available(); });
}

void EnergyMeter::refresh_reason() {
  reason_.clear();
  if (available()) return;
  if (sources_.empty()) {
    reason_ = "no energy sources configured";
    return;
  }
  std::vector<std::string> parts;
  for (const auto& s : sources_) parts.push_back(s->name() + ": " + s->unavailable_reason());
  reason_ = fmt::format("{}", fmt::join(parts, "; "));
}

std::optional<double> EnergyMeter::read_joules() {
  if (!available()) return std::nullopt;
  double total = 0.0;
  for (const auto& s : sources_) {
    if (!s->available()) continue;
    const std::optional<double> j = s->read_joules();
    if (!j) return std::nullopt;
    total += *j;
  }
  return total;
}

std::string EnergyMeter::source() const {
  std::vector<std::string> parts;
  for (const auto& s : sources_) {
    if (s->available()) parts.push_back(s->description());
  }
  if (parts.empty()) return "none";
  return fmt::format("{}", fmt::join(parts, " + "));
}

}  // namespace el::metrics
