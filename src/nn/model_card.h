// model_card.h — the shape and options of a decoder-only LM, read from YAML.
//
// A model card (configs/models/<name>.yaml) is the single description of an
// architecture: every model, benchmark and checkpoint names one. Cards are
// read strictly (io/yaml_util.h): unknown keys, wrong types and bad enum
// values fail with "path:LINE" and a suggestion, so a typo can never silently
// fall back to a default and change what a benchmark measures.
//
// YAML keys (required unless a default is given):
//   name             string   card name (built-in cards: equals the file stem)
//   n_layer          int      decoder blocks
//   d_model          int      residual width C
//   n_head           int      query heads H
//   n_kv_head        int      key/value heads Hkv (default n_head; 1 = MQA,
//                             1 < Hkv < H = GQA); H must be divisible by Hkv
//   head_dim         int      D (default 0 = d_model / n_head)
//   d_ff             int      MLP hidden width F
//   vocab_size       int      V
//   max_seq_len      int      longest context the model is built for
//   norm             rmsnorm | layernorm          (default rmsnorm)
//   norm_eps         float                        (default 1e-5)
//   pos_encoding     rope | none | sinusoidal | learned | alibi   (default rope)
//                    rope: rotary q/k (rope_theta, rope_scaling).
//                    sinusoidal: Vaswani et al.'s fixed table (sin on even,
//                      cos on odd dims, base 10000) added to the token
//                      embedding at each token's absolute position.
//                    learned: a trained table model.embed_positions.weight
//                      [max_seq_len, C] added the same way (GPT-2).
//                    alibi: Press et al.'s linear bias -slope_h * (i - j) on
//                      the score of query i and key j <= i; no parameters.
//                    none: no position signal (causal masking alone, NoPE).
//                    ALiBi is our "relative" scheme. The paper names one but
//                    does not say which (UNVERIFIED). We take ALiBi over a
//                    T5 bucketed bias because it has no parameters, it
//                    extrapolates past the trained length (the point of the
//                    comparison), and in a fused attention kernel it costs
//                    one FMA per score from a per-head slope, while a T5 bias
//                    needs a learned [buckets, H] table and a bucket lookup
//                    (log, gather) per score.
//                    Past the trained length (max_seq_len): learned has no
//                    rows there, so it is an error (check_sequence_length);
//                    sinusoidal, rope and alibi compute any position (the
//                    model just never saw them: quality may drop, least for
//                    alibi, most for sinusoidal), and none has no positions;
//                    these still obey max_seq_len like every card.
//   rope_theta       float    RoPE base            (default 10000)
//   mlp              swiglu | gelu | gelu_exact   (default swiglu)
//                    gelu: up/down with GELU's tanh approximation (GPT-2's
//                    gelu_new); gelu_exact: the same with the erf GELU
//                    (transformers' hidden_act "gelu", GPT-NeoX / Pythia).
//   tied_embeddings  bool     lm_head shares the token embedding (default false)
//   init_std         float    std of the normal weight init (default 0.02)
//   qkv_bias         bool     biases on q/k/v projections (default false)
//   o_bias           bool     bias on the attention output projection o_proj
//                             (default false; Llama's attention_bias sets both)
//   sliding_window   int      0 = full causal attention (default); W > 0 = the
//                             checkpoint attends to the last W positions only
//                             (Mistral, Qwen2). The engine has no windowed
//                             attention, so sequences longer than W are rejected
//                             (check_sequence_length) instead of silently
//                             attending further than the model was trained to.
//   rope_scaling     none | linear | llama3       (default none) RoPE frequency
//                             scaling as transformers applies it (nn/rope_scaling.h)
//   rope_scaling_factor   float  linear, llama3: factor (required > 0 with them)
//   rope_low_freq_factor  float  llama3 only: low_freq_factor (> 0)
//   rope_high_freq_factor float  llama3 only: high_freq_factor (> low)
//   rope_original_max_seq_len int llama3 only: original_max_position_embeddings
//   attention        standard | mla | nsa         (default standard)
//                    standard: MHA/GQA/MQA with n_kv_head K/V heads of head_dim.
//                    nsa: native sparse attention (Yuan et al. 2025; nn/nsa.h):
//                    GQA q/k/v projections (n_head, n_kv_head, head_dim,
//                    qkv_bias, RoPE as for standard), one K/V shared by three
//                    branches mixed per query head by sigmoid gates
//                    (self_attn.gate_proj [3 H, C]): attention over compressed
//                    blocks, over the top-n selected blocks, and over a
//                    sliding window. Keys below (each needs attention: nsa;
//                    defaults are the EfficientLLM authors' code's):
//   nsa_window          int  sliding-window keys (t - w, t]      (default 128)
//   nsa_compress_block  int  l: positions per compressed token    (default 64)
//   nsa_compress_stride int  d: step between compressed tokens    (default 64);
//                            token i covers [i d, i d + l), complete blocks only
//   nsa_select_block    int  l': positions per selectable block   (default 64)
//   nsa_select_count    int  n: blocks each query attends to, its own block
//                            included                             (default 4)
//                    Checks (each error names its key): all > 0; l % d == 0;
//                    l' % d == 0; l' >= l; l, l' and w <= max_seq_len; alibi
//                    and sliding_window are not combined with nsa. Written by
//                    model_card_to_yaml only with attention: nsa.
//                    mla: DeepSeek-V2/V3 multi-head latent attention
//                    (nn/mla.h): K and V of every head are built from one
//                    shared latent c_kv of kv_lora_rank dims plus one shared
//                    RoPE key of qk_rope_head_dim dims, which are all the KV
//                    cache holds. The fields below keep transformers'
//                    DeepseekV3Config meaning; each needs attention: mla.
//                    MLA has per-head K/V (built from the latent), so
//                    n_kv_head must equal n_head, and head_dim is unused (0).
//   q_lora_rank      int  query compression rank (0 = none: q_proj [H*(n+r), C];
//                         > 0: q_a_proj -> RMSNorm -> q_b_proj)   (default 0)
//   kv_lora_rank     int  latent width of c_kv (> 0 with mla)
//   qk_nope_head_dim int  per-head q/k dims without RoPE (> 0 with mla)
//   qk_rope_head_dim int  per-head q dims and shared k dims with RoPE
//                         (> 0 and even with mla; rotated only with
//                         pos_encoding: rope, in DeepSeek's interleaved pairs)
//   v_head_dim       int  per-head value dims (> 0 with mla)
//   parallel_residual bool  GPT-NeoX's parallel block (default false):
//                         x + attn(ln1(x)) + mlp(ln2(x)) instead of
//                         h = x + attn(ln1(x)); h + mlp(ln2(h))
//                         (transformers' use_parallel_residual)
//   rotary_dims      int  RoPE on the first rotary_dims dims of each q/k head
//                         only, in the rotate-half layout over those dims
//                         (pairs (i, i + R/2), R = rotary_dims, frequencies
//                         theta^(-2i/R)); the rest pass unrotated (GPT-NeoX's
//                         rotary_ndims = head_dim * rotary_pct). 0 = the whole
//                         head (default); else even, <= head_dim, rope only.
//   mlp_bias         bool biases on the MLP projections (default false;
//                         GPT-NeoX's dense_h_to_4h / dense_4h_to_h have them)
//   moe_experts      int  E routed experts: the MLP of every layer becomes a
//                         mixture of experts (nn/moe.h; Mixtral / Qwen2-MoE
//                         layout: a router gate [E, C] and E SwiGLU experts).
//                         0 = the dense MLP (default); at most 256 (the CUDA
//                         router holds a token's E scores in one warp's
//                         registers; DeepSeek-V3 has 256). The moe_* keys below
//                         are errors while it is 0 and are written by
//                         model_card_to_yaml only when it is > 0. MoE needs
//                         mlp: swiglu, no mlp_bias and block: transformer.
//   moe_top_k        int  k experts per token, 1 <= k <= E      (default 2)
//   moe_d_ff         int  each expert's hidden width; 0 = d_ff  (default 0)
//   moe_router       softmax | sigmoid                         (default softmax)
//                         softmax: p = softmax(logits), the top-k of p and
//                         their p as weights (Mixtral, Qwen2-MoE).
//                         sigmoid: s = sigmoid(logits), top-k of s and their
//                         s as weights (DeepSeek-V3's scoring, without its
//                         bias term and group limits).
//   moe_norm_topk_prob bool divide the k weights by their sum (default true:
//                         Mixtral; Qwen2-MoE's norm_topk_prob, false there)
//   moe_shared_experts int experts every token runs besides its k (default 0).
//                         n > 0: one SwiGLU MLP of n * moe_shared_d_ff
//                         (mlp.shared_expert; n experts every token sums are
//                         exactly one MLP n times as wide), its output scaled
//                         by sigmoid(shared_expert_gate x) per token
//                         (mlp.shared_expert_gate [1, C]; Qwen2-MoE)
//   moe_shared_d_ff  int  width of one shared expert; 0 = the expert width
//                         (default 0; needs moe_shared_experts > 0)
//   moe_aux_loss_coef float weight of the load-balancing loss in the
//                         training loss (Switch / Mixtral: E * sum_e f_e P_e
//                         per layer, f_e = tokens routed to e / N, P_e = mean
//                         router probability of e; ops::moe_balance_loss),
//                         averaged over the layers (default 0.01; >= 0)
//   moe_z_loss_coef  float weight of the router z-loss, mean over tokens of
//                         logsumexp(logits)^2 (ST-MoE, Zoph et al. 2022, whose
//                         default 0.001 is ours), averaged over the layers
//                         (>= 0). Both losses join DecoderLM::loss only while
//                         gradients are recorded (models/decoder_lm.h).
//   moe_capacity_factor float 0 = dropless (default): every token reaches
//                         its k experts. cf > 0: each expert takes at most
//                         ceil(cf * N * k / E) of a forward's N tokens, first
//                         choices before second ones, earlier tokens first
//                         (GShard's order); the slots beyond are dropped (the
//                         token keeps its residual and the shared expert).
//                         Generation (forward_cached) always runs dropless.
//   block            transformer | mamba | rwkv | rwkv6   (default transformer)
//                    What each of the n_layer layers is. transformer: the
//                    attention + MLP block described by the keys above.
//                    mamba: a Mamba-1 layer x + mixer(RMSNorm(x)) (Gu & Dao
//                    2023; nn/mamba.h, transformers' MambaForCausalLM), no
//                    attention and no MLP. The attention/MLP keys do nothing
//                    there and are errors with block: mamba (each names its
//                    key): n_head, n_kv_head, head_dim, d_ff, rope_theta, mlp,
//                    qkv_bias, o_bias, mlp_bias, sliding_window, rope_scaling
//                    and its rope_* parameters, attention and the MLA / NSA
//                    keys, parallel_residual, rotary_dims, moe_experts; pos_encoding
//                    defaults to none there and must stay none (the
//                    recurrence orders the tokens). Required with mamba:
//                    name, n_layer, d_model, vocab_size, max_seq_len (the
//                    longest sequence trained / generated; the model itself
//                    has no length limit). norm (rmsnorm: Mamba's),
//                    norm_eps, tied_embeddings and init_std keep their meaning.
//                    rwkv: an RWKV-4 layer (Peng et al. 2023; nn/rwkv.h,
//                    transformers' RwkvForCausalLM): x + time_mix(ln1(x)),
//                    then + channel_mix(ln2(.)), layer 0 first applying
//                    pre_ln to the embedding, ln_out before an untied head.
//                    The attention keys and mlp are errors there like with
//                    mamba; d_ff is the channel mix's width (transformers'
//                    intermediate_size, default 4 d_model). norm must be
//                    layernorm (its default there; norm_eps is
//                    layer_norm_epsilon of ln1/ln2/pre_ln, while ln_out keeps
//                    transformers' fixed 1e-5), pos_encoding none. Keys
//                    (errors without block: rwkv; written by
//                    model_card_to_yaml only with it):
//   rwkv_attention_hidden_size int  A, the WKV width (key/value/receptance
//                         [A, C], output [C, A]; default 0 = d_model)
//   rwkv_rescale_every int  transformers' rescale_every (default 0 = none):
//                         k > 0 halves the residual stream after every k-th
//                         layer at inference (output/value weights of layer i
//                         divided by 2^(i / k)). LayerNorm removes the scale
//                         except through its eps, so we run the unscaled model
//                         with layer i's ln1/ln2 eps times 4^(i / k) and
//                         ln_out's times 4^(L / k): transformers' eval() output
//                         exactly, in training too (its train() mode skips the
//                         rescale, a difference only in those eps).
//                    rwkv6: an RWKV-6 "Finch" layer (Peng et al. 2024; nn/rwkv6.h):
//                    the same layer layout as rwkv with a data-dependent
//                    token shift, per-token decay and a multi-head matrix
//                    state. Same forbidden keys and norm / pos_encoding rules
//                    as rwkv (norm_eps is every LayerNorm's eps, ln_out's
//                    included); d_ff defaults to the authors' 3.5 d_model
//                    rounded down to a multiple of 32. Keys (errors without
//                    block: rwkv6; model_card_rwkv6.h checks them):
//   rwkv6_head_size int     head size N of the WKV state (default 64);
//                         d_model must be a multiple of it (H = d_model / N)
//   rwkv6_time_mix_extra_dim int  rank of the five token-shift LoRAs
//                         (default 32)
//   rwkv6_time_decay_extra_dim int  rank of the decay LoRA (default 64)
//   mamba_d_state    int  N, SSM state size per channel      (default 16;
//                         transformers' state_size; 1..256)
//   mamba_d_conv     int  causal depthwise conv width        (default 4;
//                         conv_kernel; 1..64)
//   mamba_expand     int  inner width I = expand * d_model   (default 2; 1..16)
//   mamba_dt_rank    int  rank of the delta projection (x_proj -> dt_proj);
//                         0 = ceil(d_model / 16) (default; time_step_rank
//                         "auto"); else 1..I
//   mamba_conv_bias  bool bias on conv1d        (default true; use_conv_bias)
//   mamba_proj_bias  bool bias on in_proj and out_proj (default false; use_bias)
//                    The mamba_* keys are errors without block: mamba and are
//                    written by model_card_to_yaml only with it. Mamba's dt
//                    init values (time_step_min/max/floor/scale) and
//                    rescale_prenorm_residual only shape the random init
//                    (nn/mamba.h documents ours); residual_in_fp32 changes
//                    nothing in f32 (io/hf_config.h).
// With mla, qkv_bias puts biases on q_a_proj and kv_a_proj_with_mqa (and o_bias
// on o_proj), as DeepSeek's attention_bias does; q_proj has none.
// The keys from o_bias on (and mlp's gelu_exact value) are written by model_card_to_yaml only when they
// differ from their defaults, so cards without them keep their exact text (and
// config hashes). A rope_* parameter the chosen rope_scaling does not use is an
// error, never silently ignored.
#pragma once

#include <string>
#include <vector>

#include "core/error.h"

namespace el {

// Upper bounds of the Mamba sizes (mamba_d_state, mamba_d_conv, mamba_expand).
inline constexpr int kMambaMaxDState = 256;
inline constexpr int kMambaMaxDConv = 64;
inline constexpr int kMambaMaxExpand = 16;
// Upper bound of moe_experts (the key's comment above says why).
inline constexpr int kMoeMaxExperts = 256;

struct ModelCard {
  std::string name;
  int n_layer = 0;
  int d_model = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int head_dim = 0;  // 0 = d_model / n_head (kept as written; see effective_head_dim)
  int d_ff = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  enum class Norm { rmsnorm, layernorm } norm = Norm::rmsnorm;
  float norm_eps = 1e-5f;
  // (values in YAML order; rope and none keep 0 and 1)
  enum class PosEncoding { rope, none, sinusoidal, learned, alibi } pos_encoding = PosEncoding::rope;
  float rope_theta = 10000.0f;
  enum class Mlp { swiglu, gelu, gelu_exact } mlp = Mlp::swiglu;
  bool tied_embeddings = false;
  float init_std = 0.02f;
  bool qkv_bias = false;
  bool o_bias = false;
  int sliding_window = 0;  // 0 = none
  enum class RopeScaling { none, linear, llama3 } rope_scaling = RopeScaling::none;
  float rope_scaling_factor = 0.0f;    // 0 = unset
  float rope_low_freq_factor = 0.0f;   // llama3
  float rope_high_freq_factor = 0.0f;  // llama3
  int rope_original_max_seq_len = 0;   // llama3
  enum class Attention { standard, mla, nsa } attention = Attention::standard;
  int q_lora_rank = 0;       // mla: 0 = no query compression
  int kv_lora_rank = 0;      // mla
  int qk_nope_head_dim = 0;  // mla
  int qk_rope_head_dim = 0;  // mla
  int v_head_dim = 0;        // mla
  int nsa_window = 128;          // nsa (see the key list above)
  int nsa_compress_block = 64;   // nsa
  int nsa_compress_stride = 64;  // nsa
  int nsa_select_block = 64;     // nsa
  int nsa_select_count = 4;      // nsa
  bool parallel_residual = false;  // GPT-NeoX: attention and MLP both read the block input
  int rotary_dims = 0;             // 0 = the whole head
  bool mlp_bias = false;
  int moe_experts = 0;                // 0 = dense MLP (see the moe_* keys above)
  int moe_top_k = 2;                  // moe
  int moe_d_ff = 0;                   // moe: 0 = d_ff
  enum class MoeRouter { softmax, sigmoid } moe_router = MoeRouter::softmax;  // moe
  bool moe_norm_topk_prob = true;     // moe
  int moe_shared_experts = 0;         // moe
  int moe_shared_d_ff = 0;            // moe: 0 = the expert width
  float moe_aux_loss_coef = 0.01f;    // moe
  float moe_z_loss_coef = 0.001f;     // moe
  float moe_capacity_factor = 0.0f;   // moe: 0 = dropless
  // What each layer is (see the block key above; values in YAML order).
  enum class Block { transformer, mamba, rwkv, rwkv6 } block = Block::transformer;
  int mamba_d_state = 16;        // mamba: N
  int mamba_d_conv = 4;          // mamba: conv width
  int mamba_expand = 2;          // mamba: I = expand * d_model
  int mamba_dt_rank = 0;         // mamba: 0 = ceil(d_model / 16)
  bool mamba_conv_bias = true;   // mamba
  bool mamba_proj_bias = false;  // mamba
  int rwkv_attention_hidden_size = 0;  // rwkv: 0 = d_model
  int rwkv_rescale_every = 0;          // rwkv: 0 = none
  // rwkv6 (model_card_rwkv6.h): 0 = unset; a block: rwkv6 card reads them
  // with their defaults 64, 32, 64 (the 1.6B model's).
  int rwkv6_head_size = 0;
  int rwkv6_time_mix_extra_dim = 0;
  int rwkv6_time_decay_extra_dim = 0;
  std::string source_path;  // file (or source name) the card was read from; not in the YAML

  // head_dim, or d_model / n_head when head_dim is 0.
  int effective_head_dim() const {
    return head_dim > 0 ? head_dim : (n_head > 0 ? d_model / n_head : 0);
  }
  // Dims of each q/k head that RoPE rotates: rotary_dims, or the head dim when 0.
  int effective_rotary_dims() const { return rotary_dims > 0 ? rotary_dims : effective_head_dim(); }
  // MoE: one expert's hidden width, and the shared expert MLP's (all n shared
  // experts as one MLP; 0 without shared experts).
  int moe_expert_d_ff() const { return moe_d_ff > 0 ? moe_d_ff : d_ff; }
  int moe_shared_width() const {
    return moe_shared_experts * (moe_shared_d_ff > 0 ? moe_shared_d_ff : moe_expert_d_ff());
  }
  // Mamba: the inner width I = mamba_expand * d_model and the delta rank
  // (mamba_dt_rank, or ceil(d_model / 16) when 0).
  int mamba_d_inner() const { return mamba_expand * d_model; }
  int mamba_effective_dt_rank() const {
    return mamba_dt_rank > 0 ? mamba_dt_rank : (d_model + 15) / 16;
  }
  bool operator==(const ModelCard&) const = default;
};

// YAML spellings of the enums ("rmsnorm", "rope", "swiglu", ...).
const char* norm_name(ModelCard::Norm n);
const char* pos_encoding_name(ModelCard::PosEncoding p);
const char* mlp_name(ModelCard::Mlp m);
const char* rope_scaling_name(ModelCard::RopeScaling r);
const char* attention_name(ModelCard::Attention a);
const char* moe_router_name(ModelCard::MoeRouter r);
const char* block_name(ModelCard::Block b);

// Parses a card from YAML text; `source_name` (a path or a label such as
// "checkpoint.safetensors") goes into error locations and card.source_path.
// The card is validated; errors point at the offending key's line.
Result<ModelCard> parse_model_card(const std::string& yaml_text, const std::string& source_name);
// Reads and parses the file at `path`.
Result<ModelCard> load_model_card(const std::string& path);

// Consistency checks on a card built in code or read from YAML: positive
// sizes, n_head divisible by n_kv_head, d_model divisible by n_head when
// head_dim is 0, even head_dim with RoPE, positive eps/theta/init_std, enum
// values in range. Errors name the field, e.g.
//   "n_head (12) must be divisible by n_kv_head (5)".
Status validate_model_card(const ModelCard& card);

// A training or inference length the card cannot run: seq_len above
// max_seq_len, or above sliding_window when the card has one (full attention
// over more than W positions would differ from the checkpoint's windowed
// attention). The error names the card, the limit and the key; with
// pos_encoding: learned it also says that the learned table has only
// max_seq_len rows, so the model cannot run past them at all.
Status check_sequence_length(const ModelCard& card, int64_t seq_len);

// Every YAML field in a fixed order, floats in shortest round-trip form, so
// parse_model_card(model_card_to_yaml(c)) == c (up to source_path).
std::string model_card_to_yaml(const ModelCard& card);

// `name_or_path` is a YAML file if it ends in .yaml/.yml or contains '/';
// otherwise a built-in card name looked up as <dir>/<name>.yaml in
// model_card_search_dirs() order. The error for an unknown name lists the
// available names and suggests the closest.
Result<ModelCard> find_model_card(const std::string& name_or_path);

// Existing directories searched for built-in cards, in order:
//   $EFFICIENTLLM_HOME/configs/models,
//   <dir of executable>/../../configs/models, <dir of executable>/../configs/models
//     (build/<preset>/efficientllm and an installed bin/ layout),
//   EL_SOURCE_DIR/configs/models (the source tree this binary was built from).
std::vector<std::string> model_card_search_dirs();
// Sorted names of the cards found in those directories (file stems of *.yaml).
std::vector<std::string> builtin_model_card_names();

}  // namespace el
