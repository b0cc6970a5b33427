// gpu_peaks.h — datasheet peaks of known NVIDIA GPUs, the MFU denominator.
//
// MFU on a GPU is reported against the vendor's dense (no 2:4 sparsity) peak
// for the dtype the GEMMs run in, with the measured cuBLASLt peak printed
// beside it (metrics/calibrate.h). Keys are matched against the CUDA/NVML
// device name ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200",
// "NVIDIA A100-SXM4-80GB", ...); the most specific entry wins.
#pragma once

#include <optional>
#include <string_view>

#include "core/dtype.h"

namespace el::cuda {

struct GpuPeak {
  const char* model;   // "H100 SXM"
  double bf16_tflops;  // dense tensor-core bf16 (f16 is the same on these parts)
  double tf32_tflops;  // dense tensor-core tf32
  double f32_tflops;   // non-tensor f32 (what an f32 GEMM without tf32 can reach)
  double memory_gbps;  // datasheet DRAM (HBM/GDDR) bandwidth, GB/s: the decode roofline
};

// The entry for a device name, or nullopt for a GPU not in the table.
std::optional<GpuPeak> known_gpu_peak(std::string_view device_name);

// The peak for GEMM inputs of `dtype` in GFLOP/s (bf16/f16 -> tensor-core
// rate, f32 -> plain f32 rate, since the backend does not enable tf32).
std::optional<double> datasheet_peak_gflops(std::string_view device_name, DType dtype);
// The datasheet memory bandwidth in GB/s (1e9 bytes/s).
std::optional<double> datasheet_memory_gbps(std::string_view device_name);

}  // namespace el::cuda
