#include "finetune/lora.h"

#include <cmath>
#include <set>

#include "autograd/tape.h"
#include "finetune/pissa.h"
#include "ops/backend.h"
#include "ops/ops.h"

namespace el::finetune {
namespace {

const std::set<std::string>& known_targets() {
  static const std::set<std::string> names = {"q_proj", "k_proj",  "v_proj",    "o_proj",
                                              "gate_proj", "up_proj", "down_proj", "lm_head"};
  return names;
}

// The last component of a slot path: "model.layers.3.mlp.up_proj" -> "up_proj".
std::string slot_leaf(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// A new tensor on `device` in `dtype` from host f32 values.
Tensor from_host(const std::vector<float>& values, const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.copy_from(Tensor::from_floats(values, shape));
  return t;
}

// splitmix64 finaliser: a per-(step, module) dropout seed from the run's seed.
uint64_t mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

float LoraConfig::scaling() const {
  const auto rf = static_cast<float>(r);
  return use_rslora ? alpha / std::sqrt(rf) : alpha / rf;
}

Status validate_lora_config(const LoraConfig& c) {
  if (c.r <= 0) return make_error(fmt::format("LoRA rank r = {} must be positive", c.r), "lora.r");
  if (!(c.alpha > 0.f)) {
    return make_error(fmt::format("LoRA alpha = {} must be positive", c.alpha), "lora.alpha");
  }
  if (!(c.dropout >= 0.f && c.dropout < 1.f)) {
    return make_error(fmt::format("LoRA dropout = {} must be in [0, 1)", c.dropout), "lora.dropout");
  }
  if (c.target_modules.empty()) {
    return make_error("no target modules", "lora.target_modules",
                      "list projections, e.g. [q_proj, v_proj], or leave the default (all)");
  }
  for (const auto& t : c.target_modules) {
    if (!known_targets().count(slot_leaf(t))) {
      return make_error(fmt::format("unknown target module '{}'", t), "lora.target_modules",
                        "one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head");
    }
  }
  return {};
}

LoraLinear::LoraLinear(std::unique_ptr<Linear> base, const LoraConfig& config,
                       uint64_t module_index, std::shared_ptr<const AdapterRuntime> runtime, Rng& rng)
    : base_(std::move(base)),
      scaling_(config.scaling()),
      dropout_(config.dropout),
      module_index_(module_index),
      runtime_(std::move(runtime)) {
  base_->weight.set_requires_grad(false);
  if (base_->bias.defined()) base_->bias.set_requires_grad(false);
  const Tensor& w = base_->weight;
  const int64_t in = w.dim(1), out = w.dim(0), r = config.r;
  const DType dtype = w.dtype();
  const Device device = w.device();
  // Drawn in f32 on the host in a fixed order, then rounded (as init_normal).
  std::vector<float> a(static_cast<size_t>(r * in), 0.f);  // PiSSA: set by pissa_init
  if (config.init == LoraConfig::Init::kaiming) {
    // kaiming_uniform_(a = sqrt(5)) over fan_in = in: bound = 1 / sqrt(in).
    const float bound = 1.f / std::sqrt(static_cast<float>(in));
    for (float& v : a) v = (2.f * rng.uniform() - 1.f) * bound;
  } else if (config.init == LoraConfig::Init::gaussian) {
    const float std = 1.f / static_cast<float>(r);
    for (float& v : a) v = rng.normal() * std;
  }
  lora_A = from_host(a, {r, in}, dtype, device);
  lora_B = Tensor::zeros({out, r}, dtype, device);
  if (config.use_dora) {
    // m starts at ||W + s B A|| = ||W|| (B = 0): the adapted layer starts equal
    // to the base layer.
    const std::vector<float> inv = weight_inv_norm().to_floats();
    std::vector<float> m(inv.size());
    for (size_t i = 0; i < m.size(); ++i) m[i] = 1.f / inv[i];
    magnitude = from_host(m, {out}, dtype, device);
    magnitude.set_requires_grad(true);
  }
  lora_A.set_requires_grad(true);
  lora_B.set_requires_grad(true);
}

Tensor LoraLinear::weight_inv_norm() const {
  NoGrad no_grad;
  const Tensor& w = base_->weight;
  Backend& be = backend_for(w.device());
  // V = W + s B A in f32 (the GEMM accumulates into the copy of W), then the
  // inverse row norms.
  Tensor v = Tensor::empty(w.shape(), DType::f32, w.device());
  v.copy_from(w);
  be.gemm(lora_B, false, lora_A, false, v, scaling_, 1.f);  // [out, r] @ [r, in]
  Tensor inv = Tensor::empty({w.dim(0)}, DType::f32, w.device());
  be.inv_row_norms(v, inv);
  return inv;
}

Tensor LoraLinear::forward(const Tensor& x) const {
  const float p = runtime_->training ? dropout_ : 0.f;
  const uint64_t seed = mix(runtime_->seed ^ mix(runtime_->step * 1315423911ull + module_index_));
  const Tensor xd = ops::dropout(x, p, seed);
  const Tensor lora = ops::linear(ops::linear(xd, lora_A), lora_B, Tensor(), scaling_);
  if (!is_dora()) return ops::add(base_->forward(x), lora);

  // DoRA: m / n with n = ||W + s B A|| a constant (no gradient), in m's dtype.
  Tensor inv = weight_inv_norm();
  if (inv.dtype() != magnitude.dtype()) {
    Tensor c = Tensor::empty(inv.shape(), magnitude.dtype(), inv.device());
    c.copy_from(inv);
    inv = c;
  }
  const Tensor mscale = ops::mul(magnitude, inv);  // [out]
  const Tensor& w = base_->weight;
  if (p == 0.f) {
    // m/n * (x W^T + lora) + bias: one GEMM for the base, the bias after the scaling.
    return ops::mul_lastdim(ops::add(ops::linear(x, w), lora), mscale, base_->bias);
  }
  // With dropout PEFT keeps base(x) on the undropped input and rescales the
  // dropped one: base(x) + (m/n - 1) * (x_d W^T) + m/n * lora.
  const Tensor minus_one = Tensor::full(mscale.shape(), -1.f, mscale.dtype(), mscale.device());
  const Tensor xdw = ops::linear(xd, w);
  return ops::add(ops::add(base_->forward(x), ops::mul_lastdim(xdw, ops::add(mscale, minus_one))),
                  ops::mul_lastdim(lora, mscale));
}

Tensor LoraLinear::merged_weight() const {
  NoGrad no_grad;
  const Tensor& w = base_->weight;
  Tensor v = Tensor::empty(w.shape(), DType::f32, w.device());
  v.copy_from(w);
  backend_for(w.device()).gemm(lora_B, false, lora_A, false, v, scaling_, 1.f);
  if (is_dora()) {
    // Row o scaled by m_o / ||V_o||: on the host (a merge happens once).
    const std::vector<float> inv = weight_inv_norm().to_floats();
    const std::vector<float> m = magnitude.to_floats();
    std::vector<float> rows = v.to_floats();
    const int64_t in = w.dim(1);
    for (size_t o = 0; o < m.size(); ++o) {
      const float s = m[o] * inv[o];
      for (int64_t i = 0; i < in; ++i) rows[o * static_cast<size_t>(in) + static_cast<size_t>(i)] *= s;
    }
    v = Tensor::from_floats(rows, w.shape());
  }
  Tensor out = Tensor::empty(w.shape(), w.dtype(), w.device());
  out.copy_from(v);
  return out;
}

void LoraLinear::collect_parameters(const std::string& prefix, ParameterList& out) const {
  base_->collect_parameters(prefix, out);
  out.push_back({prefix + ".lora_A.weight", lora_A});
  out.push_back({prefix + ".lora_B.weight", lora_B});
  if (is_dora()) out.push_back({prefix + ".lora_magnitude_vector", magnitude});
}

Result<LoraSummary> apply_lora(DecoderLM& model, const LoraConfig& config) {
  EL_TRY(validate_lora_config(config));
  const std::set<std::string> targets(config.target_modules.begin(), config.target_modules.end());
  // A slot is targeted by its projection name or by its whole path.
  auto targeted = [&](const std::string& path) {
    return targets.count(path) > 0 || targets.count(slot_leaf(path)) > 0;
  };
  // Check every targeted slot first, so a failure leaves the model unchanged.
  std::vector<std::string> matched;
  Status bad;
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    if (!targeted(path) || !bad.ok()) return;
    if (!dynamic_cast<Linear*>(slot.get())) {
      bad = make_error(fmt::format("slot {} does not hold a dense linear layer", path), "lora",
                       "adapters go on a plain model: apply LoRA before quantization, and once");
      return;
    }
    if (config.init == LoraConfig::Init::pissa) {
      bad = check_pissa_target(path, static_cast<const Linear&>(*slot), config.r);
      if (!bad.ok()) return;
    }
    matched.push_back(path);
  });
  EL_TRY(bad);
  if (matched.empty()) {
    return make_error("no projection of the model matches the target modules", "lora.target_modules",
                      "the model's projections are q_proj, k_proj, v_proj, o_proj, up_proj, "
                      "down_proj (and gate_proj with SwiGLU)");
  }
  for (const auto& p : model.parameters()) Tensor(p.tensor).set_requires_grad(false);
  LoraSummary summary;
  summary.runtime = std::make_shared<AdapterRuntime>();
  summary.runtime->seed = mix(config.seed + 0x5EEDull);
  Rng rng(config.seed);
  uint64_t index = 0;
  std::vector<std::pair<std::string, LoraLinear*>> adapted;
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    if (!targeted(path)) return;
    std::unique_ptr<Linear> base(static_cast<Linear*>(slot.release()));
    auto layer = std::make_unique<LoraLinear>(std::move(base), config, index++, summary.runtime, rng);
    adapted.emplace_back(path, layer.get());
    slot = std::move(layer);
  });
  model.refresh_parameters();
  if (config.init == LoraConfig::Init::pissa) {
    // Every target passed check_pissa_target, so only LAPACK itself can fail
    // here; by then earlier slots hold residuals, and the error says so.
    EL_TRY(pissa_init_all(adapted, config.r));
  }
  summary.adapted_modules = static_cast<int64_t>(index);
  for (const auto& p : model.parameters()) {
    summary.total_parameters += p.tensor.numel();
    if (p.tensor.requires_grad()) summary.trainable_parameters += p.tensor.numel();
  }
  return summary;
}

void merge_lora(DecoderLM& model) {
  bool any = false;
  model.for_each_linear([&](const std::string&, std::unique_ptr<LinearLayer>& slot) {
    auto* lora = dynamic_cast<LoraLinear*>(slot.get());
    if (!lora) return;
    Tensor bias;
    if (lora->base().bias.defined()) bias = lora->base().bias.clone();
    slot = std::make_unique<Linear>(lora->merged_weight(), bias);
    any = true;
  });
  if (!any) return;
  model.refresh_parameters();
  for (const auto& p : model.parameters()) Tensor(p.tensor).set_requires_grad(true);
}

ParameterList trainable_parameters(const DecoderLM& model) {
  ParameterList out;
  for (const auto& p : model.parameters()) {
    if (p.tensor.requires_grad()) out.push_back(p);
  }
  return out;
}

}  // namespace el::finetune
