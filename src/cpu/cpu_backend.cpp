// cpu_backend.cpp — CpuBackend: the Backend of DeviceKind::cpu.
//
// The reference backend: every kernel in f32 on the host, GEMM through
// OpenBLAS, the rest in cpu_*.cpp with OpenMP over rows. This file only
// forwards each virtual to its kernel in cpu_kernels.h.
#include "cpu/cpu_kernels.h"

namespace el {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  const char* name() const override { return "cpu"; }

  void fill(Tensor& dst, float value) override { cpu::fill(dst, value); }
  void copy(const Tensor& src, Tensor& dst) override { cpu::copy(src, dst); }

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) override {
    cpu::gemm(a, trans_a, b, trans_b, c, alpha, beta);
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override { cpu::add(a, b, out); }
  void axpy(float alpha, const Tensor& x, Tensor& y) override { cpu::axpy(alpha, x, y); }
  void scale(Tensor& x, float s) override { cpu::scale(x, s); }
  double sum_squares(const Tensor& x) override { return cpu::sum_squares(x); }

  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) override {
    cpu::embedding_forward(ids, table, out);
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    cpu::embedding_backward(ids, dout, dtable);
  }

  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                       Tensor& rstd) override {
    cpu::rmsnorm_forward(x, w, eps, y, rstd);
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        Tensor& dx, Tensor& dw) override {
    cpu::rmsnorm_backward(dy, x, w, rstd, dx, dw);
  }
  void layernorm_forward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y,
                         Tensor& mean, Tensor& rstd) override {
    cpu::layernorm_forward(x, w, b, eps, y, mean, rstd);
  }
  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                          const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) override {
    cpu::layernorm_backward(dy, x, w, mean, rstd, dx, dw, db);
  }

  void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse,
            Tensor& y) override {
    cpu::rope(x, inv_freq, pos_offset, inverse, y);
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         bool causal, Tensor& out, Tensor& lse) override {
    cpu::attention_forward(q, k, v, scale, causal, out, lse);
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale, bool causal,
                          Tensor& dq, Tensor& dk, Tensor& dv) override {
    cpu::attention_backward(dout, q, k, v, out, lse, scale, causal, dq, dk, dv);
  }

  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cpu::swiglu_forward(gate, up, out);
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) override {
    cpu::swiglu_backward(dout, gate, up, dgate, dup);
  }
  void gelu_forward(const Tensor& x, Tensor& out) override { cpu::gelu_forward(x, out); }
  void gelu_backward(const Tensor& dout, const Tensor& x, Tensor& dx) override {
    cpu::gelu_backward(dout, x, dx);
  }

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& losses,
                             Tensor& lse) override {
    cpu::cross_entropy_forward(logits, targets, losses, lse);
  }
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              float dloss, Tensor& dlogits) override {
    cpu::cross_entropy_backward(logits, targets, lse, dloss, dlogits);
  }

  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& step) override {
    cpu::adamw_update(param, grad, m, v, step);
  }
};

}  // namespace

namespace cpu {

void expect_dtype(const Tensor& t, DType want, const char* what) {
  EL_ENSURE(t.defined(), "cpu {}: tensor is undefined", what);
  EL_ENSURE(t.device().is_cpu(), "cpu {}: tensor is on {}, expected cpu", what, t.device().str());
  EL_ENSURE(t.dtype() == want, "cpu {}: dtype {} {}, expected {}", what, dtype_name(t.dtype()),
            shape_str(t.shape()), dtype_name(want));
  EL_ENSURE(t.is_contiguous(), "cpu {}: tensor {} is not contiguous", what, shape_str(t.shape()));
}

void expect_f32(const Tensor& t, const char* what) { expect_dtype(t, DType::f32, what); }

}  // namespace cpu

// Declared in ops/backend.cpp; one instance for the process, never freed
// (tensors may be destroyed during static destruction).
Backend* make_cpu_backend() { return new CpuBackend(); }

}  // namespace el
