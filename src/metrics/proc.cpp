#include "metrics/proc.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <cctype>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#ifndef EL_CXX_COMPILER
#define EL_CXX_COMPILER "unknown"
#endif
#ifndef EL_BUILD_TYPE
#define EL_BUILD_TYPE "unknown"
#endif
#ifndef EL_GIT_COMMIT
#define EL_GIT_COMMIT "unknown"
#endif

namespace el::metrics {
namespace {

bool read_text(const std::string& path, std::string& out) {
  std::ifstream f(path);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  const size_t end = s.find_last_not_of(ws);
  s.erase(end == std::string::npos ? 0 : end + 1);
  return s;
}

// "key<TAB>: value" lines of /proc/cpuinfo and /proc/meminfo.
std::pair<std::string, std::string> split_kv(const std::string& line) {
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return {trim(line), ""};
  return {trim(line.substr(0, colon)), trim(line.substr(colon + 1))};
}

// GPU model and driver version from the NVIDIA kernel driver's /proc files:
//   /proc/driver/nvidia/version: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
//   /proc/driver/nvidia/gpus/<bus id>/information: "Model: \t\t NVIDIA H100 80GB HBM3"
void collect_nvidia_gpus(PlatformInfo& p) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::set<std::string> dirs;  // sorted, so "the first GPU" is stable
  for (fs::directory_iterator it("/proc/driver/nvidia/gpus", ec), end; !ec && it != end; it.increment(ec)) {
    dirs.insert(it->path().string());
  }
  p.gpu_count = static_cast<int>(dirs.size());
  std::string text;
  if (!dirs.empty() && read_text(*dirs.begin() + "/information", text)) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      auto [k, v] = split_kv(line);
      if (k == "Model") p.gpu_model = v;
    }
  }
  if (read_text("/proc/driver/nvidia/version", text)) p.gpu_driver = parse_nvidia_driver_version(text);
}

}  // namespace

std::string parse_nvidia_driver_version(const std::string& text) {
  const std::string key = "Kernel Module";
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  std::istringstream in(text.substr(at + key.size()));
  std::string word;
  // The line ends at the first newline: look no further than it.
  for (int i = 0; i < 8 && in >> word; ++i) {
    if (!word.empty() && std::isdigit(static_cast<unsigned char>(word[0])) &&
        word.find('.') != std::string::npos) {
      return word;
    }
  }
  return "";
}

namespace {

// Distinct (package, core) pairs from sysfs topology, 0 if unreadable.
int count_physical_cores_sysfs() {
  namespace fs = std::filesystem;
  std::set<std::pair<std::string, std::string>> cores;
  std::error_code ec;
  for (fs::directory_iterator it("/sys/devices/system/cpu", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < 4 || name.rfind("cpu", 0) != 0 ||
        name.find_first_not_of("0123456789", 3) != std::string::npos) {
      continue;
    }
    std::string pkg, core;
    if (read_text(it->path().string() + "/topology/physical_package_id", pkg) &&
        read_text(it->path().string() + "/topology/core_id", core)) {
      cores.emplace(trim(pkg), trim(core));
    }
  }
  return static_cast<int>(cores.size());
}

}  // namespace

Result<int64_t> process_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (!(f >> size_pages >> resident_pages)) {
    return make_error("cannot read resident pages", "/proc/self/statm",
                      "the process RSS needs Linux /proc");
  }
  return resident_pages * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

Result<double> process_cpu_seconds() {
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) {
    return make_error("getrusage(RUSAGE_SELF) failed", "process_cpu_seconds");
  }
  auto secs = [](const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) * 1e-6; };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

Result<SystemCpuTimes> read_system_cpu_times() {
  std::ifstream f("/proc/stat");
  std::string label;
  // user nice system idle iowait irq softirq steal (guest time is already
  // inside user/nice, so it is not added again).
  uint64_t v[8] = {};
  if (!(f >> label) || label != "cpu") {
    return make_error("first line is not the aggregate 'cpu' line", "/proc/stat");
  }
  int got = 0;
  for (; got < 8 && (f >> v[got]); ++got) {
  }
  if (got < 4) return make_error("fewer than 4 fields on the 'cpu' line", "/proc/stat");
  SystemCpuTimes t;
  t.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  t.total = t.busy + v[3] + v[4];
  return t;
}

double system_cpu_busy_fraction(const SystemCpuTimes& before, const SystemCpuTimes& after) {
  if (after.total <= before.total || after.busy < before.busy) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return double(after.busy - before.busy) / double(after.total - before.total);
}

PlatformInfo collect_platform_info() {
  PlatformInfo p;
  p.cpu_model = "unknown";
  p.os = "unknown";
  p.kernel = "unknown";

  std::string text;
  std::set<std::pair<std::string, std::string>> cpuinfo_cores;
  if (read_text("/proc/cpuinfo", text)) {
    std::istringstream in(text);
    std::string line, phys = "0";
    while (std::getline(in, line)) {
      auto [k, v] = split_kv(line);
      if (p.cpu_model == "unknown" && (k == "model name" || k == "Model" || k == "cpu model") &&
          !v.empty()) {
        p.cpu_model = v;
      } else if (k == "physical id") {
        phys = v;
      } else if (k == "core id") {
        cpuinfo_cores.emplace(phys, v);
      }
    }
  }
  p.logical_cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  CPU_ZERO(&set);
  p.usable_cpus = ::sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : p.logical_cpus;
  p.physical_cores = static_cast<int>(cpuinfo_cores.size());
  if (p.physical_cores == 0) p.physical_cores = count_physical_cores_sysfs();
  if (p.physical_cores == 0) p.physical_cores = p.logical_cpus;  // no topology exposed

  if (read_text("/proc/meminfo", text)) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      auto [k, v] = split_kv(line);
      if (k == "MemTotal") {
        p.mem_total_bytes = std::strtoll(v.c_str(), nullptr, 10) * 1024;  // "16318644 kB"
        break;
      }
    }
  }

  if (read_text("/etc/os-release", text)) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("PRETTY_NAME=", 0) == 0) {
        std::string v = line.substr(12);
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
        p.os = v;
        break;
      }
    }
  }
  utsname u{};
  if (::uname(&u) == 0) {
    p.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
    if (p.os == "unknown") p.os = u.sysname;
  }
  p.compiler = EL_CXX_COMPILER;
  p.build_type = EL_BUILD_TYPE;
  p.git_commit = EL_GIT_COMMIT;
  collect_nvidia_gpus(p);
  return p;
}

nlohmann::json to_json(const PlatformInfo& p) {
  return nlohmann::json{{"cpu_model", p.cpu_model},       {"physical_cores", p.physical_cores},
                        {"logical_cpus", p.logical_cpus}, {"usable_cpus", p.usable_cpus},
                        {"mem_total_bytes", p.mem_total_bytes}, {"os", p.os},
                        {"kernel", p.kernel},             {"compiler", p.compiler},
                        {"build_type", p.build_type},     {"git_commit", p.git_commit},
                        {"gpu_count", p.gpu_count},       {"gpu_model", p.gpu_model},
                        {"gpu_driver", p.gpu_driver},     {"gpu_memory_bytes", p.gpu_memory_bytes}};
}

}  // namespace el::metrics
