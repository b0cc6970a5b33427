// proc.h — what the process and the machine are doing, from /proc and uname.
//
// Used by the Sampler (RSS, CPU time) and written into every result record
// (PlatformInfo), so a number can always be traced to the machine and build
// that produced it. Linux only; the readers return an Error naming the file
// when /proc is missing or has an unexpected layout.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/error.h"

namespace el::metrics {

// Resident set size of this process in bytes: /proc/self/statm field 2
// (resident pages) × the page size. Includes everything the process touches
// (allocator caches, libraries, OpenBLAS buffers), unlike allocator live bytes.
Result<int64_t> process_rss_bytes();

// CPU time this process has used so far, user + system, over all its threads
// (getrusage(RUSAGE_SELF)), in seconds.
Result<double> process_cpu_seconds();

// Aggregate CPU jiffies of the whole machine from the first line of /proc/stat.
struct SystemCpuTimes {
  uint64_t busy = 0;   // user + nice + system + irq + softirq + steal
  uint64_t total = 0;  // busy + idle + iowait
};
Result<SystemCpuTimes> read_system_cpu_times();
// Fraction of the machine's CPU time spent busy between two readings, in
// [0, 1]; NaN if no time passed. Includes other processes: on a shared
// machine this says how contended the measurement was.
double system_cpu_busy_fraction(const SystemCpuTimes& before, const SystemCpuTimes& after);

struct PlatformInfo {
  std::string cpu_model;      // /proc/cpuinfo "model name", e.g. "AMD EPYC 7B13"
  int physical_cores = 0;     // distinct (package, core) pairs
  int logical_cpus = 0;       // online CPUs (hardware threads)
  int usable_cpus = 0;        // CPUs in this process's affinity mask
  int64_t mem_total_bytes = 0;  // /proc/meminfo MemTotal
  std::string os;             // /etc/os-release PRETTY_NAME, e.g. "Debian GNU/Linux 12 (bookworm)"
  std::string kernel;         // uname: "Linux 6.1.0-18-amd64 x86_64"
  std::string compiler;       // EL_CXX_COMPILER, e.g. "GNU-12.2.0"
  std::string build_type;     // EL_BUILD_TYPE, e.g. "Release"
  std::string git_commit;     // EL_GIT_COMMIT, 12 hex digits or "unknown"
  // NVIDIA GPUs as the kernel driver exposes them under /proc/driver/nvidia
  // (no CUDA call, so a CPU-only build records them too). Empty / 0 when
  // there is no NVIDIA driver. The driver does not publish memory size there:
  // gpu_memory_bytes stays 0 unless a caller with a CUDA context fills it.
  int gpu_count = 0;          // entries of /proc/driver/nvidia/gpus
  std::string gpu_model;      // "Model:" of the first GPU, e.g. "NVIDIA H100 80GB HBM3"
  std::string gpu_driver;     // kernel module version, e.g. "550.54.15"
  int64_t gpu_memory_bytes = 0;
};

// Collects PlatformInfo. Never fails: a field that cannot be read is "unknown"
// (strings) or 0 (counts).
PlatformInfo collect_platform_info();

// The driver version in the text of /proc/driver/nvidia/version: the first
// word after "Kernel Module" that starts with a digit and has a dot, e.g.
// "580.159.04" from either "... x86_64 Kernel Module  550.54.15 ..." or the
// open module's "... Open Kernel Module for x86_64  580.159.04 ...". Empty
// when there is none (the report then says nothing rather than a wrong word).
std::string parse_nvidia_driver_version(const std::string& version_file_text);

// Every field under its own name.
nlohmann::json to_json(const PlatformInfo& p);

}  // namespace el::metrics
