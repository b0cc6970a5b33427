// nvml.cpp — NVML through dlopen (see nvml.h).
#include "cuda/nvml.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <map>
#include <mutex>

#include "cuda/gpu_peaks.h"
#include "metrics/timer.h"

namespace el::cuda {
namespace {

// ---- the part of NVML's C API this file uses (declared here: no nvml.h) ---------
using nvmlReturn_t = int;  // enum nvmlReturn_t; 0 = NVML_SUCCESS
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr int kNvmlClockSm = 1;  // NVML_CLOCK_SM
struct nvmlDevice_st;
using nvmlDevice_t = nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu;     // percent of the last sample period a kernel was running
  unsigned int memory;  // percent of it device memory was read or written
};
struct nvmlMemory_t {
  unsigned long long total, free, used;  // bytes
};

struct Nvml {
  void* lib = nullptr;
  std::string reason;  // empty when usable
  nvmlReturn_t (*init)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*by_pci)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*energy)(nvmlDevice_t, unsigned long long*) = nullptr;  // mJ
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned int*) = nullptr;         // mW
  nvmlReturn_t (*util)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*clock)(nvmlDevice_t, int, unsigned int*) = nullptr;

  std::string err(nvmlReturn_t rc) const {
    return fmt::format("{} ({})", error_string ? error_string(rc) : "NVML error", rc);
  }
};

template <class F>
bool load_symbol(Nvml& n, F& fn, const char* symbol) {
  fn = reinterpret_cast<F>(dlsym(n.lib, symbol));
  if (!fn && n.reason.empty()) n.reason = fmt::format("libnvidia-ml.so.1 has no {}", symbol);
  return fn != nullptr;
}

const Nvml& nvml() {
  static const Nvml n = [] {
    Nvml r;
    r.lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!r.lib) {
      const char* e = dlerror();
      r.reason = fmt::format("cannot load libnvidia-ml.so.1 (the NVIDIA driver's NVML): {}",
                             e ? e : "not found");
      return r;
    }
    load_symbol(r, r.init, "nvmlInit_v2");
    load_symbol(r, r.error_string, "nvmlErrorString");
    load_symbol(r, r.by_pci, "nvmlDeviceGetHandleByPciBusId_v2");
    load_symbol(r, r.name, "nvmlDeviceGetName");
    load_symbol(r, r.energy, "nvmlDeviceGetTotalEnergyConsumption");
    load_symbol(r, r.power, "nvmlDeviceGetPowerUsage");
    load_symbol(r, r.util, "nvmlDeviceGetUtilizationRates");
    load_symbol(r, r.memory, "nvmlDeviceGetMemoryInfo");
    load_symbol(r, r.clock, "nvmlDeviceGetClockInfo");
    if (!r.reason.empty()) return r;
    if (const nvmlReturn_t rc = r.init(); rc != kNvmlSuccess) {
      r.reason = "nvmlInit_v2 failed: " + r.err(rc);
    }
    return r;  // never shut down: readers may run until exit
  }();
  return n;
}

// The NVML handle of a CUDA device, by PCI bus id; nullptr + why on failure.
nvmlDevice_t handle_for(int cuda_index, std::string& why) {
  const Nvml& n = nvml();
  if (!n.reason.empty()) {
    why = n.reason;
    return nullptr;
  }
  static std::mutex mu;
  static std::map<int, std::pair<nvmlDevice_t, std::string>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(cuda_index);
  if (it == cache.end()) {
    nvmlDevice_t h = nullptr;
    std::string reason;
    char bus[32] = {};
    if (const cudaError_t rc = cudaDeviceGetPCIBusId(bus, sizeof(bus), cuda_index);
        rc != cudaSuccess) {
      (void)cudaGetLastError();
      reason = fmt::format("cudaDeviceGetPCIBusId(cuda:{}) failed: {}", cuda_index,
                           cudaGetErrorString(rc));
    } else if (const nvmlReturn_t rc = n.by_pci(bus, &h); rc != kNvmlSuccess) {
      h = nullptr;
      reason = fmt::format("nvmlDeviceGetHandleByPciBusId_v2({}) failed: {}", bus, n.err(rc));
    }
    it = cache.emplace(cuda_index, std::make_pair(h, reason)).first;
  }
  why = it->second.second;
  return it->second.first;
}

std::string nvml_name(nvmlDevice_t h) {
  char name[96] = {};
  if (nvml().name(h, name, sizeof(name)) != kNvmlSuccess) return "unknown GPU";
  return name;
}

class NvmlEnergySource final : public metrics::EnergySource {
 public:
  explicit NvmlEnergySource(int cuda_index) : index_(cuda_index) {
    std::string why;
    dev_ = handle_for(cuda_index, why);
    if (!dev_) {
      reason_ = why;
      return;
    }
    const std::string gpu = fmt::format("GPU {} ({})", cuda_index, nvml_name(dev_));
    unsigned long long mj = 0;
    const nvmlReturn_t rc = nvml().energy(dev_, &mj);
    if (rc == kNvmlSuccess) {
      counter_ = true;
      base_mj_ = mj;
      description_ = "NVML total energy counter of " + gpu;
      return;
    }
    unsigned int mw = 0;
    if (const nvmlReturn_t prc = nvml().power(dev_, &mw); prc != kNvmlSuccess) {
      reason_ = fmt::format("{}: no energy counter ({}) and no power reading ({})", gpu,
                            nvml().err(rc), nvml().err(prc));
      return;
    }
    last_w_ = mw * 1e-3;
    last_t_ = metrics::now_seconds();
    description_ = "NVML power samples of " + gpu +
                   " integrated over time (this GPU has no energy counter: " + nvml().err(rc) +
                   "; an estimate at the sampler's rate)";
  }

  std::string name() const override { return fmt::format("gpu{}_nvml", index_); }
  std::string description() const override { return description_; }
  bool available() const override { return reason_.empty(); }
  const std::string& unavailable_reason() const override { return reason_; }
  const std::string& last_error() const override { return last_error_; }

  std::optional<double> read_joules() override {
    if (!available()) {
      last_error_ = reason_;
      return std::nullopt;
    }
    if (counter_) {
      unsigned long long mj = 0;
      if (const nvmlReturn_t rc = nvml().energy(dev_, &mj); rc != kNvmlSuccess) {
        last_error_ = "nvmlDeviceGetTotalEnergyConsumption failed: " + nvml().err(rc);
        return std::nullopt;
      }
      last_error_.clear();
      return static_cast<double>(mj - base_mj_) * 1e-3;
    }
    unsigned int mw = 0;
    if (const nvmlReturn_t rc = nvml().power(dev_, &mw); rc != kNvmlSuccess) {
      last_error_ = "nvmlDeviceGetPowerUsage failed: " + nvml().err(rc);
      return std::nullopt;
    }
    const double now = metrics::now_seconds();
    const double w = mw * 1e-3;
    joules_ += 0.5 * (w + last_w_) * (now - last_t_);  // trapezoid rule
    last_w_ = w;
    last_t_ = now;
    last_error_.clear();
    return joules_;
  }

 private:
  int index_;
  nvmlDevice_t dev_ = nullptr;
  bool counter_ = false;
  unsigned long long base_mj_ = 0;
  double joules_ = 0.0, last_w_ = 0.0, last_t_ = 0.0;
  std::string description_, reason_, last_error_;
};

class NvmlMonitor final : public metrics::DeviceMonitor {
 public:
  metrics::DeviceReading read(int index) override {
    metrics::DeviceReading r;
    std::string why;
    nvmlDevice_t h = handle_for(index, why);
    if (!h) return r;
    const Nvml& n = nvml();
    nvmlUtilization_t u{};
    if (n.util(h, &u) == kNvmlSuccess) r.util = u.gpu / 100.0;
    nvmlMemory_t m{};
    if (n.memory(h, &m) == kNvmlSuccess) r.memory_used_bytes = static_cast<int64_t>(m.used);
    unsigned int mhz = 0;
    if (n.clock(h, kNvmlClockSm, &mhz) == kNvmlSuccess) r.sm_clock_mhz = mhz;
    return r;
  }

  std::string unavailable_reason(int index) override {
    std::string why;
    nvmlDevice_t h = handle_for(index, why);
    if (!h) return why;
    nvmlUtilization_t u{};
    if (const nvmlReturn_t rc = nvml().util(h, &u); rc != kNvmlSuccess) {
      return "nvmlDeviceGetUtilizationRates failed: " + nvml().err(rc);
    }
    return {};
  }

  std::unique_ptr<metrics::EnergySource> energy_source(int index) override {
    return open_nvml_energy_source(index);
  }

  std::string device_name(int index) override {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, index) != cudaSuccess) {
      (void)cudaGetLastError();
      return "unknown GPU";
    }
    return p.name;
  }

  std::optional<double> datasheet_peak_gflops(int index, DType dtype) override {
    return cuda::datasheet_peak_gflops(device_name(index), dtype);
  }
  std::optional<double> datasheet_memory_gbps(int index) override {
    return cuda::datasheet_memory_gbps(device_name(index));
  }
};

}  // namespace

bool nvml_available() { return nvml().reason.empty(); }
const std::string& nvml_unavailable_reason() { return nvml().reason; }

std::unique_ptr<metrics::EnergySource> open_nvml_energy_source(int cuda_index) {
  return std::make_unique<NvmlEnergySource>(cuda_index);
}

metrics::DeviceMonitor& nvml_monitor() {
  static NvmlMonitor* m = new NvmlMonitor();  // leaked: samplers may run during exit
  return *m;
}

void register_nvml_monitor() {
  metrics::register_device_monitor(DeviceKind::cuda, &nvml_monitor());
}

}  // namespace el::cuda
