// decoder_lm.h — the decoder-only language model (Llama / Qwen2 layout).
//
//   ids[B, T] -> embed_tokens -> L x DecoderBlock -> norm -> lm_head -> logits[B, T, V]
//
// Positional encoding (card pos_encoding): rope and alibi act inside each
// block's attention; sinusoidal and learned add a table row at each token's
// absolute position to its embedding (nn/pos_encoding.h), the learned table
// being the parameter "model.embed_positions.weight" [max_seq_len, C]
// (GPT-2's wpe; counted with the embeddings).
//
// Built from a ModelCard (configs/models/*.yaml). Parameter names follow
// transformers' LlamaForCausalLM ("model.embed_tokens.weight",
// "model.layers.{i}.self_attn.q_proj.weight", "model.norm.weight",
// "lm_head.weight" when untied), so checkpoints line up with Hugging Face.
#pragma once

#include <memory>
#include <vector>

#include "nn/blocks.h"
#include "nn/model_card.h"
#include "nn/module.h"

namespace el {

// Analytic FLOPs of one token at a given context length, counted from the
// model's actual shapes (multiply-add = 2 FLOPs).
// MoE cards (nn/moe.h) count what a token runs: the router, its k experts
// and the shared expert; matmul_forward_total counts every expert, as if each
// token ran all E (equal to matmul_forward for a dense card).
struct FlopsPerToken {
  double matmul_forward = 0;     // all projections + lm_head (MoE: the active ones)
  double matmul_forward_total = 0;  // MoE: with all E experts per token
  double attention_forward = 0;  // QK^T and PV, causal: mean key count (T+1)/2
  double forward() const { return matmul_forward + attention_forward; }
  double train() const { return 3.0 * forward(); }  // forward + backward (2x)
  // The usual estimate 6N + 12 L d T (PaLM / llm.c style, non-causal
  // attention, N = the active parameters: all of a dense model's);
  // reported beside the counted value.
  double formula_train = 0;
};

struct ParameterCounts {
  int64_t total = 0;
  int64_t embedding = 0;  // token embedding (+ lm_head when untied, + learned positions)
  // The parameters one token uses: total less the E - k routed experts each
  // MoE layer skips for it (= total for a dense card).
  int64_t active = 0;
};

// block: mamba (nn/mamba.h): the layers' projections are matmul_forward,
// the conv and the scan are attention_forward (the sequence mixing; no T
// dependence), and formula_train is 6N (there is no attention term).
// block: rwkv (nn/rwkv.h) likewise: the WKV recurrence is attention_forward.
// Analytic counts from the card's shapes alone (no allocation), so the 3B
// cards can be inspected on a laptop; a test checks them against the tensors
// a built model actually allocates.
ParameterCounts count_parameters(const ModelCard& card);
FlopsPerToken flops_per_token(const ModelCard& card, int64_t seq_len);

class DecoderLM {
 public:
  // Builds and initialises the model on `device` (weights drawn from `seed`)
  // with every parameter stored in `param_dtype` (f32, bf16 or f16). The
  // initial values are drawn in f32 and rounded, so models of one seed agree
  // up to rounding whatever their dtype. Activations follow the embedding's
  // dtype (logits included); the loss is always f32. With init_weights false
  // no random values are drawn (weights keep what allocation left: zeros or
  // uninitialised memory; norms 1, biases 0): for loaders that overwrite every
  // parameter, so a multi-GB checkpoint does not pay for a random init first.
  static Result<std::unique_ptr<DecoderLM>> create(const ModelCard& card, Device device,
                                                   uint64_t seed,
                                                   DType param_dtype = DType::f32,
                                                   bool init_weights = true);

  // logits[B, T, V] for ids[B, T] (i32).
  Tensor forward(const Tensor& ids) const;
  // Generation step: ids[B, T] are each row's next T tokens (a prefill, or
  // T = 1 to decode); their keys/values go into `cache` at the rows'
  // positions, which the caller then advances (cache.advance(T)). Returns
  // logits[B, T, V], or with last_index (B entries) only row b's position
  // last_index[b]: logits[B, 1, V] (a prefill of prompts of different
  // lengths, right-padded, needs just each prompt's last token).
  // Call under NoGrad. The cache must have batch B and room for T more.
  // block: mamba: the cache holds each layer's recurrent states, which
  // forward_cached continues and updates; with last_index they stop after
  // row b's token last_index[b] (the rest of a right-padded row is padding).
  // block: rwkv the same (the WKV state and the token-shift rows).
  Tensor forward_cached(const Tensor& ids, KvCache& cache,
                        const std::vector<int32_t>& last_index = {}) const;
  // The training objective: mean next-token cross-entropy of ids[B, T]
  // against targets[B, T], plus, while gradients are recorded, the router
  // losses the MoE layers append to a list (nn/moe.h AuxLosses): each
  // loss's weight (the card's coefficient / n_layer) times its value, i.e.
  // moe_aux_loss_coef * the mean load-balancing loss over the layers +
  // moe_z_loss_coef * the mean z-loss. Under NoGrad (validation, perplexity)
  // it is the cross-entropy alone. aux: when given, receives the list.
  Tensor loss(const Tensor& ids, const Tensor& targets, AuxLosses* aux = nullptr) const;

  const ModelCard& card() const { return card_; }
  Device device() const { return device_; }
  DType param_dtype() const { return param_dtype_; }
  // All parameters, in a fixed order, under transformers-style names; a tied
  // lm_head is not listed twice.
  const ParameterList& parameters() const { return params_; }
  int64_t num_parameters() const;
  int64_t num_embedding_parameters() const;  // token embedding (+ untied lm_head, + positions)
  FlopsPerToken flops_per_token(int64_t seq_len) const;

  // Visits every projection slot (for LoRA / quantization transforms);
  // call refresh_parameters() afterwards.
  void for_each_linear(const LinearVisitor& visit);
  // Visits every MoE expert projection (nn/grouped_projection.h) likewise.
  void for_each_grouped(const GroupedVisitor& visit);
  void refresh_parameters();
  // Whether every layer of a decode step (T = 1) over `cache` runs as one
  // backend call (ops::decode_layer): stacked dense or quantized weights,
  // RMSNorm, SwiGLU, RoPE or no positional bias in attention, and a backend
  // kernel for them. x: the step's residual stream [B, 1, C].
  bool decode_layers_fused(const Tensor& x, const KvCache& cache) const;

 private:
  DecoderLM(const ModelCard& card, Device device, DType param_dtype);
  // forward, with the MoE layers' router losses appended to aux when given.
  Tensor forward_logits(const Tensor& ids, AuxLosses* aux) const;

  ModelCard card_;
  Device device_;
  DType param_dtype_;
  Tensor embed_tokens_;   // [V, C]
  Tensor embed_positions_;  // [max_seq_len, C]: learned (a parameter) or sinusoidal (a constant)
  std::vector<std::unique_ptr<DecoderBlock>> layers_;
  std::unique_ptr<Norm> norm_;
  std::unique_ptr<LinearLayer> lm_head_;  // null when tied to embed_tokens_
  Tensor rope_inv_freq_;  // [R/2] f32, R = rotary dims (any param dtype, card's rope_scaling
                          // applied) or undefined
  ParameterList params_;
};

}  // namespace el
