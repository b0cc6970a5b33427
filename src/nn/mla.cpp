#include "nn/mla.h"

#include <cmath>
#include <numeric>

#include "autograd/tape.h"
#include "nn/rope_scaling.h"
#include "ops/backend.h"

namespace el {
namespace {

// DeepseekV3RMSNorm's default eps, which its q_a/kv_a layernorms keep.
constexpr float kLatentNormEps = 1e-6f;

int64_t round_up_even(int64_t x) {
  return x + (x & 1);
}

// The permuted head layout shared by q and k (see mla.h): a head of width D
// holds `rope` RoPE dims, pair i (the interleaved x[2i], x[2i+1]) at columns
// (i, D/2 + i), and `plain` other dims in order in the remaining columns.
struct HeadLayout {
  int64_t width = 0, rope = 0;
  int64_t rope_col(int64_t m) const {  // column of RoPE dim m (0 <= m < rope)
    return (m % 2 == 0) ? m / 2 : width / 2 + m / 2;
  }
  int64_t plain_col(int64_t j) const {           // column of plain dim j
    const int64_t first = width / 2 - rope / 2;  // plain columns in the first half
    return j < first ? rope / 2 + j : width / 2 + rope / 2 + (j - first);
  }
};

// The absorbed form's cache row (and each absorbed query head): the RoPE key
// first, pair i at columns (i, rope/2 + i) — rope_at's partial rotation of the
// first `rope` columns — then the latent, so the attention's values (the
// latent) are one contiguous column range, [rope, rope + L).
struct CacheRowLayout {
  int64_t rope = 0;
  int64_t rope_col(int64_t m) const { return (m % 2 == 0) ? m / 2 : rope / 2 + m / 2; }
  int64_t plain_col(int64_t j) const { return rope + j; }
};

// f32 [width / 2] RoPE frequencies of a layout: the pair's frequency at the
// RoPE columns, 0 (an exact identity) elsewhere.
Tensor layout_inv_freq(const HeadLayout& l, const std::vector<float>& rope_freq, Device device) {
  std::vector<float> f(static_cast<size_t>(l.width / 2), 0.0f);
  for (int64_t i = 0; i < l.rope / 2; ++i)
    f[static_cast<size_t>(i)] = rope_freq[static_cast<size_t>(i)];
  return Tensor::from_floats(f, {l.width / 2}).to(device);
}

// W^T [in, out] of whatever a slot computes (dense, LoRA, quantized), as host
// f32: the slot's forward of [I; 0], minus the last row (the bias) from the rest.
std::vector<float> effective_weight_t(const LinearLayer& layer, Device device,
                                      std::vector<float>* bias) {
  const int64_t in = layer.in_features(), out = layer.out_features();
  std::vector<float> eye(static_cast<size_t>((in + 1) * in), 0.0f);
  for (int64_t i = 0; i < in; ++i) eye[static_cast<size_t>(i * in + i)] = 1.0f;
  const std::vector<float> y =
      layer.forward(Tensor::from_floats(eye, {in + 1, in}).to(device)).to_floats();
  std::vector<float> wt(static_cast<size_t>(in * out));
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      wt[static_cast<size_t>(i * out + o)] =
          y[static_cast<size_t>(i * out + o)] - y[static_cast<size_t>(in * out + o)];
    }
  }
  if (bias) bias->assign(y.begin() + in * out, y.end());
  return wt;
}

// Host a[rows_a, k] @ b[rows_b, k]^T through the CPU backend's GEMM.
std::vector<float> host_matmul_t(const std::vector<float>& a, int64_t rows_a,
                                 const std::vector<float>& b, int64_t rows_b, int64_t k) {
  return ops::linear(Tensor::from_floats(a, {rows_a, k}), Tensor::from_floats(b, {rows_b, k}))
      .to_floats();
}

}  // namespace

int64_t mla_cache_dim(const ModelCard& c) {
  return round_up_even(int64_t{c.kv_lora_rank} + c.qk_rope_head_dim);
}

int64_t mla_attention_dim(const ModelCard& c) {
  return round_up_even(
      std::max<int64_t>(int64_t{c.qk_nope_head_dim} + c.qk_rope_head_dim, c.v_head_dim));
}

Status check_mla_for_device(const ModelCard& c, Device device) {
  if (c.attention != ModelCard::Attention::mla || !device.is_cuda()) return Status::Ok();
  const std::string owner =
      !c.source_path.empty() ? c.source_path : fmt::format("model card '{}'", c.name);
  const int64_t qk = int64_t{c.qk_nope_head_dim} + c.qk_rope_head_dim;
  if (mla_attention_dim(c) > kMlaCudaMaxAttentionDim) {
    const bool qk_side = qk >= c.v_head_dim;
    return make_error(
        qk_side ? fmt::format("qk_nope_head_dim ({}) + qk_rope_head_dim ({}) = {} exceeds {}, "
                              "the largest head dim of the CUDA attention kernels",
                              c.qk_nope_head_dim, c.qk_rope_head_dim, qk, kMlaCudaMaxAttentionDim)
                : fmt::format("v_head_dim ({}) exceeds {}, the largest head dim of the CUDA "
                              "attention kernels",
                              c.v_head_dim, kMlaCudaMaxAttentionDim),
        fmt::format("{}: key '{}'", owner, qk_side ? "qk_nope_head_dim" : "v_head_dim"),
        fmt::format("keep max(qk_nope_head_dim + qk_rope_head_dim, v_head_dim) <= {} on {}, or "
                    "run on the CPU",
                    kMlaCudaMaxAttentionDim, device.str()));
  }
  if (mla_cache_dim(c) > kMlaCudaMaxCacheDim) {
    return make_error(
        fmt::format("kv_lora_rank ({}) + qk_rope_head_dim ({}) = {} cache columns exceed {}, the "
                    "largest head dim of the CUDA cached attention",
                    c.kv_lora_rank, c.qk_rope_head_dim, mla_cache_dim(c), kMlaCudaMaxCacheDim),
        fmt::format("{}: key 'kv_lora_rank'", owner),
        fmt::format("keep kv_lora_rank + qk_rope_head_dim <= {} on {} (DeepSeek-V3: 512 + 64), or "
                    "run on the CPU",
                    kMlaCudaMaxCacheDim, device.str()));
  }
  return Status::Ok();
}

// ---- ColumnGather -------------------------------------------------------------

ColumnGather::ColumnGather(int64_t in_width, const std::vector<int64_t>& src)
    : in_(in_width), src_(src) {
  EL_ENSURE(in_ > 0 && !src_.empty(), "ColumnGather: widths {} -> {}", in_, src_.size());
}

Tensor ColumnGather::apply(const Tensor& x) const {
  EL_ENSURE(x.defined() && x.ndim() >= 1 && x.dim(-1) == in_,
            "ColumnGather: input {} does not end in {} columns",
            x.defined() ? shape_str(x.shape()) : "undefined", in_);
  if (!map_.fwd_offsets.defined() || map_.fwd_offsets.device() != x.device())
    map_ = ops::make_column_map(in_, src_, x.device());
  return ops::gather_columns(x, map_);
}

// ---- MlaAttention --------------------------------------------------------------

MlaAttention::MlaAttention(const ModelCard& card, Device device, DType dtype)
    : n_head(card.n_head),
      q_lora_rank(card.q_lora_rank),
      kv_lora_rank(card.kv_lora_rank),
      nope_dim(card.qk_nope_head_dim),
      rope_dim(card.qk_rope_head_dim),
      v_dim(card.v_head_dim),
      attn_dim(mla_attention_dim(card)),
      cache_dim(mla_cache_dim(card)),
      scale(1.0f / std::sqrt(static_cast<float>(card.qk_nope_head_dim + card.qk_rope_head_dim))),
      rotate(card.pos_encoding == ModelCard::PosEncoding::rope) {
  EL_ENSURE(card.attention == ModelCard::Attention::mla && kv_lora_rank > 0 && nope_dim > 0 &&
                rope_dim > 0 && rope_dim % 2 == 0 && v_dim > 0,
            "MlaAttention: card '{}' is not a valid MLA card (validate_model_card first)",
            card.name);
  const int64_t C = card.d_model, H = n_head, L = kv_lora_rank, qk = nope_dim + rope_dim;
  if (q_lora_rank > 0) {
    q_a_proj = std::make_unique<Linear>(C, q_lora_rank, card.qkv_bias, device, dtype);
    q_a_layernorm = Tensor::full({q_lora_rank}, 1.0f, dtype, device);
    q_a_layernorm.set_requires_grad(true);
    q_b_proj = std::make_unique<Linear>(q_lora_rank, H * qk, false, device, dtype);
  } else {
    q_proj = std::make_unique<Linear>(C, H * qk, false, device, dtype);
  }
  kv_a_proj_with_mqa = std::make_unique<Linear>(C, L + rope_dim, card.qkv_bias, device, dtype);
  kv_a_layernorm = Tensor::full({L}, 1.0f, dtype, device);
  kv_a_layernorm.set_requires_grad(true);
  kv_b_proj = std::make_unique<Linear>(L, H * (nope_dim + v_dim), false, device, dtype);
  o_proj = std::make_unique<Linear>(H * v_dim, C, card.o_bias, device, dtype);
  if (card.pos_encoding == ModelCard::PosEncoding::alibi)
    alibi_slopes = ops::alibi_slopes(H, device);

  // Training form: heads of attn_dim columns.
  const HeadLayout a{attn_dim, rope_dim};
  const int64_t D = attn_dim;
  std::vector<int64_t> q_src(static_cast<size_t>(H * D), -1), kn_src(q_src), kr_src(q_src),
      v_src(q_src), out_src(static_cast<size_t>(H * v_dim));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t j = 0; j < nope_dim; ++j) {
      q_src[static_cast<size_t>(h * D + a.plain_col(j))] = h * qk + j;
      kn_src[static_cast<size_t>(h * D + a.plain_col(j))] = h * (nope_dim + v_dim) + j;
    }
    for (int64_t m = 0; m < rope_dim; ++m) {
      q_src[static_cast<size_t>(h * D + a.rope_col(m))] = h * qk + nope_dim + m;
      kr_src[static_cast<size_t>(h * D + a.rope_col(m))] = L + m;  // shared by every head
    }
    for (int64_t j = 0; j < v_dim; ++j) {
      v_src[static_cast<size_t>(h * D + j)] = h * (nope_dim + v_dim) + nope_dim + j;
      out_src[static_cast<size_t>(h * v_dim + j)] = h * D + j;
    }
  }
  std::vector<int64_t> c_src(static_cast<size_t>(L));
  std::iota(c_src.begin(), c_src.end(), 0);
  gather_q_ = ColumnGather(H * qk, q_src);
  gather_c_ = ColumnGather(L + rope_dim, c_src);
  gather_k_nope_ = ColumnGather(H * (nope_dim + v_dim), kn_src);
  gather_k_rope_ = ColumnGather(L + rope_dim, kr_src);
  gather_v_ = ColumnGather(H * (nope_dim + v_dim), v_src);
  gather_out_ = ColumnGather(H * D, out_src);

  // Absorbed form: one cache row of cache_dim columns (RoPE key, then latent).
  const CacheRowLayout c{rope_dim};
  std::vector<int64_t> lat_src(static_cast<size_t>(cache_dim), -1), rope_src(lat_src);
  for (int64_t j = 0; j < L; ++j) {
    lat_src[static_cast<size_t>(c.plain_col(j))] = j;
  }
  for (int64_t m = 0; m < rope_dim; ++m) {
    rope_src[static_cast<size_t>(c.rope_col(m))] = L + m;
  }
  gather_row_latent_ = ColumnGather(L, lat_src);
  gather_row_rope_ = ColumnGather(L + rope_dim, rope_src);

  if (rotate) {
    // The card's RoPE (theta, rope_scaling) over rope_dim dims.
    ModelCard rc = card;
    rc.attention = ModelCard::Attention::standard;
    rc.head_dim = static_cast<int>(rope_dim);
    const std::vector<float> f = rope_inv_freq_values(rc);
    inv_freq_attn_ = layout_inv_freq(a, f, device);
    inv_freq_cache_ =  // partial rotation: the rope_dim / 2 pairs at the row's start
        Tensor::from_floats(std::vector<float>(f.begin(), f.begin() + rope_dim / 2),
                            {rope_dim / 2})
            .to(device);
  }
}

Tensor MlaAttention::query_input(const Tensor& x) const {
  if (q_lora_rank == 0) return x;
  return ops::rmsnorm(q_a_proj->forward(x), q_a_layernorm, kLatentNormEps);
}

Tensor MlaAttention::query(const Tensor& x) const {
  return q_lora_rank > 0 ? q_b_proj->forward(query_input(x)) : q_proj->forward(x);
}

Tensor MlaAttention::attend(const Tensor& x, const Tensor& kva, const Tensor& c) const {
  const int64_t B = x.dim(0), T = x.dim(1), H = n_head, D = attn_dim;
  Tensor q = ops::reshape(gather_q_.apply(query(x)), {B, T, H, D});
  const Tensor kv = kv_b_proj->forward(c);  // [B, T, H (n + v)]
  Tensor k_rope = ops::reshape(gather_k_rope_.apply(kva), {B, T, H, D});
  if (rotate) {
    q = ops::rope(q, inv_freq_attn_);
    k_rope = ops::rope(k_rope, inv_freq_attn_);
  }
  const Tensor k_nope = ops::reshape(gather_k_nope_.apply(kv), {B, T, H, D});
  // The gathers leave zeros in each other's columns (RoPE keeps zeros zero).
  const Tensor k = ops::add(k_nope, k_rope);
  const Tensor v = ops::reshape(gather_v_.apply(kv), {B, T, H, D});
  const Tensor y = ops::attention(q, k, v, /*causal=*/true, scale, alibi_slopes);  // [B, T, H, D]
  return o_proj->forward(gather_out_.apply(ops::reshape(y, {B, T, H * D})));
}

Tensor MlaAttention::forward(const Tensor& x, const Tensor& rope_inv_freq) const {
  (void)rope_inv_freq;
  const Tensor kva = kv_a_proj_with_mqa->forward(x);  // [B, T, L + r]
  const Tensor c = ops::rmsnorm(gather_c_.apply(kva), kv_a_layernorm, kLatentNormEps);
  return attend(x, kva, c);
}

Tensor MlaAttention::cache_rows(const Tensor& kva, const Tensor& c) const {
  const Tensor row =
      ops::add(gather_row_latent_.apply(c), gather_row_rope_.apply(kva));
  return ops::reshape(row, {kva.dim(0), kva.dim(1), 1, cache_dim});
}

std::vector<double> MlaAttention::weights_fingerprint() const {
  ParameterList params;
  collect_parameters("", params);
  std::vector<double> f;
  for (const auto& p : params) f.push_back(backend_for(p.tensor.device()).sum_squares(p.tensor));
  return f;
}

void MlaAttention::absorb(DType dtype) const {
  const Device dev = kv_a_layernorm.device();
  const int64_t H = n_head, L = kv_lora_rank, n = nope_dim, r = rope_dim, v = v_dim, Dc = cache_dim;
  const int64_t qk = n + r, nv = n + v;
  const LinearLayer& qlayer = q_lora_rank > 0 ? *q_b_proj : *q_proj;
  const int64_t Q = qlayer.in_features(), C = o_proj->out_features();
  const std::vector<float> kvb_t = effective_weight_t(*kv_b_proj, dev, nullptr);  // [L, H nv]
  const std::vector<float> q_t = effective_weight_t(qlayer, dev, nullptr);        // [Q, H qk]
  std::vector<float> o_bias;
  const std::vector<float> o_t = effective_weight_t(*o_proj, dev, &o_bias);  // [H v, C]
  const CacheRowLayout lay{r};
  // wo reads only the attention's value columns (the latent, H x L).
  std::vector<float> wq(static_cast<size_t>(H * Dc * Q), 0.0f),
      wo(static_cast<size_t>(C * H * L), 0.0f);
  std::vector<float> uk(static_cast<size_t>(L * n)), qn(static_cast<size_t>(Q * n));
  std::vector<float> uv(static_cast<size_t>(L * v)), oh(static_cast<size_t>(C * v));
  for (int64_t h = 0; h < H; ++h) {
    // Query side: rows of latent dim k = sum_j W_UK[h][j, k] * W_q[h][j, :].
    for (int64_t k = 0; k < L; ++k)
      for (int64_t j = 0; j < n; ++j) uk[k * n + j] = kvb_t[k * H * nv + h * nv + j];
    for (int64_t q = 0; q < Q; ++q)
      for (int64_t j = 0; j < n; ++j) qn[q * n + j] = q_t[q * H * qk + h * qk + j];
    const std::vector<float> lat = host_matmul_t(uk, L, qn, Q, n);  // [L, Q]
    for (int64_t k = 0; k < L; ++k)
      std::copy_n(lat.begin() + k * Q, Q, wq.begin() + (h * Dc + lay.plain_col(k)) * Q);
    for (int64_t m = 0; m < r; ++m)
      for (int64_t q = 0; q < Q; ++q)
        wq[(h * Dc + lay.rope_col(m)) * Q + q] = q_t[q * H * qk + h * qk + n + m];
    // Output side: o_proj's head-h columns times W_UV[h] ([v, L]).
    for (int64_t k = 0; k < L; ++k)
      for (int64_t j = 0; j < v; ++j) uv[k * v + j] = kvb_t[k * H * nv + h * nv + n + j];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < v; ++j) oh[c * v + j] = o_t[(h * v + j) * C + c];
    const std::vector<float> out = host_matmul_t(oh, C, uv, L, v);  // [C, L]
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < L; ++k) wo[c * H * L + h * L + k] = out[c * L + k];
  }
  auto upload = [&](const std::vector<float>& host, const Shape& shape) {
    Tensor t = Tensor::empty(shape, dtype, dev);
    t.copy_from(Tensor::from_floats(host, shape));
    return t;
  };
  w_qabs_ = upload(wq, {H * Dc, Q});
  w_oabs_ = upload(wo, {C, H * L});
  b_oabs_ = Tensor();
  // A bias unless the slot is a plain Linear without one (LoRA or quantized
  // slots may carry one: their forward of zero is it).
  auto has_bias = [](const LinearLayer& layer) {
    const auto* plain = dynamic_cast<const Linear*>(&layer);
    return plain == nullptr || plain->bias.defined();
  };
  if (has_bias(*o_proj)) b_oabs_ = upload(o_bias, {C});
  w_dec_ = b_dec_ = Tensor();
  if (q_lora_rank == 0) {
    // [W_qabs; W_kv_a]: x feeds both (mla_decode_prologue's packed input).
    const int64_t S = kv_a_proj_with_mqa->out_features();
    std::vector<float> kv_bias;
    const std::vector<float> kva_t = effective_weight_t(*kv_a_proj_with_mqa, dev, &kv_bias);
    std::vector<float> wd(wq);
    wd.resize(static_cast<size_t>((H * Dc + S) * Q));
    for (int64_t o = 0; o < S; ++o)
      for (int64_t i = 0; i < Q; ++i) wd[(H * Dc + o) * Q + i] = kva_t[i * S + o];
    w_dec_ = upload(wd, {H * Dc + S, Q});
    w_qabs_ = w_dec_.slice0(0, H * Dc);  // the same storage, not a second copy
    if (has_bias(*kv_a_proj_with_mqa)) {
      std::vector<float> bd(static_cast<size_t>(H * Dc), 0.0f);
      bd.insert(bd.end(), kv_bias.begin(), kv_bias.end());
      b_dec_ = upload(bd, {H * Dc + S});
    }
  }
  // Cache column -> kv_a column: latent j at its plain column, RoPE dim m at its.
  std::vector<int32_t> map(static_cast<size_t>(Dc), -1);
  for (int64_t j = 0; j < L; ++j) map[static_cast<size_t>(lay.plain_col(j))] = static_cast<int32_t>(j);
  for (int64_t m = 0; m < r; ++m)
    map[static_cast<size_t>(lay.rope_col(m))] = static_cast<int32_t>(L + m);
  row_map_ = Tensor::from_ints(map, {Dc}).to(dev);
}

Tensor MlaAttention::forward_cached(const Tensor& x, const Tensor& rope_inv_freq, Tensor& k_cache,
                                    Tensor& v_cache, const Tensor& positions,
                                    bool from_zero) const {
  (void)rope_inv_freq;
  const int64_t B = x.dim(0), T = x.dim(1), H = n_head;
  EL_ENSURE(k_cache.ndim() == 4 && k_cache.dim(2) == 1 && k_cache.dim(3) == cache_dim,
            "MlaAttention::forward_cached: cache {} is not an MLA cache [B, Smax, 1, {}]",
            shape_str(k_cache.shape()), cache_dim);
  if (!w_qabs_.defined() || w_qabs_.dtype() != x.dtype() ||
      (from_zero && weights_fingerprint() != absorbed_fingerprint_)) {
    NoGrad no_grad;
    absorb(x.dtype());
    absorbed_fingerprint_ = weights_fingerprint();
  }
  const Tensor no_rotation;
  const Tensor& inv_freq = rotate ? inv_freq_cache_ : no_rotation;
  Tensor q;
  if (!from_zero && w_dec_.defined()) {
    // One GEMV for the absorbed queries and kv_a, one call for the rest.
    const Tensor packed = ops::linear(x, w_dec_, b_dec_);
    q = ops::mla_decode_prologue(packed, H, kv_lora_rank, row_map_, kv_a_layernorm,
                                 kLatentNormEps, inv_freq, positions, k_cache, v_cache);
  } else {
    const Tensor kva = kv_a_proj_with_mqa->forward(x);
    const Tensor c = ops::rmsnorm(gather_c_.apply(kva), kv_a_layernorm, kLatentNormEps);
    Tensor row = cache_rows(kva, c);  // [B, T, 1, cache_dim]
    if (rotate) row = ops::rope_at(row, inv_freq, positions);
    ops::kv_cache_write(row, row, positions, k_cache, v_cache);
    // A prefill from position 0 sees exactly its own tokens: the training form
    // (per-head K/V built once for the prompt) is the cheaper way there.
    if (from_zero) return attend(x, kva, c);
    q = ops::reshape(ops::linear(query_input(x), w_qabs_), {B, T, H, cache_dim});
    if (rotate) q = ops::rope_at(q, inv_freq, positions);
  }
  // Values: the latent columns [rope_dim, rope_dim + L) of the cache rows.
  const Tensor y = ops::attention_cached(q, k_cache, k_cache, positions, scale, alibi_slopes,
                                         rope_dim, kv_lora_rank);  // [B, T, H, L]
  return ops::linear(ops::reshape(y, {B, T, H * kv_lora_rank}), w_oabs_, b_oabs_);
}

void MlaAttention::collect_parameters(const std::string& prefix, ParameterList& out) const {
  if (q_lora_rank > 0) {
    q_a_proj->collect_parameters(prefix + ".q_a_proj", out);
    out.push_back({prefix + ".q_a_layernorm.weight", q_a_layernorm});
    q_b_proj->collect_parameters(prefix + ".q_b_proj", out);
  } else {
    q_proj->collect_parameters(prefix + ".q_proj", out);
  }
  kv_a_proj_with_mqa->collect_parameters(prefix + ".kv_a_proj_with_mqa", out);
  out.push_back({prefix + ".kv_a_layernorm.weight", kv_a_layernorm});
  kv_b_proj->collect_parameters(prefix + ".kv_b_proj", out);
  o_proj->collect_parameters(prefix + ".o_proj", out);
}

void MlaAttention::for_each_linear(const std::string& prefix, const LinearVisitor& visit) {
  if (q_lora_rank > 0) {
    visit(prefix + ".q_a_proj", q_a_proj);
    visit(prefix + ".q_b_proj", q_b_proj);
  } else {
    visit(prefix + ".q_proj", q_proj);
  }
  visit(prefix + ".kv_a_proj_with_mqa", kv_a_proj_with_mqa);
  visit(prefix + ".kv_b_proj", kv_b_proj);
  visit(prefix + ".o_proj", o_proj);
}

}  // namespace el
