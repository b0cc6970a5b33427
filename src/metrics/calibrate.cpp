#include "metrics/calibrate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/tensor.h"
#include "metrics/sampler.h"
#include "metrics/timer.h"
#include "ops/backend.h"

namespace el::metrics {
namespace {

// A [rows, cols] tensor of `dtype` on `device` with values in [-1, 1). Random,
// not constant: GPUs draw less power (and clock higher) on constant data.
Result<Tensor> random_matrix(int64_t rows, int64_t cols, Device device, uint64_t seed,
                             DType dtype) {
  std::vector<float> host(static_cast<size_t>(rows * cols));
  Rng rng(seed);
  for (float& v : host) v = 2.0f * rng.uniform() - 1.0f;
  Tensor cpu = Tensor::from_floats(host, {rows, cols});
  if (device.is_cpu() && dtype == DType::f32) return cpu;
  EL_TRY_ASSIGN(Tensor t, Tensor::try_empty({rows, cols}, dtype, device));
  t.copy_from(cpu);
  return t;
}

}  // namespace

Result<PeakCalibration> try_calibrate_peak_gemm(Device device, double min_seconds, int64_t size,
                                                std::optional<DType> dtype_opt) {
  const std::string where = "calibrate_peak_gemm(" + device.str() + ")";
  const DType dtype = dtype_opt.value_or(device.is_cpu() ? DType::f32 : DType::bf16);
  if (!dtype_is_float(dtype)) {
    return make_error(fmt::format("dtype must be f32, bf16 or f16, got {}", dtype_name(dtype)),
                      where);
  }
  // The CPU backend writes f32 products; a GPU writes the input dtype, as training does.
  const DType c_dtype = device.is_cpu() ? DType::f32 : dtype;
  if (!(min_seconds > 0)) {
    return make_error(fmt::format("min_seconds must be > 0, got {}", min_seconds), where);
  }
  if (size < 0) return make_error(fmt::format("size must be >= 0, got {}", size), where);
  EL_TRY_ASSIGN(Backend * backend, try_backend_for(device));
  const bool auto_size = size == 0;
  int64_t n = auto_size ? (device.is_cpu() ? 1024 : 4096) : size;

  for (;;) {
    EL_TRY_ASSIGN(Tensor a, random_matrix(n, n, device, 1, dtype));
    EL_TRY_ASSIGN(Tensor b, random_matrix(n, n, device, 2, dtype));
    EL_TRY_ASSIGN(Tensor c, Tensor::try_empty({n, n}, c_dtype, device));

    // Warm-up: first-touch page faults, BLAS thread pool start, GPU clocks.
    backend->synchronize();
    Stopwatch warm;
    backend->gemm(a, false, b, false, c, 1.0f, 0.0f);
    backend->synchronize();
    const double warm_s = warm.seconds();
    if (auto_size && n > 256 && warm_s > min_seconds / 4) {
      n /= 2;  // too slow for the time budget: a smaller GEMM, same method
      continue;
    }

    // Synchronise once per batch, not per GEMM, so a GPU's sync latency does
    // not count as GEMM time; a batch lasts about 1/20 of the budget.
    const int batch = static_cast<int>(
        std::clamp(std::floor(min_seconds / 20.0 / std::max(warm_s, 1e-9)), 1.0, 1000.0));
    const double flops = 2.0 * double(n) * double(n) * double(n);
    PeakCalibration r;
    int reps = 0;
    Stopwatch sw;
    double elapsed = 0.0;
    while (elapsed < min_seconds || reps < 3) {
      Stopwatch batch_watch;
      for (int i = 0; i < batch; ++i) backend->gemm(a, false, b, false, c, 1.0f, 0.0f);
      reps += batch;
      backend->synchronize();
      r.batch_gflops.push_back(flops * batch / batch_watch.seconds() / 1e9);
      elapsed = sw.seconds();
    }
    r.m = r.n = r.k = n;
    r.reps = reps;
    r.seconds = elapsed;
    r.mean_gflops = flops * reps / elapsed / 1e9;
    // The peak is the best batch: on a shared or throttling machine the mean
    // mixes in time stolen by other work, which would inflate MFU.
    r.gflops = *std::max_element(r.batch_gflops.begin(), r.batch_gflops.end());
    r.device = device.str();
    r.dtype = dtype_name(dtype);
    if (DeviceMonitor* mon = device.is_cpu() ? nullptr : device_monitor(device.kind)) {
      r.device_name = mon->device_name(device.index);
      r.datasheet_gflops = mon->datasheet_peak_gflops(device.index, dtype);
    }
    return r;
  }
}

PeakCalibration calibrate_peak_gemm(Device device, double min_seconds, int64_t size,
                                    std::optional<DType> dtype) {
  return try_calibrate_peak_gemm(device, min_seconds, size, dtype).value();
}

double mfu(double flops_per_second, double peak_flops) {
  if (!(peak_flops > 0) || !std::isfinite(peak_flops)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return flops_per_second / peak_flops;
}

nlohmann::json to_json(const PeakCalibration& c) {
  nlohmann::json j{{"gflops", c.gflops}, {"m", c.m},           {"n", c.n},
                   {"k", c.k},           {"reps", c.reps},     {"seconds", c.seconds},
                   {"device", c.device}, {"mean_gflops", c.mean_gflops},
                   {"batch_gflops", c.batch_gflops}, {"dtype", c.dtype}};
  if (!c.device_name.empty()) j["device_name"] = c.device_name;
  if (c.datasheet_gflops) j["datasheet_gflops"] = *c.datasheet_gflops;
  return j;
}

}  // namespace el::metrics
