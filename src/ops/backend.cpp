#include "ops/backend.h"

namespace el {

Backend* make_cpu_backend();  // cpu/cpu_backend.cpp

namespace {
Backend* g_backends[2] = {nullptr, nullptr};
}

void register_backend(DeviceKind kind, Backend* backend) {
  g_backends[static_cast<int>(kind)] = backend;
}

Result<Backend*> try_backend_for(Device device) {
  if (device.is_cpu()) {
    static Backend* cpu = make_cpu_backend();
    return cpu;
  }
  Backend* b = g_backends[static_cast<int>(device.kind)];
  if (!b) {
    return make_error("no backend for device " + device.str(), "backend_for",
                      "this build has no CUDA backend or no GPU was found; use --device cpu");
  }
  return b;
}

Backend& backend_for(Device device) { return *try_backend_for(device).value(); }

void Backend::decode_layers(const Tensor& x, std::span<const DecodeLayerWeights> w,
                            const Tensor& inv_freq, const Tensor& positions,
                            std::span<Tensor> k_caches, std::span<Tensor> v_caches, Tensor& out) {
  EL_ENSURE(!w.empty() && k_caches.size() == w.size() && v_caches.size() == w.size(),
            "Backend::decode_layers: {} layers with {} k and {} v caches", w.size(),
            k_caches.size(), v_caches.size());
  Tensor cur = x;
  for (size_t i = 0; i < w.size(); ++i) {
    Tensor next = i + 1 == w.size() ? out : Tensor::empty(x.shape(), x.dtype(), x.device());
    decode_layer(cur, w[i], inv_freq, positions, k_caches[i], v_caches[i], next);
    cur = next;
  }
}

}  // namespace el
