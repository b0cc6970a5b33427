// quantize_model.h — post-training weight-only quantization of a DecoderLM
// (int8 / int4, group-wise, RTN or GPTQ) as a model transform.
//
// Every projection slot (q, k, v, o, gate, up, down; lm_head only when asked
// and untied) gets a QuantLinear (quant/quant_linear.h); the projections of
// one input (q/k/v, gate/up) are quantized as one matrix and stored as row
// blocks of one buffer, so the model's stacked path (one kernel for q/k/v,
// one for gate/up) still applies. Embeddings and norms stay as they are.
//
// GPTQ runs layer by layer: the inputs of layer l come from the model whose
// layers < l are already quantized (the reference's sequential order). For
// layer l every slot group's first slot is swapped for a capturing wrapper
// that adds X^T X of its input on the model's device (quant/gptq.h) and runs
// the wrapped layer; the calibration forward stops as soon as every wrapper
// of the layer has seen its input (an exception private to this file: the model's forward has no
// hook to end early, and the layers after l are not needed yet). The
// wrappers are removed, the layer's groups quantized and swapped in.
//
// Mixture-of-experts layers (nn/moe.h): each expert projection (experts.
// gate_up_proj, experts.down_proj) becomes a QuantGroupedProjection
// (quant/quant_grouped.h), its E experts quantized row block by row block
// into one stacked QuantizedWeight. RTN is per row, so the stacked matrix is
// quantized at once; GPTQ gives expert e its own Hessian from the
// calibration rows routed to it: a capturing wrapper in the grouped slot
// copies the offsets to the host (a sync, fine in calibration) and adds
// X_e^T X_e per expert. An expert no calibration token was routed to has no
// Hessian and gets RTN (counted in the report's notes). The router stays dense.
//
// Measured and reported per slot: bytes before/after (weight + bias), and
// for GPTQ the relative output error ||X W^T - X Q^T||^2 / ||X W^T||^2 on
// the calibration inputs of GPTQ and of RTN on the same inputs; per model:
// parameter bytes before/after (summed from the tensors), bits per weight of
// the quantized slots (codes + scales + zeros), seconds.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/decoder_lm.h"
#include "quant/gptq.h"
#include "quant/rtn.h"

namespace el::quant {

enum class QuantMethod { rtn, gptq };
const char* quant_method_name(QuantMethod m);  // "rtn", "gptq"
Result<QuantMethod> parse_quant_method(std::string_view name);

struct QuantizeOptions {
  QuantSpec spec;
  QuantMethod method = QuantMethod::rtn;
  bool include_lm_head = false;  // an untied lm_head only (a tied one is the embedding)
  bool quantize_experts = true;  // MoE expert projections (false: they stay dense)
  // GPTQ: calibration token ids, i32 [n_samples, seq_len] (any device);
  // seq_len within the card's max_seq_len (and sliding_window).
  Tensor calibration;
  int64_t calibration_batch = 8;  // samples per calibration forward
  GptqOptions gptq;
  // After each decoder layer (and the lm_head): (what, done, total).
  std::function<void(const std::string& what, int64_t done, int64_t total)> on_progress;
};

struct SlotReport {
  std::string name;  // slot path, e.g. "model.layers.0.self_attn.q_proj"
  // An MoE expert tensor (e.g. "model.layers.0.mlp.experts.down_proj"): its
  // expert count E; out_features is then E N (the stacked rows). 0 otherwise.
  int64_t experts = 0;
  int bits = 0;
  int64_t group_size = 0;  // resolved (K when per-channel)
  int64_t out_features = 0, in_features = 0;
  int64_t bytes_before = 0, bytes_after = 0;  // weight (+ bias) bytes
  // GPTQ only (NaN for RTN runs): relative output error on the calibration
  // inputs of this slot, with GPTQ and with RTN of the same weights.
  double output_error = 0.0 / 0.0;
  double rtn_output_error = 0.0 / 0.0;
};

struct QuantizeReport {
  QuantMethod method = QuantMethod::rtn;
  QuantSpec spec;
  std::vector<SlotReport> slots;
  bool lm_head_quantized = false;
  int64_t model_bytes_before = 0, model_bytes_after = 0;  // all parameter tensors
  int64_t quantized_weights = 0;       // sum of N * K over quantized slots
  int64_t quantized_bytes_before = 0;  // their dense weight bytes
  int64_t quantized_bytes_after = 0;   // qweight + scales + zeros
  double bits_per_weight = 0;          // 8 * quantized_bytes_after / quantized_weights
  int64_t calibration_samples = 0, calibration_tokens = 0;
  double seconds = 0;
  std::vector<std::string> notes;      // e.g. a tied lm_head left unquantized
};

// The transform (file comment). Checked before any slot changes: the spec,
// every slot holds a dense Linear whose shape the spec can quantize (the
// error names the tensor, K and the group size), GPTQ's calibration ids
// (shape, dtype, length, ids within the vocabulary). Afterwards every
// parameter of the model has requires_grad false (inference only) and
// model.parameters() lists the quantized tensors. A failure during GPTQ
// (e.g. a Hessian LAPACK cannot factor) may leave the layers before it
// quantized; the error says which slot failed.
Result<QuantizeReport> quantize_model(DecoderLM& model, const QuantizeOptions& options);

nlohmann::json report_to_json(const QuantizeReport& report);

// A model's projection slots grouped by shared input, in forward order:
// {q, k, v}, {o}, {gate, up} (or {up}), {down} per layer, then {lm_head}
// (when include_lm_head and the model has an untied one). layer -1 = lm_head.
struct SlotRef {
  std::string path;                    // e.g. "model.layers.0.self_attn.q_proj"
  std::unique_ptr<LinearLayer>* slot;  // valid while the model lives
};
struct SlotGroup {
  int layer = -1;
  std::vector<SlotRef> slots;
};
std::vector<SlotGroup> projection_groups(DecoderLM& model, bool include_lm_head);

// A model's MoE expert projections (nn/grouped_projection.h), in forward order.
struct GroupedRef {
  int layer = -1;
  std::string path;                          // e.g. "model.layers.0.mlp.experts.gate_up_proj"
  std::unique_ptr<GroupedProjection>* slot;  // valid while the model lives
};
std::vector<GroupedRef> expert_projections(DecoderLM& model);

// Sum of the byte sizes of the model's parameter tensors.
int64_t parameter_bytes(const DecoderLM& model);

}  // namespace el::quant
