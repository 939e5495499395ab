// Direct binary convolution (format v2 conv front), one image at a time, without windows copied to patch rows and
// without int32 accumulators written to memory: each position's channel bits are OR-ed straight into its pooling
// window's word.
//
// The filters are expanded at model load to signed bytes w ∈ {+1, −1} (0 past the window and past the last channel)
// in groups of 4 taps of one kernel row: group (ky, j) holds taps kx = 4j … 4j + 3 of row ky, for every channel:
// `[group][channel block][lane][4]`. The activations of a group are then 4 consecutive bytes of the padded image,
// read in place and broadcast to every lane; one u8 × s8 dot-product instruction adds 4 taps of 16 (or 8) channels:
//
//   VNNI:       `vpdpbusd` on 512-bit lanes, 16 channels × 4 taps into int32.
//   AVX-512BW:  `vpmaddubsw` (pairs of u8 × s8 into int16) on 512-bit lanes, summed in int16 over the window, then
//               `vpmaddwd` by 1 into int32 once per position.
//   AVX2:       for k ≤ 11, one int16 lane per channel (16 channels per block): groups of 2 taps of one kernel row,
//               2 bytes broadcast, `vpmaddubsw` adds both taps of 16 channels into their int16 sums, and the
//               thresholds are compared in int16 (`vpcmpgtw`, then `vpacksswb` + `vpmovmskb` give 32 channels'
//               bits at once: the channels of two blocks are laid out in the order that packing produces).
//               For k ≥ 12 (where a channel's int16 sum could overflow) the AVX-512BW scheme on 256-bit lanes,
//               8 channels per block, in passes of at most 6 blocks.
//
// int16 sums are exact. 4-tap groups: each int16 lane adds 2 taps per group, k·ceil(k/4)·2 ≤ 120 taps for k ≤ 15,
// each |q·w| ≤ 255, so |sum| ≤ 30 600 < 32 767. 2-tap groups (AVX2, k ≤ 11): a lane adds a channel's k² ≤ 121 taps,
// |sum| ≤ 30 855. `vpmaddubsw`'s pair sums (≤ 510) never saturate. Then bit c of the position's word is
// `a_c ≥ threshold_c`, the format's rule, compared in int32 (in int16 for the 2-tap groups, the thresholds clamped
// to int16, which changes no comparison since |a_c| ≤ 30 855).
//
// 2-bit filters (format v5, w = 2·h + l ∈ {−3, −1, 1, 3}) are the same signed bytes with |w| ≤ 3: a pair sum ≤ 1 530
// still never saturates; the int16 sums stay exact for 2-tap groups with k ≤ 6 (36 taps × 765 = 27 540) and for
// 4-tap groups with k ≤ 8 (k·ceil(k/4)·2 = 32 taps × 765 = 24 480), so AVX2 takes the word layout to k = 6, the
// 8-lane scheme for k = 7 and 8, and the int16 paths do not run 2-bit filters with k ≥ 9 (`bf_conv_direct_fits`:
// the model then runs the conv as windows through the stem kernels); VNNI's int32 sums take any k.
#include <string.h>
#include <limits.h>
#include "bf_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define BF_X86 1
#endif

// AVX2 with k ≤ 11 (2-bit filters: k ≤ 6): 2-tap groups, one int16 lane per channel, 16 channels per block (see
// above).
#define BF_CONV_WORD_MAX_K 11
#define BF_CONV_WORD_MAX_K_2BIT 6
#define BF_CONV_INT16_MAX_K_2BIT 8

// The channel in lane l of block b (word layout), so that `vpacksswb` of blocks 2p and 2p + 1 followed by
// `vpmovmskb` yields channels 32p … 32p + 31 as bits 0 … 31: packing interleaves the two blocks by 128-bit halves
// (block 2p's lanes 0–7, block 2p + 1's lanes 0–7, then both blocks' lanes 8–15). A last block without a partner is
// packed with itself and holds channels 32p + l in order.
static long conv_word_channel(long b, long l, long blocks) {
    const long p = b / 2;
    if ((blocks & 1) && b == blocks - 1) return 32 * p + l;
    return 32 * p + (l < 8 ? 0 : 16) + 8 * (b & 1) + (l & 7);
}

// A path's packed layout for `channels` filters of k × k: `lanes` channels per block of `blocks`, `taps` taps of a
// kernel row per group, `gr` groups per row; the weights are [k·gr groups][blocks][lanes][taps] signed bytes, then
// one threshold per lane of `tbytes` bytes (int16 in the word layout, else int32).
typedef struct {
    int word;
    long lanes, taps, tbytes, blocks, gr;
} conv_layout;

static conv_layout conv_layout_of(int path, long channels, long k, long bits) {
    conv_layout c;
    c.word = path == BF_CONV_AVX2 && k <= (bits == 2 ? BF_CONV_WORD_MAX_K_2BIT : BF_CONV_WORD_MAX_K);
    c.lanes = c.word ? 16 : path == BF_CONV_AVX2 ? 8 : 16;
    c.taps = c.word ? 2 : 4;
    c.tbytes = c.word ? (long)sizeof(int16_t) : (long)sizeof(int32_t);
    c.blocks = (channels + c.lanes - 1) / c.lanes;
    c.gr = (k + c.taps - 1) / c.taps;
    return c;
}

static long conv_weight_bytes(conv_layout c, long k) { return k * c.gr * c.blocks * c.lanes * c.taps; }

int bf_conv_direct_supported(int path) {
#if BF_X86
    __builtin_cpu_init();
    switch (path) {
    case BF_CONV_AVX2: return __builtin_cpu_supports("avx2") ? 1 : 0;
    case BF_CONV_AVX512BW: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
    case BF_CONV_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni") ? 1 : 0;
    default: return 0;
    }
#else
    (void)path;
    return 0;
#endif
}

int bf_conv_direct_fits(int path, long k, long bits) {
    if (bits == 1) return 1;
    return bits == 2 && (path == BF_CONV_VNNI || k <= BF_CONV_INT16_MAX_K_2BIT);
}

long bf_conv_direct_bytes(int path, long channels, long k, long bits) {
    const conv_layout c = conv_layout_of(path, channels, k, bits);
    return conv_weight_bytes(c, k) + c.blocks * c.lanes * c.tbytes;
}

static inline int conv_bit(const uint64_t *row, long t) { return (int)((row[t / 64] >> (t % 64)) & 1); }

void bf_conv_direct_pack(int path, const uint64_t *wbits, long words, long bits, const int32_t *threshold,
                         long channels, long k, uint8_t *dst) {
    const conv_layout L = conv_layout_of(path, channels, k, bits);
    int8_t *w = (int8_t *)dst;
    for (long ky = 0; ky < k; ky++)
        for (long j = 0; j < L.gr; j++)
            for (long b = 0; b < L.blocks; b++)
                for (long l = 0; l < L.lanes; l++)
                    for (long i = 0; i < L.taps; i++) {
                        const long c = L.word ? conv_word_channel(b, l, L.blocks) : b * L.lanes + l;
                        const long kx = L.taps * j + i, t = ky * k + kx;
                        int8_t v = 0;
                        if (c < channels && kx < k) {
                            const uint64_t *row = wbits + c * words;
                            v = conv_bit(row, t) ? 1 : -1;
                            // 2-bit: w = 2·h + l, h bit t, l bit 2k² + t (the row's third copy)
                            if (bits == 2) v = (int8_t)(2 * v + (conv_bit(row, 2 * k * k + t) ? 1 : -1));
                        }
                        *w++ = v;
                    }
    uint8_t *thr = dst + conv_weight_bytes(L, k);
    for (long b = 0; b < L.blocks; b++)
        for (long l = 0; l < L.lanes; l++) {
            const long c = L.word ? conv_word_channel(b, l, L.blocks) : b * L.lanes + l;
            if (L.word) {
                // clamped to int16: no comparison changes, since |a_c| ≤ 30 855 (see above)
                const int32_t t = c < channels ? threshold[c] : INT16_MAX;
                const int16_t v = (int16_t)(t > INT16_MAX ? INT16_MAX : t < INT16_MIN ? INT16_MIN : t);
                memcpy(thr, &v, sizeof v);
            } else {
                const int32_t v = c < channels ? threshold[c] : INT32_MAX;
                memcpy(thr, &v, sizeof v);
            }
            thr += L.tbytes;
        }
}

// The image shifted right by `shift` inside a zero border of `pad`, row stride W + 2·pad, with 16 bytes of zero
// slack after it: the last group of a window row may read up to 3 bytes past it (their weights are 0).
static void padded_image(const uint8_t *x, long H, long W, long pad, int shift, uint8_t *img) {
    const long Wp = W + 2 * pad;
    memset(img, 0, (size_t)((H + 2 * pad) * Wp + 16));
#if BF_X86
    // 16 pixels at a time (SSE2, every x86-64): 16-bit shifts, then the bits that crossed from the neighbouring byte
    // masked off; a row's last 16 overlap the previous ones (the source is read, never the destination)
    const __m128i count = _mm_cvtsi32_si128(shift), mask = _mm_set1_epi8((char)(0xFF >> shift));
    if (W >= 16) {
        for (long y = 0; y < H; y++) {
            uint8_t *dst = img + (y + pad) * Wp + pad;
            const uint8_t *src = x + y * W;
            for (long xx = 0;; xx += 16) {
                if (xx > W - 16) xx = W - 16;
                const __m128i v = _mm_loadu_si128((const __m128i *)(src + xx));
                _mm_storeu_si128((__m128i *)(dst + xx), _mm_and_si128(_mm_srl_epi16(v, count), mask));
                if (xx == W - 16) break;
            }
        }
        return;
    }
#endif
    for (long y = 0; y < H; y++) {
        uint8_t *dst = img + (y + pad) * Wp + pad;
        const uint8_t *src = x + y * W;
        for (long xx = 0; xx < W; xx++) dst[xx] = (uint8_t)(src[xx] >> shift);
    }
}

static inline int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if BF_X86
static inline int16_t load2(const uint8_t *p) {
    int16_t v;
    memcpy(&v, p, 2);
    return v;
}

// NB channel blocks and POS neighbouring positions per step, compile-time constants so that the accumulators live
// in registers. Positions past the last whole pooling window are skipped (the format drops them). The positions of a
// step share each weight load and give the core POS × NB independent accumulator chains: one position alone left
// the `vpdpbusd` latency exposed (twice as slow on the Xeon), and with up to 32 channels two still did a little
// (single-thread microbenchmark, 32 channels 4 × 4 stride 2: four positions 1.04–1.28× faster than two with VNNI,
// 1.06–1.07× with AVX-512BW; with 64 channels 0.95–1.06×, so two are kept there, and on AVX2, whose 16 registers
// would not hold the accumulators). The positions are one pointer and constant offsets: a pointer per position was
// 0.86–0.93× as fast. A row's whole steps run without a per-position test; a short last step reads its first
// position for the missing ones and keeps only its own. When a step fills one pooling cell (pool == POS, as in
// 2 × 2 pooling with 2 positions) its bits are OR-ed together and into the cell once.
// The tap groups are K kernel rows of GR groups of TAPS taps, at constant offsets from the step's row pointer, when
// the kernel width K is a compile-time constant (the widths models use), else one flat loop over `G` offsets into
// the padded image (`goff`: row ky, group j at ky·Wp + j·TAPS). On an AMD EPYC Zen 3 (one 28 × 28 image, 4 × 4
// filters, stride 2, pool 2, AVX2 word layout, best of 40 runs) the constant width and the whole steps together
// took 16 / 32 / 64 channels from 0.97 / 1.18 / 2.02 µs to 0.69 / 0.95 / 1.80 µs, each alone about half of that: the
// old loop was bound by the instructions around the `vpmaddubsw`s, not by them (this core runs 1.5–1.6 of them per
// cycle with their adds and broadcasts, the old loop 0.8–1.0). The weights are `gs` blocks apart per group (all of
// the model's blocks; a call covers NB of them, starting at the ones `weights` and `thresholds` point at).
// BITS(acc[p], T) gives the position's channel bits of the call's blocks, from bit 0; `bit0` is the bit of the
// call's first channel.
#define BF_CONV_POS(NB) ((NB) <= 2 ? 4 : 2)
#define BF_CONV_GROUP(NB, POS, BCAST, STEP, OFF, SG)                                                                  \
    {                                                                                                                 \
        VEC_T a[POS];                                                                                                 \
        for (int p = 0; p < POS; p++) a[p] = BCAST((SG) + OFF(p));                                                    \
        for (int b = 0; b < NB; b++)                                                                                  \
            for (int p = 0; p < POS; p++) acc[p][b] = STEP(acc[p][b], a[p], wg[b]);                                   \
    }
#define BF_CONV_STEP(NB, POS, K, TAPS, ZERO, BCAST, STEP, BITS, OFF)                                                  \
    {                                                                                                                 \
        ACC_T acc[POS][NB];                                                                                           \
        for (int p = 0; p < POS; p++)                                                                                 \
            for (int b = 0; b < NB; b++) acc[p][b] = ZERO;                                                            \
        const VEC_T *wg = W;                                                                                          \
        if (K > 0) {                                                                                                  \
            for (int ky = 0; ky < K; ky++)                                                                            \
                for (int j = 0; j < (K + TAPS - 1) / TAPS; j++, wg += gs)                                             \
                    BF_CONV_GROUP(NB, POS, BCAST, STEP, OFF, s0 + ky * Wp + TAPS * j)                                 \
        } else {                                                                                                      \
            for (long g = 0; g < G; g++, wg += gs) BF_CONV_GROUP(NB, POS, BCAST, STEP, OFF, s0 + goff[g])             \
        }                                                                                                             \
        for (int p = 0; p < POS; p++) m[p] = BITS(acc[p], T) << bit0;                                                 \
    }
#define BF_CONV_WHOLE_OFF(p) ((p) * stride)
#define BF_CONV_TAIL_OFF(p) (off[p])
#define BF_CONV_CELLS(CNT)                                                                                            \
    for (int p = 0; p < (CNT); p++) {                                                                                 \
        prow[px] |= m[p];                                                                                             \
        if (++dx == pool) { dx = 0; px++; }                                                                           \
    }
#define BF_CONV_BODY(NB, POS, K, TAPS, ZERO, BCAST, STEP, BITS)                                                       \
    const VEC_T *W = (const VEC_T *)weights, *T = (const VEC_T *)thresholds;                                          \
    for (long oy = 0; oy < Hq * pool; oy++) {                                                                         \
        uint64_t *prow = pooled + (oy / pool) * Wq;                                                                   \
        const uint8_t *row = img + oy * stride * Wp;                                                                  \
        const long end = Wq * pool;                                                                                   \
        long px = 0, dx = 0, ox = 0; /* position ox's pooling cell and its offset in it: no division */               \
        uint64_t m[POS];                                                                                              \
        for (; ox + POS <= end; ox += POS) {                                                                          \
            const uint8_t *s0 = row + ox * stride;                                                                    \
            BF_CONV_STEP(NB, POS, K, TAPS, ZERO, BCAST, STEP, BITS, BF_CONV_WHOLE_OFF)                                \
            if (pool == POS) {                                                                                        \
                uint64_t v = 0;                                                                                       \
                for (int p = 0; p < POS; p++) v |= m[p];                                                              \
                prow[px++] |= v;                                                                                      \
            } else {                                                                                                  \
                BF_CONV_CELLS(POS)                                                                                    \
            }                                                                                                         \
        }                                                                                                             \
        if (ox < end) {                                                                                               \
            const long n = end - ox;                                                                                  \
            const uint8_t *s0 = row + ox * stride;                                                                    \
            long off[POS];                                                                                            \
            for (int p = 0; p < POS; p++) off[p] = (p < n ? p : 0) * stride;                                          \
            BF_CONV_STEP(NB, POS, K, TAPS, ZERO, BCAST, STEP, BITS, BF_CONV_TAIL_OFF)                                 \
            BF_CONV_CELLS(n)                                                                                          \
        }                                                                                                             \
    }
#define BF_CONV_ARGS                                                                                                  \
    const uint8_t *img, long Wp, const long *goff, long G, long stride, long Hq, long Wq, long pool,                 \
        const void *weights, const void *thresholds, long gs, int bit0, uint64_t *pooled

// 4-tap groups, one int32 channel per LANES-wide lane: the blocks' compare masks side by side
#define BF_CONV_BITS_32(NAME, NB, MASK, FINISH)                                                                       \
    static inline uint64_t bits_##NAME(const ACC_T *acc, const VEC_T *T) {                                            \
        uint64_t m = 0;                                                                                               \
        for (int b = 0; b < NB; b++) m |= (uint64_t)MASK(FINISH(acc[b]), T[b]) << (b * LANES);                        \
        return m;                                                                                                     \
    }

#define VEC_T __m512i
#define ACC_T __m512i
#define LANES 16
#define BCAST4_512(p) _mm512_set1_epi32(load4(p))
#define DP_STEP(acc, a, w) _mm512_dpbusd_epi32(acc, a, w)
#define ID(x) (x)
#define GE16(a, t) _mm512_cmpge_epi32_mask(a, t)
#define VNNI_KERNEL(NB)                                                                                               \
    __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) BF_CONV_BITS_32(vnni_##NB, NB, GE16, ID)    \
    __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void conv_vnni_##NB(BF_CONV_ARGS) {               \
        BF_CONV_BODY(NB, BF_CONV_POS(NB), 0, 4, _mm512_setzero_si512(), BCAST4_512, DP_STEP, bits_vnni_##NB)          \
    }
VNNI_KERNEL(1)
VNNI_KERNEL(2)
VNNI_KERNEL(3)
VNNI_KERNEL(4)

#define BW_STEP(acc, a, w) _mm512_add_epi16(acc, _mm512_maddubs_epi16(a, w))
#define BW_FINISH(acc) _mm512_madd_epi16(acc, _mm512_set1_epi16(1))
#define BW_KERNEL(NB)                                                                                                 \
    __attribute__((target("avx512f,avx512bw"), always_inline)) BF_CONV_BITS_32(bw_##NB, NB, GE16, BW_FINISH)          \
    __attribute__((target("avx512f,avx512bw"))) static void conv_bw_##NB(BF_CONV_ARGS) {                            \
        BF_CONV_BODY(NB, BF_CONV_POS(NB), 0, 4, _mm512_setzero_si512(), BCAST4_512, BW_STEP, bits_bw_##NB)            \
    }
BW_KERNEL(1)
BW_KERNEL(2)
BW_KERNEL(3)
BW_KERNEL(4)
#undef VEC_T
#undef ACC_T
#undef LANES

#define VEC_T __m256i
#define ACC_T __m256i
#define LANES 8
#define BCAST4_256(p) _mm256_set1_epi32(load4(p))
#define BCAST2_256(p) _mm256_set1_epi16(load2(p))
#define AVX2_STEP(acc, a, w) _mm256_add_epi16(acc, _mm256_maddubs_epi16(a, w))
#define AVX2_FINISH(acc) _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
// a ≥ t ⇔ not (t > a): the 8 lanes' sign bits of t > a, inverted
#define GE8(a, t) ((uint8_t)~_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t, a))))
#define AVX2_KERNEL(NB)                                                                                               \
    __attribute__((target(BF_AVX2_TARGET), always_inline)) BF_CONV_BITS_32(avx2_##NB, NB, GE8, AVX2_FINISH)           \
    __attribute__((target(BF_AVX2_TARGET))) static void conv_avx2_##NB(BF_CONV_ARGS) {                              \
        BF_CONV_BODY(NB, 2, 0, 4, _mm256_setzero_si256(), BCAST4_256, AVX2_STEP, bits_avx2_##NB)                      \
    }
AVX2_KERNEL(1)
AVX2_KERNEL(2)
AVX2_KERNEL(3)
AVX2_KERNEL(4)
AVX2_KERNEL(5)
AVX2_KERNEL(6)

// 2-tap groups (word layout, k ≤ 11): 16 int16 channels per block. Blocks 2p and 2p + 1 compare, pack to bytes
// and give 32 channels' bits in one `vpmovmskb` (inverted: the compare is t > a); a last odd block is packed with
// itself, its bits 0–7 and 16–23 are its channels. Two positions per step for every block count: on an AMD EPYC
// Zen 3 (one 28 × 28 image, 4 × 4 filters, stride 2, pool 2, in a loop) 16 channels took 0.98 µs with 2 positions
// and 1.01 with 4, 32 channels 1.22 and 1.30, 48 and 64 channels 1.76 / 2.06 µs with 2 and 1.84 / 2.60 with 3.
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline uint64_t word_bits(const __m256i *acc, const __m256i *T, int nb) {
    uint64_t m = 0;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const __m256i lt0 = _mm256_cmpgt_epi16(T[b], acc[b]), lt1 = _mm256_cmpgt_epi16(T[b + 1], acc[b + 1]);
        m |= (uint64_t)(uint32_t)~_mm256_movemask_epi8(_mm256_packs_epi16(lt0, lt1)) << (16 * b);
    }
    if (b < nb) {
        const __m256i lt = _mm256_cmpgt_epi16(T[b], acc[b]);
        const uint32_t v = (uint32_t)~_mm256_movemask_epi8(_mm256_packs_epi16(lt, lt));
        m |= (uint64_t)((v & 0xFFu) | ((v >> 8) & 0xFF00u)) << (16 * b);
    }
    return m;
}
// Word-layout kernels for any width k ≤ 11 (K = 0: the offset table) and for the widths 3, 4 and 5 as constants.
#define AVX2W_KERNEL(NB, K)                                                                                           \
    __attribute__((target(BF_AVX2_TARGET))) static void conv_avx2w_##NB##_k##K(BF_CONV_ARGS) {                        \
        BF_CONV_BODY(NB, 2, K, 2, _mm256_setzero_si256(), BCAST2_256, AVX2_STEP, bits_avx2w_##NB)                     \
    }
#define AVX2W_BITS(NB)                                                                                                \
    __attribute__((target(BF_AVX2_TARGET), always_inline))                                                          \
    static inline uint64_t bits_avx2w_##NB(const __m256i *acc, const __m256i *T) { return word_bits(acc, T, NB); }
#define AVX2W_KERNELS(NB)                                                                                             \
    AVX2W_BITS(NB)                                                                                                    \
    AVX2W_KERNEL(NB, 0)                                                                                               \
    AVX2W_KERNEL(NB, 3)                                                                                               \
    AVX2W_KERNEL(NB, 4)                                                                                               \
    AVX2W_KERNEL(NB, 5)
AVX2W_KERNELS(1)
AVX2W_KERNELS(2)
AVX2W_KERNELS(3)
AVX2W_KERNELS(4)
#undef VEC_T
#undef ACC_T
#undef LANES
#endif

int bf_conv_direct(int path, const uint8_t *x, long H, long W, long k, long bits, long stride, long pad, long Ho,
                   long Wo, long pool, int shift, const uint8_t *packed, long channels, uint8_t *work,
                   uint64_t *pooled) {
    if (!bf_conv_direct_supported(path) || channels < 1 || channels > 64 || k < 1 || k > 15 || pool < 1 ||
        !bf_conv_direct_fits(path, k, bits))
        return 0;
#if BF_X86
    const long Wp = W + 2 * pad, Hq = Ho / pool, Wq = Wo / pool;
    memset(pooled, 0, (size_t)(Hq * Wq) * sizeof(uint64_t));
    padded_image(x, H, W, pad, shift, work);
    typedef void (*kernel_fn)(BF_CONV_ARGS);
    // the tap groups' offsets in the padded image: row ky, group j (2 or 4 taps wide)
    const conv_layout L = conv_layout_of(path, channels, k, bits);
    const long G = k * L.gr, nb = L.blocks;
    long goff[15 * 8];
    for (long ky = 0; ky < k; ky++)
        for (long j = 0; j < L.gr; j++) goff[ky * L.gr + j] = ky * Wp + j * L.taps;
    const uint8_t *thresholds = packed + conv_weight_bytes(L, k);
    if (L.word) {
        // [k − 2] for the widths compiled as constants, [0] for the others
        static const kernel_fn avx2w[4][4] = {
            {conv_avx2w_1_k0, conv_avx2w_2_k0, conv_avx2w_3_k0, conv_avx2w_4_k0},
            {conv_avx2w_1_k3, conv_avx2w_2_k3, conv_avx2w_3_k3, conv_avx2w_4_k3},
            {conv_avx2w_1_k4, conv_avx2w_2_k4, conv_avx2w_3_k4, conv_avx2w_4_k4},
            {conv_avx2w_1_k5, conv_avx2w_2_k5, conv_avx2w_3_k5, conv_avx2w_4_k5},
        };
        const long kc = k >= 3 && k <= 5 ? k - 2 : 0;
        avx2w[kc][nb - 1](work, Wp, goff, G, stride, Hq, Wq, pool, packed, thresholds, nb, 0, pooled);
        return 1;
    }
    static const kernel_fn avx2[6] = {conv_avx2_1, conv_avx2_2, conv_avx2_3, conv_avx2_4, conv_avx2_5, conv_avx2_6};
    static const kernel_fn bw[4] = {conv_bw_1, conv_bw_2, conv_bw_3, conv_bw_4};
    static const kernel_fn vnni[4] = {conv_vnni_1, conv_vnni_2, conv_vnni_3, conv_vnni_4};
    if (path == BF_CONV_AVX2) {
        // Passes of at most 6 blocks, as even as possible: 2 positions × 8 blocks of accumulators are more than
        // AVX2's 16 registers hold and were spilled. On an AMD EPYC Zen 3 (interleaved rounds, batch 256) 64 channels
        // in two passes of 4 blocks ran the model 1.03-1.36x faster than one pass of 8 (1.36x against the same code
        // with a run-time group stride), and 48 channels in one pass of 6 1.07x faster than passes of 4 and 2.
        const long passes = (nb + 5) / 6, per = (nb + passes - 1) / passes;
        for (long b0 = 0; b0 < nb; b0 += per) {
            const long pb = nb - b0 < per ? nb - b0 : per;
            avx2[pb - 1](work, Wp, goff, G, stride, Hq, Wq, pool, packed + b0 * L.lanes * L.taps,
                         thresholds + b0 * L.lanes * L.tbytes, nb, (int)(b0 * L.lanes), pooled);
        }
        return 1;
    }
    const kernel_fn run = path == BF_CONV_VNNI ? vnni[nb - 1] : bw[nb - 1];
    run(work, Wp, goff, G, stride, Hq, Wq, pool, packed, thresholds, nb, 0, pooled);
    return 1;
#else
    (void)x; (void)H; (void)W; (void)stride; (void)pad; (void)Ho; (void)Wo; (void)shift; (void)packed;
    (void)work; (void)pooled;
    return 0;
#endif
}
