// nvml.h — GPU energy, utilisation, memory and clock through NVML, loaded at
// run time.
//
// libnvidia-ml.so.1 ships with the driver, not the toolkit, so it is opened
// with dlopen and the few functions used here are declared in nvml.cpp (no
// nvml.h or link dependency): a build machine without a driver still builds,
// and a machine without NVML reports null readings with the reason instead of
// failing to start. A CUDA device is matched to its NVML handle by PCI bus id
// (the two enumerations can differ in order).
//
// Energy: nvmlDeviceGetTotalEnergyConsumption (mJ since the driver loaded,
// Volta and newer) is a hardware counter, the AEC source. Where it is not
// supported, the source integrates nvmlDeviceGetPowerUsage samples by the
// trapezoid rule at the reader's rate and says so in description().
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "metrics/energy.h"
#include "metrics/sampler.h"

namespace el::cuda {

// Whether libnvidia-ml.so.1 loaded and nvmlInit succeeded; the reason if not.
bool nvml_available();
const std::string& nvml_unavailable_reason();

// The energy source of CUDA device `cuda_index` ("gpu<index>_nvml"); never
// null: when NVML or the counter is missing it is unavailable with a reason.
std::unique_ptr<metrics::EnergySource> open_nvml_energy_source(int cuda_index);

// The DeviceMonitor of DeviceKind::cuda (NVML readings, name, datasheet peak).
metrics::DeviceMonitor& nvml_monitor();
// register_device_monitor(DeviceKind::cuda, &nvml_monitor()); called by register_backend().
void register_nvml_monitor();

}  // namespace el::cuda
