// cuda_decode_stream.cuh — internal to cuda_decode_layer.cu: the layer
// kernel's weight stream. A producer warp copies a block's weight rows for the
// whole layer (five contiguous row ranges: qkv, o, gate, up, down) into a ring
// of kStages shared-memory slots with bulk copies, each slot completing on an
// mbarrier; the consumer warps take each slot's weights, dot them with the
// activation vector in shared memory and release the slot. Dense weights
// (the activation dtype) stream as 16 KiB runs of 16-byte packs; weight-only
// quantized ones (int4 / int8, ops/quant_layout.h) as 16-row windows that
// tensor-core mma consumes, their scales staged in shared memory up front.
#pragma once

#include "cuda/cuda_decode_layer.cuh"
#include "cuda/cuda_quant.cuh"

namespace el::cuda::decode {

// ---- dense weights -----------------------------------------------------------------------
// The block's five weight ranges in stream order (qkv, o, gate, up, down).
struct Segment {
  const unsigned char* p;
  int64_t bytes;
};
struct Stream {
  Segment seg[5];
};

// The producer (one lane): every tile of every segment into the ring, a slot
// reused only after the consumers released it.
__device__ inline void produce(const Stream& s, unsigned char* ring, uint64_t* full, uint64_t* empty) {
  unsigned tile = 0;
  for (int k = 0; k < 5; ++k) {
    for (int64_t off = 0; off < s.seg[k].bytes; off += kTileBytes, ++tile) {
      const int64_t rem = s.seg[k].bytes - off;
      const unsigned n = static_cast<unsigned>(rem < kTileBytes ? rem : kTileBytes);
      const unsigned slot = tile % kStages, round = tile / kStages;
      if (round > 0) mbar_wait(&empty[slot], (round - 1) & 1);
      mbar_expect_tx(&full[slot], n);
      bulk_copy(ring + slot * kTileBytes, s.seg[k].p + off, n, &full[slot]);
    }
  }
}

// The consumers' side of one segment: rowsum[row] += W[row] . vec for the
// segment's rows (row 0 = its first), K inputs per row. A warp takes a
// contiguous run of a tile's packs; its running sum goes to shared memory
// (atomicAdd) when its row changes. tile: the stream position (advanced).
template <class T>
__device__ void consume_gemv(const Segment& sg, int k, const T* vec, float* rowsum,
                             const unsigned char* ring, uint64_t* full, uint64_t* empty,
                             unsigned& tile) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kp = k / 8;  // packs per row
  const uint4* xv = reinterpret_cast<const uint4*>(vec);
  int cur = -1;
  float acc = 0.f;
  for (int64_t off = 0; off < sg.bytes; off += kTileBytes, ++tile) {
    const int64_t rem = sg.bytes - off;
    const int packs = static_cast<int>((rem < kTileBytes ? rem : kTileBytes) / 16);
    const unsigned slot = tile % kStages;
    mbar_wait(&full[slot], (tile / kStages) & 1);
    const uint4* wt = reinterpret_cast<const uint4*>(ring + slot * kTileBytes);
    const int groups = (packs + 31) / 32;
    const int g0 = groups * warp / kWarps, g1 = groups * (warp + 1) / kWarps;
    const int q_base = static_cast<int>(off / 16);
    // The lane's row and offset in it, by one division per tile; the warp's
    // groups are consecutive, so each later group moves at most a few rows.
    int row = (q_base + g0 * 32 + lane) / kp;
    int rel = q_base + g0 * 32 + lane - row * kp;
    for (int gi = g0; gi < g1; ++gi, rel += 32) {
      while (rel >= kp) {
        rel -= kp;
        ++row;
      }
      const int q = gi * 32 + lane;
      const bool valid = q < packs;
      const int row0 = __shfl_sync(0xffffffffu, row, 0);
      const bool uniform = __all_sync(0xffffffffu, !valid || row == row0);
      if (!uniform || row0 != cur) {
        const float t = warp_sum(acc);
        if (lane == 0 && cur >= 0) atomicAdd(&rowsum[cur], t);
        acc = 0.f;
        cur = row0;
      }
      const float prod = valid ? dot8<T>(wt[q], xv[rel], 0.f) : 0.f;
      if (uniform) {
        acc += prod;
      } else if (valid) {
        atomicAdd(&rowsum[row], prod);  // a run across a row end (K % 256 != 0)
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[slot]);
  }
  const float t = warp_sum(acc);
  if (lane == 0 && cur >= 0) atomicAdd(&rowsum[cur], t);
}

// ---- weight-only quantized weights (ops/quant_layout.h) -----------------------------------
// A segment's rows stream as windows of 16 rows x up to kSpan bytes (one slot
// each): the bulk copies put row i of the window at i x kRowStride, so a warp
// reads a k-block (64 bytes of 16 rows) as the A operand of m16n8k16 mma
// exactly as the layered tensor-core GEMV does (cuda_quant.cuh: each lane
// loads chunk t of rows g and g + 8 and dequantises in registers); the x
// vector from shared memory is B, the same in all 8 columns. Rows of a
// window past the segment's end hold stale bytes: their outputs are dropped.
struct QSeg {
  const unsigned char* w;    // qweight of the block's first row (global; producer)
  const uint16_t* scales;    // f16 scales of the block's rows (shared; consumers)
  const uint8_t* zeros;      // zero points (shared) or nullptr (symmetric)
  int rows, row_bytes, groups;
};

// The producer warp: every window of every segment into the ring, lane i
// copying row i of the window; lane 0 arms the slot with the window's bytes.
__device__ inline void produce_quant(const QSeg (&seg)[5], unsigned char* ring, uint64_t* full,
                                     uint64_t* empty) {
  const int lane = threadIdx.x & 31;
  unsigned tile = 0;
  for (int k = 0; k < 5; ++k) {
    const QSeg& s = seg[k];
    for (int r0 = 0; r0 < s.rows; r0 += 16) {
      const int nrows = min(16, s.rows - r0);
      for (int off = 0; off < s.row_bytes; off += kSpan, ++tile) {
          const unsigned n = static_cast<unsigned>(min(kSpan, s.row_bytes - off));
        const unsigned slot = tile % kStages, round = tile / kStages;
        if (round > 0) mbar_wait(&empty[slot], (round - 1) & 1);
        if (lane == 0) mbar_expect_tx(&full[slot], n * static_cast<unsigned>(nrows));
        __syncwarp();
        if (lane < nrows) {
          bulk_copy(ring + slot * kQuantSlotBytes + lane * kRowStride,
                    s.w + int64_t{r0 + lane} * s.row_bytes + off, n, &full[slot]);
        }
      }
    }
  }
}

// The scale (and zero point) of `row`, group `grp`, in the form the dequant takes.
template <class T, int BITS>
__device__ __forceinline__ quant::QScale stage_scale(const QSeg& s, int row, int grp, int sym_zero) {
  const int i = row * s.groups + grp;
  return quant::make_scale<T, BITS>(s.scales[i], s.zeros ? static_cast<int>(s.zeros[i]) : sym_zero);
}

// rowsum[row] += dequant(W[row]) . vec over the segment's rows. Warp w takes
// k-blocks w, w + kWarps, ... of each tile (a span has 16); a window's row sums
// stay in the mma accumulators across its spans and go to shared memory once.
template <class T, int BITS>
__device__ void consume_quant(const QSeg& s, const T* vec, float* rowsum, const unsigned char* ring,
                              uint64_t* full, uint64_t* empty, unsigned& tile, int group_size,
                              int sym_zero) {
  constexpr int KC = quant::Layout<BITS>::KC, XU = quant::Layout<BITS>::XU;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  for (int r0 = 0; r0 < s.rows; r0 += 16) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    // (rows past the end read a valid row's scale: their sums are dropped)
    const int r_lo = min(r0 + g, s.rows - 1), r_hi = min(r0 + g + 8, s.rows - 1);
    for (int off = 0; off < s.row_bytes; off += kSpan, ++tile) {
      const unsigned slot = tile % kStages;
      const int nkb = min(kSpan, s.row_bytes - off) >> 6;
      mbar_wait(&full[slot], (tile / kStages) & 1);
      for (int kb = warp; kb < nkb; kb += kWarps) {
        const unsigned char* base = ring + slot * kQuantSlotBytes + kb * 64 + t * 16;
        uint32_t wlo[4], whi[4];
        quant::lds16(base + g * kRowStride, wlo);
        quant::lds16(base + (g + 8) * kRowStride, whi);
        const int c = (off + kb * 64 + t * 16) >> 4;  // the lane's 16-byte chunk of the row
        const int grp = c * KC / group_size;
        const quant::QScale slo = stage_scale<T, BITS>(s, r_lo, grp, sym_zero);
        const quant::QScale shi = stage_scale<T, BITS>(s, r_hi, grp, sym_zero);
        uint32_t xv[XU][4];
#pragma unroll
        for (int i = 0; i < XU; ++i) quant::lds16(vec + c * KC + 8 * i, xv[i]);
#pragma unroll
        for (int unit = 0; unit < XU; ++unit) {
#pragma unroll
          for (int sub = 0; sub < 2; ++sub) {
            const int wi = quant::word_of<BITS>(unit, sub);
            uint32_t af[4], b0, b1;
            quant::make_a<T, BITS>(af, wlo[wi], whi[wi], sub, slo, shi);
            quant::make_b<BITS>(b0, b1, xv[unit], sub);
            quant::mma16816<T>(acc, af, b0, b1);
          }
        }
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[slot]);
    }
    // D column 0 (the token): rows g (acc[0]) and g + 8 (acc[2]) in lanes t = 0.
    if (t == 0 && warp < (min(kSpan, s.row_bytes) >> 6)) {  // (other warps took no k-block)
      if (r0 + g < s.rows) atomicAdd(&rowsum[r0 + g], acc[0]);
      if (r0 + g + 8 < s.rows) atomicAdd(&rowsum[r0 + g + 8], acc[2]);
    }
  }
}

// Every consumer thread: cp.async of the segments' scales (and zero points)
// into `stage` (4 bytes each, from the 4-byte boundary below a segment's
// first byte; the host checks the tensors' sizes are multiples of 4), setting
// seg[k].scales / zeros to the block's first row there. The kernel commits
// the copies and waits for them before the first consume_quant.
// (issue: whether this thread copies; every thread gets the same pointers)
__device__ __forceinline__ const unsigned char* stage_rows(unsigned char*& cursor, const void* src,
                                                           int64_t first_byte, int64_t bytes,
                                                           bool issue) {
  const int64_t a0 = first_byte & ~int64_t{3}, a1 = (first_byte + bytes + 3) & ~int64_t{3};
  const auto* s = static_cast<const unsigned char*>(src);
  if (issue) {
    for (int64_t i = threadIdx.x * 4; i < a1 - a0; i += 4 * kThreads)
      cp_async4(smem_addr(cursor + i), s + a0 + i, true);
  }
  const unsigned char* first = cursor + (first_byte - a0);
  cursor += (a1 - a0 + 15) & ~int64_t{15};
  return first;
}

}  // namespace el::cuda::decode
