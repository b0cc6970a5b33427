// gpu_peaks.cpp — the table behind gpu_peaks.h.
//
// Numbers are NVIDIA's datasheet values for dense math (the datasheets print
// the 2:4-sparse rate with an asterisk; those are halved here), at boost clock,
// and the memory bandwidth (A100: the 80GB SXM part's 2,039 GB/s; the 40GB
// part has 1,555, the 80GB PCIe 1,935).
// Matching is by whole tokens of the device name (split at ' ' and '-'), so
// "A10" does not match "A100-SXM4-80GB" and "L4" does not match "L40S".
#include "cuda/gpu_peaks.h"

#include <algorithm>
#include <string>
#include <vector>

namespace el::cuda {
namespace {

struct Entry {
  const char* token;      // model token that must appear, e.g. "H100"
  const char* qualifier;  // a second token that must appear too ("" = none)
  GpuPeak peak;
};

// More specific entries (with a qualifier) come before the plain model.
constexpr Entry kTable[] = {
    {"H100", "PCIe", {"H100 PCIe", 756.5, 378.0, 51.2, 2000.0}},
    {"H100", "NVL", {"H100 NVL", 835.5, 417.5, 60.0, 3900.0}},
    {"H100", "", {"H100 SXM", 989.4, 494.7, 66.9, 3350.0}},
    {"H200", "NVL", {"H200 NVL", 835.5, 417.5, 60.0, 4800.0}},
    {"H200", "", {"H200 SXM", 989.4, 494.7, 66.9, 4800.0}},
    {"GH200", "", {"GH200", 989.4, 494.7, 66.9, 4000.0}},
    {"A100", "", {"A100", 312.0, 156.0, 19.5, 2039.0}},
    {"L40S", "", {"L40S", 362.05, 183.0, 91.6, 864.0}},
    {"L40", "", {"L40", 181.05, 90.5, 90.5, 864.0}},
    {"L4", "", {"L4", 121.0, 60.0, 30.3, 300.0}},
    {"A10", "", {"A10", 125.0, 62.5, 31.2, 600.0}},
    {"4090", "RTX", {"GeForce RTX 4090", 165.2, 82.6, 82.6, 1008.0}},
};

std::vector<std::string> tokens_of(std::string_view name) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : name) {
    if (ch == ' ' || ch == '-') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

std::optional<GpuPeak> known_gpu_peak(std::string_view device_name) {
  const std::vector<std::string> tok = tokens_of(device_name);
  auto has = [&tok](const char* t) { return std::find(tok.begin(), tok.end(), t) != tok.end(); };
  for (const Entry& e : kTable) {
    if (has(e.token) && (e.qualifier[0] == '\0' || has(e.qualifier))) return e.peak;
  }
  return std::nullopt;
}

std::optional<double> datasheet_memory_gbps(std::string_view device_name) {
  const std::optional<GpuPeak> p = known_gpu_peak(device_name);
  if (!p) return std::nullopt;
  return p->memory_gbps;
}

std::optional<double> datasheet_peak_gflops(std::string_view device_name, DType dtype) {
  const std::optional<GpuPeak> p = known_gpu_peak(device_name);
  if (!p) return std::nullopt;
  switch (dtype) {
    case DType::bf16:
    case DType::f16:
      return p->bf16_tflops * 1e3;
    case DType::f32:
      return p->f32_tflops * 1e3;
    default:
      return std::nullopt;
  }
}

}  // namespace el::cuda
