// cuda_decode_stream.cuh — internal to cuda_decode_layer.cu (and to
// cuda_stream_gemv.cu, the one-token quantized GEMV on the same stream): the
// layer kernel's weight stream. A producer warp copies a block's weight rows for the
// whole layer (five row ranges: qkv, o, gate, up, down) into a ring of
// STAGES shared-memory slots with bulk copies, each slot
// completing on an mbarrier; the consumer warps take each slot's weights, dot
// them with the activation vector in shared memory on tensor cores and
// release the slot. Dense weights (the activation dtype) and weight-only
// quantized ones (int4 / int8, ops/quant_layout.h, their scales staged in
// shared memory a layer ahead with the norms' weights: stage_layer) stream
// the same way, as 16-row windows.
#pragma once

#include "cuda/cuda_decode_layer.cuh"
#include "cuda/cuda_quant.cuh"

namespace el::cuda::decode {

// ---- the stream ---------------------------------------------------------------------------
// A segment's rows stream as windows of 16 rows x up to kSpan bytes (one slot
// each): the bulk copies put row i of the window at i x kRowStride, so a warp
// reads a k-block (64 bytes of 16 rows) as the A operand of m16n8k16 mma: each
// lane loads chunk t of rows g and g + 8 (16 bytes each; dequantised in
// registers for int4 / int8 as the layered tensor-core GEMV does,
// cuda_quant.cuh), the x vector from shared memory is B, the same in all 8
// columns. One mma takes 256 weights, so the consumers' instructions per
// byte are a tenth of the CUDA-core dot products this replaced, which bound
// every phase (session 20: skipping their arithmetic took a layer from 61 to
// 50 us). Rows of a window past the segment's end hold stale bytes: their
// outputs are dropped (mma rows are independent).
struct RowSeg {
  // quantized: the f16 scales / u8 zero points of the block's rows, as byte
  // offsets from the shared-memory base (stage_layer); -1: none (dense, or
  // symmetric). Offsets, not pointers: a pointer read back from shared memory
  // loses its address space, and every scale load went through generic
  // addressing.
  int scale_off, zero_off;
  int mat;                   // the matrix: 0 qkv, 1 o, 2 gate_up, 3 down
  int row0;                  // the block's first row of it
  int rows, row_bytes, groups;
};

// The consumers' place in the ring: the slot of their next window and the
// parity of the fill they wait for there (a counter and a flip, where
// `tile % STAGES` and `tile / STAGES` cost a multiply-shift each per window).
template <int STAGES>
struct RingPos {
  unsigned slot = 0, parity = 0;
#ifdef EL_DECODE_WINDOW_TRACE
  unsigned n = 0;
#endif
  __device__ __forceinline__ void advance() {
#ifdef EL_DECODE_WINDOW_TRACE
    ++n;
#endif
    if (++slot == STAGES) {
      slot = 0;
      parity ^= 1u;
    }
  }
};

// The weight rows of matrix m of a layer (LayerPtrs order).
__device__ __forceinline__ const unsigned char* layer_matrix(const LayerPtrs& lw, int m) {
  const void* w = m == 0 ? lw.w_qkv : m == 1 ? lw.w_o : m == 2 ? lw.w_gate_up : lw.w_down;
  return static_cast<const unsigned char*>(w);
}

// Thread 0 arms the ring's mbarriers: "full" completes on the producer's
// arrival with the window's bytes, "empty" on every consumer warp's.
template <int STAGES>
__device__ __forceinline__ void init_ring(uint64_t* full, uint64_t* empty) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kWarps);
    }
    mbar_init_fence();
  }
}

// The windows of one segment into the ring from the walk's tile number
// `tile` on (w: the segment's first row): lane i copies row i of a window,
// lane 0 arms the slot with the window's bytes, after the consumers have
// handed the slot back. policy: the copies' L2 policy.
template <int STAGES>
__device__ __forceinline__ void produce_segment(const RowSeg& s, const unsigned char* w,
                                                unsigned char* ring, uint64_t* full,
                                                uint64_t* empty, uint64_t policy,
                                                unsigned& tile,
                                                unsigned long long* wtrace = nullptr,
                                                int per_layer = 1) {
  const int lane = threadIdx.x & 31;
  for (int r0 = 0; r0 < s.rows; r0 += 16) {
    const int nrows = min(16, s.rows - r0);
    for (int off = 0; off < s.row_bytes; off += kSpan, ++tile) {
      const unsigned n = static_cast<unsigned>(min(kSpan, s.row_bytes - off));
      const unsigned slot = tile % STAGES, round = tile / STAGES;
      if (round > 0) mbar_wait(&empty[slot], (round - 1) & 1);
#ifdef EL_DECODE_SKIP_STREAM
      // Timing builds only (wrong outputs; with -DEL_DECODE_SKIP_TILES): the
      // slot is marked full with no copy, so the launch runs the layers'
      // chain (hand-offs, attention, norms, ring hand-backs) with no weight
      // traffic: the floor any weight stream adds to.
      (void)n;
      (void)nrows;
      (void)w;
      (void)policy;
      if (lane == 0) mbar_arrive(&full[slot]);
#else
      if (lane == 0) mbar_expect_tx(&full[slot], n * static_cast<unsigned>(nrows));
      __syncwarp();
      if (lane < nrows) {
        bulk_copy(ring + slot * kSlotBytes + lane * kRowStride,
                  w + int64_t{r0 + lane} * s.row_bytes + off, n, &full[slot], policy);
      }
#endif
#ifdef EL_DECODE_WINDOW_TRACE
      if (wtrace && lane == 0) stamp_window(wtrace, per_layer, tile, kTraceWinIssue);
#else
      (void)wtrace;
      (void)per_layer;
#endif
    }
  }
}

// The windows of one layer's five segments (the same in every layer).
__device__ __forceinline__ int windows_per_layer(const RowSeg (&seg)[5]) {
  int n = 0;
  for (int k = 0; k < 5; ++k)
    n += ((seg[k].rows + 15) / 16) * ((seg[k].row_bytes + kSpan - 1) / kSpan);
  return n;
}

// The producer warp: every window of every segment of every layer of the
// launch into the ring. The stream runs on through the layer boundaries:
// the next layer's first windows land while this one's last phase waits for
// its inputs. Each weight byte is read once per step, so the copies are
// marked evict-first: they do not push the cache, the activations and the
// hand-off words out of L2 (measured 61.2 -> 58.8 us a layer, session 20).
// Measured and dropped (session 27): while the ring is full, starting the
// next 8-32 windows towards L2 (cp.async.bulk.prefetch.L2) so that HBM does
// not idle through the attention chain made bf16 slower (bench 911-960
// against 877-882 us a step, generate 0.956 against 0.921 ms): the
// hand-off polls queue behind the extra traffic. trace: the launch's stamps
// (layer l's at l grid kTraceSlots) or nullptr.
template <int STAGES>
__device__ void produce_rows(const RowSeg (&seg)[5], const LayerArgs& a, unsigned char* ring,
                             uint64_t* full, uint64_t* empty, unsigned long long* trace) {
  const uint64_t policy = l2_evict_first_policy();
  unsigned tile = 0;
#ifdef EL_DECODE_WINDOW_TRACE
  const int per_layer = windows_per_layer(seg);
#else
  const int per_layer = 1;
#endif
  for (int l = 0; l < a.n_layers; ++l) {
    for (int k = 0; k < 5; ++k) {
      const RowSeg& s = seg[k];
      const unsigned char* w = layer_matrix(a.layer[l], s.mat) + int64_t{s.row0} * s.row_bytes;
      produce_segment<STAGES>(s, w, ring, full, empty, policy, tile, trace, per_layer);
    }
    if (trace && (threadIdx.x & 31) == 0)
      stamp(trace + int64_t{l} * gridDim.x * kTraceSlots, kTraceProducer);
  }
}

// (w & 0x000F000F) | magic in one instruction (the compiler splits the two
// immediates into two).
__device__ __forceinline__ uint32_t nibbles_or(uint32_t w, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, 0x000F000F, %2, 0xEA;" : "=r"(r) : "r"(w), "r"(magic));
  return r;
}

// k's in a k-block of the quantized layouts (quant::Layout: int4 128, int8
// 64), and how many k-block sums prepare_input writes for an n-element input
// (none for dense weights): the kernel's xsum, sized alike by the plan.
__host__ __device__ constexpr int kblock_k(int bits) {
  return bits == 4 ? quant::Layout<4>::KB : quant::Layout<8>::KB;
}
template <class Int>
__host__ __device__ constexpr Int xsum_count(int bits, Int n) {
  return bits == 16 ? 0 : (n + kblock_k(bits) - 1) / kblock_k(bits);
}

// The magic number whose low mantissa bits take a 4-bit q exactly (128 in
// bf16, 1024 in f16), as a float and as a packed T pair.
template <class T>
constexpr float kMagic = std::is_same_v<T, __half> ? 1024.f : 128.f;
template <class T>
constexpr uint32_t kMagic2 = std::is_same_v<T, __half> ? 0x64006400u : 0x43004300u;

// A segment's fields in registers for its GEMV (the shared RowSeg would be
// reloaded after each mbarrier wait, whose memory clobber covers it), with
// its scales and zero points as pointers derived from the shared-memory base,
// so their loads are ld.shared rather than generic.
struct SegView {
  const uint16_t* scales;  // quantized: [rows, groups] f16 scales of the block's rows
  const uint8_t* zeros;    // zero points, or nullptr (symmetric or dense)
  int rows, row_bytes, groups;
};
__device__ __forceinline__ SegView seg_view(const RowSeg& s, const unsigned char* smem) {
  SegView v;
  v.scales = reinterpret_cast<const uint16_t*>(smem + max(s.scale_off, 0));
  v.zeros = s.zero_off >= 0 ? smem + s.zero_off : nullptr;
  v.rows = s.rows;
  v.row_bytes = s.row_bytes;
  v.groups = s.groups;
  return v;
}

// The B fragment of k16-step `sub` from a 16-byte unit of x that
// prepare_input put in B's order (make_b's pairing, done once a GEMV).
__device__ __forceinline__ void b_frag(uint32_t& b0, uint32_t& b1, const uint32_t (&xu)[4],
                                       int sub) {
  b0 = xu[2 * sub];
  b1 = xu[2 * sub + 1];
}

// ---- one tile: a warp's share of a 16-row window x one span --------------------------------
// Each returns the warp's sums for rows r0 + g (x) and r0 + g + 8 (y) over
// its k-block of the tile in ring slot `slot` (bytes [off, off + kSpan) of
// the rows): warp w takes k-block w (a full span has kWarps). A warp whose
// k-block lies past the row's end reads k-block 0 instead (valid shared
// memory) and returns zeros with a select, not a branch.

// Dense rows in T. The lane's chunk is 8 consecutive k of rows g and g + 8
// and of x; step `sub` pairs words 2 sub and 2 sub + 1 of each (A and B take
// the same k order, so the sum is the row's dot product). A lane whose chunk
// lies past a row end that is not a whole k-block (K % 32 != 0) zeroes its A
// (the slot's stale bytes there may be any bits).
template <class T>
__device__ __forceinline__ float2 tile_dense(const SegView& s, const unsigned char* slot, int off,
                                             const T* vec) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int cb = off + warp * 64 + t * 16;  // the lane's 16 bytes of the row
  const bool in = cb < s.row_bytes;
  const unsigned char* wb = slot + (in ? warp * 64 + t * 16 : 0);
  uint32_t wlo[4], whi[4], xv[4];
  quant::lds16(wb + g * kRowStride, wlo);
  quant::lds16(wb + (g + 8) * kRowStride, whi);
  quant::lds16(vec + (in ? cb >> 4 : 0) * 8, xv);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    wlo[i] = in ? wlo[i] : 0u;
    whi[i] = in ? whi[i] : 0u;
  }
  float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int sub = 0; sub < 2; ++sub) {
    const uint32_t af[4] = {wlo[2 * sub], whi[2 * sub], wlo[2 * sub + 1], whi[2 * sub + 1]};
    quant::mma16816<T>(d, af, xv[2 * sub], xv[2 * sub + 1]);
  }
  return make_float2(d[0], d[2]);  // D column 0 (all 8 columns are the same)
}

// int4 / int8 with every k-block inside one scale group (kb_shift >= 0: a
// group is 2^kb_shift k-blocks, of 128 k for int4, 64 for int8): the scale
// comes out of the dequant. The mma sums (magic + q) x over the k-block
// exactly (magic + a 4-bit q is an exact T) and the k-block's epilogue
// subtracts (magic + z) sum(x) (xsum: the vector's sums over k-blocks,
// prepare_input) and multiplies by the scale in f32. That leaves two integer
// ops per T pair of A (shift, one lop3) where the dequant took five more,
// which bounded the int4 phases (session 23: ~1.3 us a 16-row window).
// int8's bytes do not fit bf16's mantissa, so each byte goes in as its two
// nibbles, one mma each: q x = 16 (M + hi) x + (M + lo) x - 17 M x
// (session 24: int8 decode 5% faster than its dequant). Both take x in B's
// order from prepare_input (no byte permutes: int4 / int8 steps 2% faster),
// and int4 keeps two accumulators a k-block (a shorter chain of dependent
// mma). Rows past the segment's end read a valid row's scale (their sums are
// dropped); stale nibbles are finite, so an idle warp's zeros are a select.
template <class T, int BITS>
__device__ __forceinline__ float2 tile_post(const SegView& s, const unsigned char* slot, int r0,
                                            int off, const T* vec, const float* xsum, int kb_shift,
                                            int sym_zero) {
  constexpr int KC = quant::Layout<BITS>::KC, XU = quant::Layout<BITS>::XU;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int kb0 = off >> 6;  // the tile's first k-block of the row
  const bool valid = (kb0 + warp) * 64 < s.row_bytes;
  const int kb = valid ? warp : 0, kbg = kb0 + kb;
  const unsigned char* wb = slot + kb * 64 + t * 16;
  uint32_t wlo[4], whi[4];
  quant::lds16(wb + g * kRowStride, wlo);
  quant::lds16(wb + (g + 8) * kRowStride, whi);
  const int c = kbg * 4 + t;  // the lane's 16-byte chunk of the row
  uint32_t xv[XU][4];
#pragma unroll
  for (int i = 0; i < XU; ++i) quant::lds16(vec + c * KC + 8 * i, xv[i]);
  // the k-block's scales, zero points and sum(x)
  const int grp = kbg >> kb_shift;
  const int i_lo = min(r0 + g, s.rows - 1) * s.groups + grp;
  const int i_hi = min(r0 + g + 8, s.rows - 1) * s.groups + grp;
  const float gx = xsum[kbg];
  const float s_lo = __half2float(__ushort_as_half(s.scales[i_lo]));
  const float s_hi = __half2float(__ushort_as_half(s.scales[i_hi]));
  // the offset the mma's sums carry per unit of sum(x): int8 17 magic + z
  constexpr float kOffset = BITS == 4 ? kMagic<T> : 17.f * kMagic<T>;
  const float m_lo = kOffset + static_cast<float>(s.zeros ? s.zeros[i_lo] : sym_zero);
  const float m_hi = kOffset + static_cast<float>(s.zeros ? s.zeros[i_hi] : sym_zero);
  float sa[4] = {0.f, 0.f, 0.f, 0.f}, sb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int unit = 0; unit < XU; ++unit) {
#pragma unroll
    for (int sub = 0; sub < 2; ++sub) {
      uint32_t b0, b1;
      b_frag(b0, b1, xv[unit], sub);
      if constexpr (BITS == 4) {  // two chains of mma, by unit
        const int sh = 8 * sub;
        const uint32_t af[4] = {nibbles_or(wlo[unit] >> sh, kMagic2<T>),
                                nibbles_or(whi[unit] >> sh, kMagic2<T>),
                                nibbles_or(wlo[unit] >> (sh + 4), kMagic2<T>),
                                nibbles_or(whi[unit] >> (sh + 4), kMagic2<T>)};
        if (unit & 1) {
          quant::mma16816<T>(sb, af, b0, b1);
        } else {
          quant::mma16816<T>(sa, af, b0, b1);
        }
      } else {  // word (k0, k1, k2, k3): slots (k0, k2) then (k1, k3), as make_b<8> pairs x
        const uint32_t wl = wlo[2 * unit + sub], wh = whi[2 * unit + sub];
        const uint32_t al[4] = {nibbles_or(wl, kMagic2<T>), nibbles_or(wh, kMagic2<T>),
                                nibbles_or(wl >> 8, kMagic2<T>), nibbles_or(wh >> 8, kMagic2<T>)};
        const uint32_t ah[4] = {nibbles_or(wl >> 4, kMagic2<T>), nibbles_or(wh >> 4, kMagic2<T>),
                                nibbles_or(wl >> 12, kMagic2<T>),
                                nibbles_or(wh >> 12, kMagic2<T>)};
        quant::mma16816<T>(sa, al, b0, b1);  // low nibbles
        quant::mma16816<T>(sb, ah, b0, b1);  // high nibbles
      }
    }
  }
  const float d_lo = BITS == 4 ? sa[0] + sb[0] : fmaf(16.f, sb[0], sa[0]);
  const float d_hi = BITS == 4 ? sa[2] + sb[2] : fmaf(16.f, sb[2], sa[2]);
  const float y_lo = s_lo * fmaf(-m_lo, gx, d_lo), y_hi = s_hi * fmaf(-m_hi, gx, d_hi);
  return valid ? make_float2(y_lo, y_hi) : make_float2(0.f, 0.f);
}

// int4 / int8 of any other group size: dequantised in registers as the
// layered tensor-core GEMV does (cuda_quant.cuh), the chunk's group's scale
// applied per weight.
template <class T, int BITS>
__device__ __forceinline__ float2 tile_dequant(const SegView& s, const unsigned char* slot, int r0,
                                               int off, const T* vec, int group_size,
                                               int sym_zero) {
  constexpr int KC = quant::Layout<BITS>::KC, XU = quant::Layout<BITS>::XU;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bool valid = off + warp * 64 < s.row_bytes;
  const int kb = valid ? warp : 0;
  const unsigned char* wb = slot + kb * 64 + t * 16;
  uint32_t wlo[4], whi[4];
  quant::lds16(wb + g * kRowStride, wlo);
  quant::lds16(wb + (g + 8) * kRowStride, whi);
  const int c = (off + kb * 64 + t * 16) >> 4;  // the lane's 16-byte chunk of the row
  const int grp = c * KC / group_size;
  const auto scale = [&](int row) {
    const int i = min(row, s.rows - 1) * s.groups + grp;
    return quant::make_scale<T, BITS>(s.scales[i],
                                      s.zeros ? static_cast<int>(s.zeros[i]) : sym_zero);
  };
  const quant::QScale slo = scale(r0 + g), shi = scale(r0 + g + 8);
  uint32_t xv[XU][4];
#pragma unroll
  for (int i = 0; i < XU; ++i) quant::lds16(vec + c * KC + 8 * i, xv[i]);
  float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int unit = 0; unit < XU; ++unit) {
#pragma unroll
    for (int sub = 0; sub < 2; ++sub) {
      const int wi = quant::word_of<BITS>(unit, sub);
      uint32_t af[4], b0, b1;
      quant::make_a<T, BITS>(af, wlo[wi], whi[wi], sub, slo, shi);
      quant::make_b<BITS>(b0, b1, xv[unit], sub);
      quant::mma16816<T>(d, af, b0, b1);
    }
  }
  return valid ? make_float2(d[0], d[2]) : make_float2(0.f, 0.f);
}

// ---- the walk over a segment's tiles ------------------------------------------------------
// Where the consumer warps take the ring: the slots' mbarriers (shared
// addresses: full of slot i at full + 8 i) and the next slot and parity.
template <int STAGES>
struct RingView {
  const unsigned char* ring;
  uint32_t full, empty;
  RingPos<STAGES>* pos;
#ifdef EL_DECODE_WINDOW_TRACE
  unsigned long long* trace;
  int per_layer;
#endif
};

// wp[row] = the warp's share of W[row] . vec over the segment's rows, tile
// by tile in the ring's order (window by window, span by span): wait for the
// slot, take the tile, hand the slot back, and fold the tile's sums into the
// window's, stored once the window's last span is in (zeros by a warp that
// took no k-block of it), so no shared atomics: row_total() adds the kWarps
// shares after a consumer_sync. `tile(slot, r0, off)` is one of the tile_*.
// The walk keeps everything in registers: the segment's fields, the slot and
// its parity, the window and span (session 25: ~40 instructions a warp for a
// dense tile where the loop it replaced took ~80; bf16 decode 5% faster,
// int4 6%). Measured and dropped: two tiles a step (two independent chains
// of loads and mma) made int4 6% slower than one.
template <int STAGES, class Tile>
__device__ __forceinline__ void walk_tiles(const SegView& s, const RingView<STAGES>& rv, float* wp,
                                           Tile&& tile) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int spans = (s.row_bytes + kSpan - 1) / kSpan;
  const int n = ((s.rows + 15) >> 4) * spans;
  RingPos<STAGES>& pos = *rv.pos;
  int r0 = 0, off = 0;
  float lo = 0.f, hi = 0.f;
  for (int i = 0; i < n; ++i) {
    const unsigned slot = pos.slot;
    mbar_wait_at(rv.full + 8 * slot, pos.parity);
#ifdef EL_DECODE_WINDOW_TRACE
    if (rv.trace && threadIdx.x == 0) stamp_window(rv.trace, rv.per_layer, pos.n, kTraceWinReady);
#endif
    pos.advance();
    const float2 d = tile(rv.ring + slot * kSlotBytes, r0, off);
    __syncwarp();
    if (lane == 0) mbar_arrive_at(rv.empty + 8 * slot);
    lo += d.x;
    hi += d.y;
    off += kSpan;
    if (off >= s.row_bytes) {  // the window's last span: its sums are complete
      if (t == 0 && r0 + g < s.rows) wp[r0 + g] = lo;
      if (t == 0 && r0 + g + 8 < s.rows) wp[r0 + g + 8] = hi;
      lo = hi = 0.f;
      off = 0;
      r0 += 16;
    }
  }
}

// wpart[warp][base + row] = the warp's share of W[row] . vec over the
// segment's rows (BITS 16: dense rows in T; 4 / 8: the quantized layouts).
template <class T, int BITS, int STAGES>
__device__ void consume_rows(const RowSeg& seg, const T* vec, float* wpart, int ld, int base,
                             const RingView<STAGES>& rv, int group_size, int sym_zero,
                             const float* xsum, int kb_shift) {
  const SegView s = seg_view(seg, rv.ring);
  float* wp = wpart + (threadIdx.x >> 5) * ld + base;
#ifdef EL_DECODE_SKIP_TILES
  // Timing builds only (wrong outputs): the walk waits for and releases every
  // window but takes none of its bytes, which measures what the tiles' loads
  // and arithmetic cost (session 30: int4 426 against 550 us a step).
  if constexpr (true) {
    walk_tiles(s, rv, wp, [&](const unsigned char*, int, int) { return make_float2(0.f, 0.f); });
  } else
#endif
  if constexpr (BITS == 16) {
    walk_tiles(s, rv, wp, [&](const unsigned char* slot, int, int off) {
      return tile_dense<T>(s, slot, off, vec);
    });
  } else if (kb_shift >= 0) {
    walk_tiles(s, rv, wp, [&](const unsigned char* slot, int r0, int off) {
      return tile_post<T, BITS>(s, slot, r0, off, vec, xsum, kb_shift, sym_zero);
    });
  } else {
    walk_tiles(s, rv, wp, [&](const unsigned char* slot, int r0, int off) {
      return tile_dequant<T, BITS>(s, slot, r0, off, vec, group_size, sym_zero);
    });
  }
}

// Before a GEMV of the int4 / int8 paths with the scale after the mma
// (kb_shift >= 0): xsum[b] = the sum of vec[KB b, KB b + KB) (KB the k-block:
// 128 int4, 64 int8), and every 8-element unit of vec rewritten in place in
// the order the lanes' B fragments take it (make_b's pairing: int4 (x0, x4),
// (x1, x5), (x2, x6), (x3, x7); int8 (x0, x2), (x1, x3), (x4, x6), (x5, x7)),
// so consume_rows loads B with no byte permutes. n a multiple of 8; a
// consumer_sync before (vec written) and after.
template <class T, int BITS>
__device__ __forceinline__ void prepare_input(T* vec, int n, float* xsum) {
  constexpr int kUnits = kblock_k(BITS) / 8;  // 16-byte units a k-block
  const int lane = threadIdx.x & 31;
  for (int u0 = threadIdx.x - lane; u0 * 8 < n; u0 += kThreads) {  // a warp's 32 units
    const int u = u0 + lane;
    float v = 0.f;
    if (u * 8 < n) {
      uint4* p = reinterpret_cast<uint4*>(vec + u * 8);
      const uint4 w = *p;
      const float2 f0 = unpack2<T>(w.x), f1 = unpack2<T>(w.y), f2 = unpack2<T>(w.z),
                   f3 = unpack2<T>(w.w);
      v = ((f0.x + f0.y) + (f1.x + f1.y)) + ((f2.x + f2.y) + (f3.x + f3.y));
      if constexpr (BITS == 4) {
        *p = make_uint4(__byte_perm(w.x, w.z, 0x5410), __byte_perm(w.x, w.z, 0x7632),
                        __byte_perm(w.y, w.w, 0x5410), __byte_perm(w.y, w.w, 0x7632));
      } else {
        *p = make_uint4(__byte_perm(w.x, w.y, 0x5410), __byte_perm(w.x, w.y, 0x7632),
                        __byte_perm(w.z, w.w, 0x5410), __byte_perm(w.z, w.w, 0x7632));
      }
    }
#pragma unroll
    for (int o = kUnits / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane % kUnits == 0 && u * 8 < n) xsum[u / kUnits] = v;
  }
}

// The total of row `row` over the consumer warps' shares (after a consumer_sync).
__device__ __forceinline__ float row_total(const float* wpart, int ld, int row) {
  float sum = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += wpart[w * ld + row];
  return sum;
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

// ---- the next layer's norms and scales ---------------------------------------------------
// What of a layer stage_layer copies: one of the two parts the kernel stages
// for the next layer as soon as this layer is done with their room
// (kStageEarly after phase C: the input norm and the qkv and o scales;
// kStageLate after phase E: the post-attention norm and the gate/up and down
// scales). Each part completes on its own mbarrier, once a layer.
enum StagePart { kStageEarly, kStageLate };

// [first_byte, first_byte + bytes) of `base` (16-byte aligned) into shared
// memory at `cursor` as one bulk copy of the 16-byte aligned span around it
// (inside the tensor: the host takes only tensors whose size is a multiple
// of 16, table_ok), completing on `bar`; returns where the first byte lands
// and moves the cursor past the span. The place depends only on first_byte's
// low bits, so every layer's copies land where the first layer's did.
__device__ __forceinline__ const unsigned char* stage_span(unsigned char*& cursor, const void* base,
                                                           int64_t first_byte, int64_t bytes,
                                                           bool issue, uint64_t* bar,
                                                           uint64_t policy, unsigned& total) {
  const auto s0 = reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(first_byte);
  const uintptr_t a0 = s0 & ~uintptr_t{15}, a1 = (s0 + bytes + 15) & ~uintptr_t{15};
  const auto n = static_cast<unsigned>(a1 - a0);
  if (issue && n > 0) {
    bulk_copy(cursor, reinterpret_cast<const void*>(a0), n, bar, policy);
    total += n;
  }
  const unsigned char* first = cursor + (s0 - a0);
  cursor += n;
  return first;
}

// One thread: part `part` of layer lw's scales and zero points (quantized)
// and norm weight into shared memory by bulk copies completing on `bar`
// (armed here with their bytes; consumers wait for its next phase). The
// block's rows are the same in every layer (seg); set_seg: store where the
// scales land (the first layer), as offsets from smem (the shared-memory
// base). Why bulk copies from one thread: the staging by every thread's
// 4-byte cp.async took ~1.3 us of each int4 layer (session 31: the layer
// boundary, an int4 layer's only stretch with no hand-off, took 1.3 us
// longer than a dense one's; its loops are 64-bit and branchy, run once a
// layer from a cold instruction cache).
template <class T, int BITS>
__device__ void stage_layer(const LayerArgs& a, const LayerPtrs& lw, RowSeg* seg,
                            const unsigned char* smem, unsigned char* qstage, T* normw,
                            bool set_seg, StagePart part, uint64_t* bar) {
  const uint64_t policy = l2_evict_first_policy();
  unsigned total = 0;
  if constexpr (BITS != 16) {
    unsigned char* cursor = qstage;  // (walked over every segment: the same places each layer)
    for (int s = 0; s < 5; ++s) {  // segments 0 qkv, 1 o early; 2-4 gate, up, down late
      const bool issue = (part == kStageEarly) == (s < 2);
      const int m = seg[s].mat;
      const int64_t first = int64_t{seg[s].row0} * seg[s].groups;
      const int64_t n = int64_t{seg[s].rows} * seg[s].groups;
      const unsigned char* sc =
          stage_span(cursor, lw.scales[m], 2 * first, 2 * n, issue, bar, policy, total);
      const unsigned char* zp =
          lw.zeros[m] ? stage_span(cursor, lw.zeros[m], first, n, issue, bar, policy, total)
                      : nullptr;
      if (set_seg) {
        seg[s].scale_off = static_cast<int>(sc - smem);
        seg[s].zero_off = zp ? static_cast<int>(zp - smem) : -1;
      }
    }
  }
  const int which = part == kStageEarly ? 0 : 1;
  const unsigned norm_bytes = static_cast<unsigned>(a.C) * sizeof(T);
  bulk_copy(normw + which * a.C, which == 0 ? lw.w_in_norm : lw.w_post_norm, norm_bytes, bar,
            policy);
  // (the copies may land first: the phase completes once this arrival is in
  // and the transaction count is back at zero)
  mbar_expect_tx(bar, total + norm_bytes);
}

}  // namespace el::cuda::decode
