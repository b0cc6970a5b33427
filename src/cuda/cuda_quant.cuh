// cuda_quant.cuh — internal to src/cuda: the device pieces shared by the
// weight-only int4/int8 matmul kernels (cuda_quant_gemv.cu: SIMT and
// tensor-core GEMV plus the dispatcher; cuda_quant_gemm.cu: the tiled GEMM).
//
// Tensor-core scheme ("swap AB"): y^T[N, M] = W[N, K] x^T[K, M] with
// mma.sync m16n8k16, the weight as A (16 output rows) and the activations as
// B (8 tokens), so a decode step with M <= 8 fills one mma per 16 rows and
// the weight's row-major, K-contiguous order (ops/quant_layout.h) is A's
// "row" layout and x's [M, K] order is B's "col" layout.
//
// A dot product does not care in which order its K terms are summed, so each
// lane feeds the mma the k's it loaded itself instead of shuffling data into
// the PTX fragment order. A k-block is 4 chunks of 16 weight bytes (KC = 32
// int4 or 16 int8 k's each); lane (g = lane / 4, t = lane % 4) loads chunk t
// of rows g and g + 8 and the KC x values of token g at the same k's. Each
// mma k16-step takes 4 of the lane's k's, for A and B alike:
//   int4, word w (8 nibbles k0..k7 of the lane's chunk), step s = 0, 1:
//     A slots (2t, 2t+1) = (k_{2s}, k_{2s+4}), slots (2t+8, 2t+9) = (k_{2s+1}, k_{2s+5})
//     (one LOP3 pulls nibbles i and i + 4 into the two halves of a register);
//   int8, word w (bytes k0..k3): slots (2t, 2t+1) = (k0, k2), (2t+8, 2t+9) = (k1, k3).
// B is built with the same pairing from x by byte permutes (PRMT), so both
// operands agree on which k each slot means and the sum is the full K.
//
// Dequantisation in registers (W = (q - z) s):
//   bf16 int4, f16 int4/int8: magic numbers. OR-ing q into the mantissa of
//     128.0 (bf16, 7 mantissa bits) or 1024.0 (f16, 10 bits) gives 128 + q /
//     1024 + q exactly; subtracting (magic + z) is exact, one packed multiply
//     by s rounds once. Two weights per LOP3 + HSUB2 + HMUL2.
//   bf16 int8: 128 + q does not fit bf16's mantissa for q >= 128, so bytes go
//     through f32 (2^23 + q, exact), (q - z) s in f32, one cvt per pair.
// The scale is rounded to the activation dtype first (f16 scales are exact in
// f16; in bf16 they carry 2^-9 relative error, below bf16's own rounding).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/cuda_common.cuh"

namespace el::cuda::quant {

// Operands of one launch; pointers already offset to the first token of a
// launch chunk (grid.y is limited to 65535 token tiles).
struct QArgs {
  const void* x;           // [m, k] T
  const uint8_t* qw;       // [n, row_bytes]
  const uint16_t* scales;  // [n, groups] f16 bits
  const uint8_t* zeros;    // [n, groups] or nullptr (symmetric: sym_zero)
  const void* bias;        // [n] T or nullptr
  void* y;                 // [m, n] T
  int m, n, k;
  int group_size, groups;
  int row_bytes;  // k * bits / 8
  int sym_zero;   // 8 or 128
};

template <int BITS>
struct Layout {
  static_assert(BITS == 4 || BITS == 8, "4 or 8 bits");
  static constexpr int KC = BITS == 4 ? 32 : 16;  // k's in a 16-byte chunk of a weight row
  static constexpr int KB = 4 * KC;               // k's in a k-block (4 lanes x chunk)
  static constexpr int XU = KC / 8;               // 16-byte units of bf16/f16 x per chunk
};

// Launchers of cuda_quant_gemm.cu (the tiled tensor-core GEMM). bm is the
// token tile (64 or 128).
void launch_quant_gemm(const QArgs& a, DType dtype, int bits, int bm, cudaStream_t stream);
// cuda_stream_gemv.cu (QuantPath::stream): whether it takes the operands
// (one token, rows of whole 64-byte k-blocks, a block's share of the rows
// fitting in shared memory), and its launcher (which throws an error that
// names what the operands lack).
bool stream_gemv_takes(const QArgs& a, DType dtype, int bits);
void launch_stream_gemv(const QArgs& a, DType dtype, int bits, cudaStream_t stream);

// ---- small device helpers ------------------------------------------------------------

template <class To, class From>
__device__ __forceinline__ To bit_cast(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast sizes");
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

// 16 bytes of weights that are read once: no L1 allocation, so the x rows that
// every block of an SM re-reads stay in L1.
__device__ __forceinline__ void ld_stream16(const void* p, uint32_t (&r)[4]) {
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "l"(p));
}

__device__ __forceinline__ void ld_nc16(const void* p, uint32_t (&r)[4]) {
  const uint4 v = __ldg(static_cast<const uint4*>(p));
  r[0] = v.x;
  r[1] = v.y;
  r[2] = v.z;
  r[3] = v.w;
}

__device__ __forceinline__ void lds16(const void* p, uint32_t (&r)[4]) {
  const uint4 v = *static_cast<const uint4*>(p);
  r[0] = v.x;
  r[1] = v.y;
  r[2] = v.z;
  r[3] = v.w;
}

// cp.async of 16 bytes to a generic shared pointer (cuda_common.cuh's takes
// the shared-window address); when !pred nothing is read and the destination is zeroed.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  el::cuda::cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, pred);
}

// d += a b for a 16x16 A (4 regs), 16x8 B (2 regs), f32 accumulators.
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma16816: bf16 or f16");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// ---- dequantisation -------------------------------------------------------------------

// The scale and zero point of one (row, group), in the form the dequant of
// <T, BITS> consumes: packed (magic + z, s) pairs, or f32 for bf16 int8.
struct QScale {
  uint32_t zm2 = 0;  // T2 (magic + z, magic + z)
  uint32_t s2 = 0;   // T2 (s, s)
  float zf = 0.f;    // 2^23 + z   (bf16 int8)
  float sf = 0.f;    // s          (bf16 int8)
};

template <class T, int BITS>
__device__ __forceinline__ QScale make_scale(uint16_t s_bits, int z) {
  QScale q;
  if constexpr (std::is_same_v<T, __half>) {
    q.zm2 = bit_cast<uint32_t>(__float2half2_rn(1024.f + static_cast<float>(z)));
    q.s2 = static_cast<uint32_t>(s_bits) * 0x10001u;
  } else if constexpr (BITS == 4) {
    q.zm2 = bit_cast<uint32_t>(__float2bfloat162_rn(128.f + static_cast<float>(z)));
    q.s2 = bit_cast<uint32_t>(__float2bfloat162_rn(__half2float(__ushort_as_half(s_bits))));
  } else {
    q.zf = 8388608.f + static_cast<float>(z);
    q.sf = __half2float(__ushort_as_half(s_bits));
  }
  return q;
}

// The scale of `row` for the group holding chunk `chunk`; zero (so the
// weights dequantise to 0) when !ok (a row past N or a chunk past K).
template <class T, int BITS>
__device__ __forceinline__ QScale load_scale(const QArgs& a, int row, int chunk, bool ok) {
  if (!ok) return make_scale<T, BITS>(0, 0);
  const int64_t gi =
      static_cast<int64_t>(row) * a.groups + (chunk * Layout<BITS>::KC) / a.group_size;
  const uint16_t s = __ldg(a.scales + gi);
  const int z = a.zeros ? static_cast<int>(__ldg(a.zeros + gi)) : a.sym_zero;
  return make_scale<T, BITS>(s, z);
}

// Two small integers at bits 0 and 16 (below the magic's mantissa width) ->
// T2 ((q0 - z) s, (q1 - z) s).
template <class T>
__device__ __forceinline__ uint32_t dq_packed(uint32_t bits, const QScale& s) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 v = bit_cast<__half2>(bits | 0x64006400u);
    return bit_cast<uint32_t>(
        __hmul2(__hsub2(v, bit_cast<__half2>(s.zm2)), bit_cast<__half2>(s.s2)));
  } else {
    const __nv_bfloat162 v = bit_cast<__nv_bfloat162>(bits | 0x43004300u);
    return bit_cast<uint32_t>(
        __hmul2(__hsub2(v, bit_cast<__nv_bfloat162>(s.zm2)), bit_cast<__nv_bfloat162>(s.s2)));
  }
}

// bf16 int8: bytes sel_lo / sel_hi (0x4550 | byte index, see below) of w.
__device__ __forceinline__ uint32_t dq_bytes_f32(uint32_t w, uint32_t sel_lo, uint32_t sel_hi,
                                                 const QScale& s) {
  // __byte_perm(w, 0x4B, 0x455i) = 0x4B0000qq: the f32 2^23 + q.
  const float lo = (__uint_as_float(__byte_perm(w, 0x4Bu, sel_lo)) - s.zf) * s.sf;
  const float hi = (__uint_as_float(__byte_perm(w, 0x4Bu, sel_hi)) - s.zf) * s.sf;
  return bit_cast<uint32_t>(__floats2bfloat162_rn(lo, hi));
}

// The weight word of x-unit `unit` and k16-step `sub` (0, 1) in a lane's chunk:
// int4 has one word (8 k's) per unit, int8 two (4 k's each).
template <int BITS>
__device__ __forceinline__ int word_of(int unit, int sub) {
  return BITS == 4 ? unit : 2 * unit + sub;
}

// A fragment (16 rows x 16 k) of step `sub` from the lane's weight words of
// rows g (wlo) and g + 8 (whi); see the pairing in the header comment.
template <class T, int BITS>
__device__ __forceinline__ void make_a(uint32_t (&a)[4], uint32_t wlo, uint32_t whi, int sub,
                                       const QScale& slo, const QScale& shi) {
  if constexpr (BITS == 4) {
    const int sh = 8 * sub;
    a[0] = dq_packed<T>((wlo >> sh) & 0x000F000Fu, slo);
    a[1] = dq_packed<T>((whi >> sh) & 0x000F000Fu, shi);
    a[2] = dq_packed<T>((wlo >> (sh + 4)) & 0x000F000Fu, slo);
    a[3] = dq_packed<T>((whi >> (sh + 4)) & 0x000F000Fu, shi);
  } else if constexpr (std::is_same_v<T, __half>) {
    a[0] = dq_packed<T>(wlo & 0x00FF00FFu, slo);
    a[1] = dq_packed<T>(whi & 0x00FF00FFu, shi);
    a[2] = dq_packed<T>((wlo >> 8) & 0x00FF00FFu, slo);
    a[3] = dq_packed<T>((whi >> 8) & 0x00FF00FFu, shi);
  } else {
    a[0] = dq_bytes_f32(wlo, 0x4550u, 0x4552u, slo);  // bytes 0, 2
    a[1] = dq_bytes_f32(whi, 0x4550u, 0x4552u, shi);
    a[2] = dq_bytes_f32(wlo, 0x4551u, 0x4553u, slo);  // bytes 1, 3
    a[3] = dq_bytes_f32(whi, 0x4551u, 0x4553u, shi);
  }
}

// B fragment (16 k x 8 tokens) of step `sub` from one 16-byte unit of the
// lane's token (8 consecutive x values, two per register, low half first).
template <int BITS>
__device__ __forceinline__ void make_b(uint32_t& b0, uint32_t& b1, const uint32_t (&xu)[4],
                                       int sub) {
  // int4: step sub pairs (x_{2sub}, x_{2sub+4}) and (x_{2sub+1}, x_{2sub+5}),
  // i.e. the low / high halves of registers sub and sub + 2.
  // int8: step sub covers x_{4sub..4sub+3}: pairs (x0, x2), (x1, x3) of
  // registers 2sub and 2sub + 1.
  const uint32_t ra = BITS == 4 ? xu[sub] : xu[2 * sub];
  const uint32_t rb = BITS == 4 ? xu[sub + 2] : xu[2 * sub + 1];
  b0 = __byte_perm(ra, rb, 0x5410);  // (ra.lo, rb.lo)
  b1 = __byte_perm(ra, rb, 0x7632);  // (ra.hi, rb.hi)
}

}  // namespace el::cuda::quant
