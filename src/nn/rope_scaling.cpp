#include "nn/rope_scaling.h"

#include <cmath>

#include "ops/ops.h"

namespace el {

namespace {

// Rounds to f32 through memory: torch evaluates each tensor op separately, so
// a product is rounded before the next add; without this GCC may fuse the two
// into one FMA (-march=native enables contraction) and move a frequency by an
// ulp, which flips a band boundary comparison in the worst case.
float r32(float x) {
  volatile float v = x;
  return v;
}

}  // namespace

std::vector<float> rope_inv_freq_values(const ModelCard& card) {
  // The unscaled frequencies, as every model computes them, over the rotated
  // dims (the whole head, or GPT-NeoX's rotary_ndims: theta^(-2i/R)).
  const int64_t rotary_dims = card.effective_rotary_dims();
  std::vector<float> f =
      ops::rope_inv_freq(rotary_dims, card.rope_theta, Device::cpu()).to_floats();
  using RS = ModelCard::RopeScaling;
  if (card.rope_scaling == RS::none) return f;
  // transformers: a Python float scalar meets an f32 tensor -> the scalar is
  // rounded to f32 and the op runs in f32; "scalar / tensor" is evaluated as
  // reciprocal(tensor) * scalar (torch's __rtruediv__).
  const float factor = card.rope_scaling_factor;
  if (card.rope_scaling == RS::linear) {
    for (float& v : f) v = r32(v / factor);  // inv_freq /= factor
    return f;
  }
  // llama3 (_compute_llama3_parameters). Wavelength bands are computed in
  // double in Python and compared in f32.
  const double old_len = card.rope_original_max_seq_len;
  const double low = card.rope_low_freq_factor, high = card.rope_high_freq_factor;
  const float low_freq_wavelen = static_cast<float>(old_len / low);
  const float high_freq_wavelen = static_cast<float>(old_len / high);
  const float two_pi = static_cast<float>(2.0 * M_PI);
  const float low_f = static_cast<float>(low);
  const float band = static_cast<float>(high - low);
  const float old_f = static_cast<float>(old_len);
  for (float& v : f) {
    const float wavelen = r32(r32(1.0f / v) * two_pi);  // 2 * math.pi / inv_freq
    // wavelen > low_freq_wavelen: divide by factor; else keep.
    const float llama = wavelen > low_freq_wavelen ? r32(v / factor) : v;
    // smooth_factor = (old_context_len / wavelen - low) / (high - low)
    const float smooth = r32(r32(r32(r32(1.0f / wavelen) * old_f) - low_f) / band);
    // smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    const float smoothed =
        r32(r32(r32(r32(1.0f - smooth) * llama) / factor) + r32(smooth * llama));
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    v = medium ? smoothed : llama;
  }
  return f;
}

Tensor rope_inv_freq_for(const ModelCard& card, Device device) {
  const std::vector<float> f = rope_inv_freq_values(card);
  Tensor host = Tensor::from_floats(f, {static_cast<int64_t>(f.size())});
  if (device.is_cpu()) return host;
  Tensor out = Tensor::empty(host.shape(), DType::f32, device);
  out.copy_from(host);
  return out;
}

}  // namespace el
