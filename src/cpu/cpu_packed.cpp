// cpu_packed.cpp — kernels on the packed outputs of one stacked projection
// (ops::linear_stacked): the q/k/v split with its rotation, and SwiGLU over
// [gate | up] rows. The reference for the CUDA kernels of the same names.
#include <cstring>
#include <initializer_list>

#include "cpu/cpu_kernels.h"
#include "cpu/cpu_math.h"

namespace el::cpu {
namespace {

struct QkvDims {
  int64_t rows, t, h, hkv, d, width;  // width = (h + 2 * hkv) * d, one position of packed
};

QkvDims qkv_dims(const Tensor& packed, const Tensor& q, const Tensor& k, const Tensor& v,
                 const char* what) {
  EL_ENSURE(packed.ndim() == 4 && q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4,
            "cpu {}: packed {}, q {}, k {}, v {} must be 4-D", what, shape_str(packed.shape()),
            shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3), hkv = k.dim(2);
  EL_ENSURE(k.shape() == v.shape() && k.dim(0) == b && k.dim(1) == t && k.dim(3) == d &&
                packed.shape() == Shape({b, t, h + 2 * hkv, d}) && d % 2 == 0,
            "cpu {}: packed {} does not hold q {}, k {}, v {} (expected [B, T, H + 2 Hkv, D], "
            "D even)",
            what, shape_str(packed.shape()), shape_str(q.shape()), shape_str(k.shape()),
            shape_str(v.shape()));
  return {b * t, t, h, hkv, d, (h + 2 * hkv) * d};
}

// Copies `rows` rows of n floats between strided row layouts.
void copy_rows(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
               int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(n) * sizeof(float));
  }
}

// q/k part of one packed layout, rotated (sign) or copied when inv_freq is undefined.
void rotate_or_copy(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    const QkvDims& g, int64_t heads, const Tensor& inv_freq, int64_t pos_offset,
                    float sign) {
  if (inv_freq.defined()) {
    rope_rows(src, src_stride, dst, dst_stride, g.rows, g.t, heads, g.d, inv_freq.data<float>(),
              pos_offset, sign, inv_freq.numel());
  } else {
    copy_rows(src, src_stride, dst, dst_stride, g.rows, heads * g.d);
  }
}

void expect_freq(const Tensor& inv_freq, const QkvDims& g, const char* what) {
  if (!inv_freq.defined()) return;
  expect_f32(inv_freq, what);
  EL_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= g.d / 2,
            "cpu {}: inv_freq has {} values, head dim {} needs 1 to {}", what, inv_freq.numel(),
            g.d, g.d / 2);
}

}  // namespace

void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset, Tensor& q,
                    Tensor& k, Tensor& v) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&packed, &q, &k, &v}) {
    expect_f32(*t, "split_qkv_rope");
  }
  const QkvDims g = qkv_dims(packed, q, k, v, "split_qkv_rope");
  expect_freq(inv_freq, g, "split_qkv_rope (inv_freq)");
  const float* p = packed.data<float>();
  rotate_or_copy(p, g.width, q.data<float>(), g.h * g.d, g, g.h, inv_freq, pos_offset, 1.f);
  rotate_or_copy(p + g.h * g.d, g.width, k.data<float>(), g.hkv * g.d, g, g.hkv, inv_freq,
                 pos_offset, 1.f);
  copy_rows(p + (g.h + g.hkv) * g.d, g.width, v.data<float>(), g.hkv * g.d, g.rows, g.hkv * g.d);
}

void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                         const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dpacked}) {
    expect_f32(*t, "merge_qkv_rope_grad");
  }
  const QkvDims g = qkv_dims(dpacked, dq, dk, dv, "merge_qkv_rope_grad");
  expect_freq(inv_freq, g, "merge_qkv_rope_grad (inv_freq)");
  float* p = dpacked.data<float>();
  rotate_or_copy(dq.data<float>(), g.h * g.d, p, g.width, g, g.h, inv_freq, pos_offset, -1.f);
  rotate_or_copy(dk.data<float>(), g.hkv * g.d, p + g.h * g.d, g.width, g, g.hkv, inv_freq,
                 pos_offset, -1.f);
  copy_rows(dv.data<float>(), g.hkv * g.d, p + (g.h + g.hkv) * g.d, g.width, g.rows, g.hkv * g.d);
}

namespace {

// Rows and F of gate_up[N, 2F] against out[N, F].
void packed_dims(const Tensor& gate_up, const Tensor& out, const char* what, int64_t& rows,
                 int64_t& f) {
  EL_ENSURE(gate_up.ndim() >= 1 && gate_up.dim(-1) % 2 == 0 && out.ndim() == gate_up.ndim(),
            "cpu {}: gate_up {} must be [..., 2F] and out [..., F], got out {}", what,
            shape_str(gate_up.shape()), shape_str(out.shape()));
  f = gate_up.dim(-1) / 2;
  rows = f == 0 ? 0 : gate_up.numel() / (2 * f);
  EL_ENSURE(out.dim(-1) == f && out.numel() == rows * f,
            "cpu {}: out {} does not match gate_up {} (expected [..., {}])", what,
            shape_str(out.shape()), shape_str(gate_up.shape()), f);
}

}  // namespace

void swiglu_packed_forward(const Tensor& gate_up, Tensor& out) {
  expect_f32(gate_up, "swiglu_packed_forward (gate_up)");
  expect_f32(out, "swiglu_packed_forward (out)");
  int64_t rows = 0, f = 0;
  packed_dims(gate_up, out, "swiglu_packed_forward", rows, f);
  const float* gu = gate_up.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for schedule(static) if (rows * f >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gu + r * 2 * f;
    const float* u = g + f;
    float* y = o + r * f;
    for (int64_t i = 0; i < f; ++i) y[i] = g[i] * fast_sigmoid(g[i]) * u[i];
  }
}

void swiglu_packed_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  expect_f32(dout, "swiglu_packed_backward (dout)");
  expect_f32(gate_up, "swiglu_packed_backward (gate_up)");
  expect_f32(dgate_up, "swiglu_packed_backward (dgate_up)");
  int64_t rows = 0, f = 0;
  packed_dims(gate_up, dout, "swiglu_packed_backward", rows, f);
  EL_ENSURE(dgate_up.numel() == gate_up.numel(),
            "cpu swiglu_packed_backward: dgate_up {} for gate_up {}", shape_str(dgate_up.shape()),
            shape_str(gate_up.shape()));
  const float* gu = gate_up.data<float>();
  const float* dy = dout.data<float>();
  float* dgu = dgate_up.data<float>();
#pragma omp parallel for schedule(static) if (rows * f >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gu + r * 2 * f;
    const float* u = g + f;
    const float* d = dy + r * f;
    float* dg = dgu + r * 2 * f;
    float* du = dg + f;
    for (int64_t i = 0; i < f; ++i) {
      // As swiglu_backward: d silu / dg = s + g s (1 - s).
      const float s = fast_sigmoid(g[i]);
      const float silu = g[i] * s;
      dg[i] = d[i] * u[i] * (s + silu * (1.f - s));
      du[i] = d[i] * silu;
    }
  }
}

}  // namespace el::cpu
