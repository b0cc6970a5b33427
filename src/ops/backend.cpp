#include "ops/backend.h"

#include <fmt/format.h>

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

namespace {
[[noreturn]] void throw_not_implemented(const Backend& b, const char* family, const char* call,
                                        const char* hint) {
  throw Exception(make_error(std::string(family) + ": " + call + " is not implemented on " +
                                 b.name(),
                             std::string(b.name()) + " backend", hint));
}
}  // namespace

void Backend::mamba_not_implemented(const char* call) const {
  throw_not_implemented(*this, "Mamba", call,
                        "run Mamba cards on a backend with Mamba kernels (cpu, cuda)");
}
void Backend::moe_not_implemented(const char* call) const {
  throw_not_implemented(*this, "mixture of experts", call,
                        "run MoE cards on a backend with MoE kernels (cpu, cuda)");
}
void Backend::nsa_not_implemented(const char* call) const {
  throw_not_implemented(*this, "NSA attention", call,
                        "run NSA cards on a backend with NSA kernels (cpu)");
}
void Backend::rwkv_not_implemented(const char* call) const {
  throw_not_implemented(*this, "RWKV", call, "run RWKV cards on a backend with RWKV kernels (cpu)");
}

Result<int64_t> Backend::read_later(const Tensor& src) {
  (void)src;
  return make_error(std::string("backend ") + name() + " has no queued reads (read_later)",
                    std::string(name()) + " backend", "read the tensor with Tensor::to(cpu)");
}
Result<std::vector<uint8_t>> Backend::read_wait(int64_t ticket) {
  return make_error(fmt::format("backend {} has no queued reads (read_wait of ticket {})", name(),
                                ticket),
                    std::string(name()) + " backend", "read the tensor with Tensor::to(cpu)");
}

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
