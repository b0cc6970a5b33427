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

}  // namespace el
