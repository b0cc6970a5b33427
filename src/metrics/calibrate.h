// calibrate.h — the MFU denominator: a device's measured GEMM peak.
//
// MFU = achieved FLOP/s (FLOPs counted from the model's shapes per second)
// divided by a peak. Vendor peak numbers do not exist for "2 shared vCPUs of
// an EPYC", so the peak is MEASURED at start-up by timing the backend's own
// f32 GEMM (el::backend_for(device).gemm) on square matrices: the best dense
// throughput this build reaches on this machine. MFU relative to it says how
// close the workload gets to the engine's own matmul speed, not to silicon
// peak; the report records the calibration beside every MFU.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace el::metrics {

struct PeakCalibration {
  double gflops = 0.0;       // peak: the best batch's GFLOP/s (2*m*n*k per GEMM)
  double mean_gflops = 0.0;  // over all timed repetitions
  std::vector<double> batch_gflops;  // raw samples, one per timed batch
  int64_t m = 0, n = 0, k = 0;
  int reps = 0;          // timed repetitions (after warm-up)
  double seconds = 0.0;  // total time of the timed repetitions
  std::string device;    // "cpu", "cuda:0"
  std::string dtype = "f32";  // GEMM input dtype timed ("bf16" on a GPU by default)
  // GPU only, from the registered DeviceMonitor (sampler.h): the device's name
  // and its dense datasheet peak for `dtype`, printed beside the measured one.
  std::string device_name;
  std::optional<double> datasheet_gflops;
};

// Times c[m,n] = a[m,k] @ b[k,n] on `device` with inputs of `dtype` (default:
// f32 on CPU, bf16 on a GPU, i.e. what training runs on; c is f32 on CPU and
// `dtype` on a GPU): one warm-up, then
// repetitions until at least `min_seconds` have passed (and at least 3),
// synchronize() before every clock read. `size` is m = n = k; 0 picks 1024
// on CPU (halved down to 256 while one warm-up GEMM takes more than
// min_seconds / 4, so slow machines still finish in about min_seconds) and
// 4096 on GPU. Errors: no backend or allocator for the device, tensor
// allocation failure, min_seconds <= 0 or size < 0, a non-float dtype.
Result<PeakCalibration> try_calibrate_peak_gemm(Device device, double min_seconds = 0.5,
                                                int64_t size = 0,
                                                std::optional<DType> dtype = std::nullopt);
// The same, throwing el::Exception with that Error (like backend_for vs
// try_backend_for): for callers that already hold a working backend.
PeakCalibration calibrate_peak_gemm(Device device, double min_seconds = 0.5, int64_t size = 0,
                                    std::optional<DType> dtype = std::nullopt);

// Model FLOPs utilisation: flops_per_second / peak_flops, both in FLOP/s
// (pass calibration.gflops * 1e9). NaN when the peak is not positive/finite.
double mfu(double flops_per_second, double peak_flops);

// {"gflops", "m", "n", "k", "reps", "seconds", "device", "mean_gflops", "batch_gflops",
//  "dtype"}, plus "device_name" / "datasheet_gflops" when known.
nlohmann::json to_json(const PeakCalibration& c);

}  // namespace el::metrics
