#include "quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace el::quant {

Status validate_quant_spec(const QuantSpec& spec) {
  if (spec.bits != 4 && spec.bits != 8) {
    return make_error(fmt::format("bits = {} is not supported", spec.bits), "quantization: bits",
                      "use 4 or 8");
  }
  if (spec.group_size < -1) {
    return make_error(fmt::format("group size {} is not valid", spec.group_size),
                      "quantization: group_size",
                      "use a positive group size dividing the input features, or 0 for per-channel");
  }
  return {};
}

Status check_quantizable(const std::string& name, int64_t n, int64_t k, const QuantSpec& spec) {
  EL_TRY(validate_quant_spec(spec));
  const int64_t g = spec.group_for(k);
  if (n <= 0 || k <= 0) {
    return make_error(fmt::format("cannot quantize an empty weight [{}, {}]", n, k), name);
  }
  if (k % g != 0) {
    return make_error(fmt::format("in_features K = {} of weight [{}, {}] is not divisible by the "
                                  "group size {}",
                                  k, n, k, g),
                      name, "use --group-size N dividing K, or 0 for per-channel");
  }
  if (spec.bits == 4 && k % 2 != 0) {
    return make_error(fmt::format("int4 packs two weights per byte, but in_features K = {} of "
                                  "weight [{}, {}] is odd",
                                  k, n, k),
                      name, "use --bits 8 for this model");
  }
  if (spec.bits == 4 && g % 2 != 0) {
    // An odd group would start in the middle of a byte; the kernels read a
    // group's codes from whole bytes (ops/quant_layout.h).
    return make_error(fmt::format("int4 groups must hold an even number of inputs, but the group "
                                  "size for weight [{}, {}] is {}",
                                  n, k, g),
                      name, "use an even --group-size (e.g. 32, 64, 128), or --bits 8");
  }
  return {};
}

void HostQuantized::resize(int b, int64_t group, bool sym, int64_t n, int64_t k) {
  bits = b;
  group_size = group;
  symmetric = sym;
  rows = n;
  cols = k;
  qweight.assign(static_cast<size_t>(n * k * b / 8), 0);
  scales.assign(static_cast<size_t>(n * (k / group)), 0);
  zeros.assign(sym ? 0 : static_cast<size_t>(n * (k / group)), 0);
}

Result<GroupParams> choose_group_params(const float* w, int64_t n, int bits, bool symmetric) {
  float lo = 0.f, hi = 0.f;  // the range always includes 0
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) return make_error(fmt::format("value {} at offset {} is not finite", w[i], i));
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  const int maxq = (1 << bits) - 1, half = 1 << (bits - 1);
  GroupParams p;
  float s = symmetric ? std::max(hi / static_cast<float>(half - 1), -lo / static_cast<float>(half))
                      : (hi - lo) / static_cast<float>(maxq);
  if (!(s > 0.f)) s = 1.f;  // all zeros: any scale; q = z gives exactly 0
  // Round the scale up to f16 (see rtn.h): never below s.
  uint16_t h = f32_to_f16(s);
  if (f16_to_f32(h) < s) ++h;
  p.scale_bits = h;
  p.scale = f16_to_f32(h);
  if (!std::isfinite(p.scale)) {
    return make_error(fmt::format("weights up to {} need a scale {} beyond f16's range", std::max(hi, -lo), s));
  }
  if (symmetric) {
    p.zero = half;
  } else {
    const float z = std::nearbyint(-lo / p.scale);
    p.zero = static_cast<int>(std::clamp(z, 0.f, static_cast<float>(maxq)));
  }
  return p;
}

Result<HostQuantized> quantize_rtn_host(const float* w, int64_t n, int64_t k, const QuantSpec& spec,
                                        const std::string& name) {
  EL_TRY(check_quantizable(name, n, k, spec));
  const int64_t g = spec.group_for(k), groups = k / g;
  const int maxq = (1 << spec.bits) - 1;
  HostQuantized q;
  q.resize(spec.bits, g, spec.symmetric, n, k);
  Error bad;
  bool failed = false;
#pragma omp parallel for schedule(static) if (n * k >= (int64_t{1} << 16))
  for (int64_t r = 0; r < n; ++r) {
    const float* wr = w + r * k;
    uint8_t* qr = q.qweight.data() + r * q.row_bytes();
    for (int64_t gi = 0; gi < groups; ++gi) {
      auto p = choose_group_params(wr + gi * g, g, spec.bits, spec.symmetric);
      if (!p.ok()) {
#pragma omp critical(el_quant_rtn_error)
        if (!failed) {
          failed = true;
          bad = make_error(fmt::format("row {}, group {} (columns {}..{}): {}", r, gi, gi * g,
                                       gi * g + g - 1, p.error().what),
                           name, "the weights must be finite");
        }
        break;
      }
      const GroupParams& gp = p.value();
      q.scales[static_cast<size_t>(r * groups + gi)] = gp.scale_bits;
      if (!spec.symmetric) q.zeros[static_cast<size_t>(r * groups + gi)] = static_cast<uint8_t>(gp.zero);
      for (int64_t c = gi * g; c < (gi + 1) * g; ++c) set_code(qr, c, quantize_value(wr[c], gp, maxq), spec.bits);
    }
  }
  if (failed) return bad;
  return q;
}

namespace {

// A host tensor viewing nothing: the bytes of `data` copied into a new tensor.
template <class T>
Tensor host_tensor(const T* data, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  if (t.nbytes() > 0) std::memcpy(t.raw(), data, t.nbytes());
  return t;
}

}  // namespace

void upload_rows(const HostQuantized& q, int64_t r0, int64_t r1, QuantizedWeight& dst) {
  const int64_t n = r1 - r0, rb = q.row_bytes(), groups = q.groups();
  EL_ENSURE(dst.qweight.defined() && dst.qweight.numel() == n * rb && dst.scales.numel() == n * groups,
            "quant upload_rows: destination does not hold rows [{}, {}) of [{}, {}]", r0, r1, q.rows,
            q.cols);
  dst.qweight.copy_from(host_tensor(q.qweight.data() + r0 * rb, {n, rb}, DType::u8));
  dst.scales.copy_from(host_tensor(q.scales.data() + r0 * groups, {n, groups}, DType::f16));
  if (!q.symmetric) dst.zeros.copy_from(host_tensor(q.zeros.data() + r0 * groups, {n, groups}, DType::u8));
}

Result<QuantizedWeight> to_quantized_weight(const HostQuantized& q, Device device) {
  QuantizedWeight w;
  w.bits = q.bits;
  w.group_size = q.group_size;
  w.symmetric = q.symmetric;
  w.out_features = q.rows;
  w.in_features = q.cols;
  EL_TRY_ASSIGN(w.qweight, Tensor::try_empty({q.rows, q.row_bytes()}, DType::u8, device));
  EL_TRY_ASSIGN(w.scales, Tensor::try_empty({q.rows, q.groups()}, DType::f16, device));
  if (!q.symmetric) {
    EL_TRY_ASSIGN(w.zeros, Tensor::try_empty({q.rows, q.groups()}, DType::u8, device));
  }
  upload_rows(q, 0, q.rows, w);
  return w;
}

HostQuantized to_host(const QuantizedWeight& w) {
  HostQuantized q;
  q.resize(w.bits, w.group_size, w.symmetric, w.out_features, w.in_features);
  const Tensor qw = w.qweight.to(Device::cpu()), sc = w.scales.to(Device::cpu());
  std::memcpy(q.qweight.data(), qw.raw(), qw.nbytes());
  std::memcpy(q.scales.data(), sc.raw(), sc.nbytes());
  if (!w.symmetric) {
    const Tensor z = w.zeros.to(Device::cpu());
    std::memcpy(q.zeros.data(), z.raw(), z.nbytes());
  }
  return q;
}

Result<QuantizedWeight> quantize_rtn(const Tensor& w, const QuantSpec& spec, const std::string& name) {
  if (!w.defined() || w.ndim() != 2 || !dtype_is_float(w.dtype())) {
    return make_error("expected a float weight [N, K]", name);
  }
  const std::vector<float> host = w.to_floats();
  EL_TRY_ASSIGN(HostQuantized q, quantize_rtn_host(host.data(), w.dim(0), w.dim(1), spec, name));
  return to_quantized_weight(q, w.device());
}

Tensor dequantize(const QuantizedWeight& w) {
  const HostQuantized q = to_host(w);
  const int64_t n = q.rows, k = q.cols, g = q.group_size, groups = q.groups();
  std::vector<float> out(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* qr = q.qweight.data() + r * q.row_bytes();
    for (int64_t c = 0; c < k; ++c) {
      const size_t gi = static_cast<size_t>(r * groups + c / g);
      GroupParams p;
      p.scale = f16_to_f32(q.scales[gi]);
      p.zero = q.symmetric ? w.symmetric_zero() : q.zeros[gi];
      out[static_cast<size_t>(r * k + c)] = dequantize_value(get_code(qr, c, q.bits), p);
    }
  }
  return Tensor::from_floats(out, {n, k}).to(w.qweight.device());
}

}  // namespace el::quant
