// Table conv (`bf_conv_table`, AVX2; the model's `table-avx2` conv kernel): the binary convolution front for the
// shape the models use, stride 2 with 2 × 2 OR-pooling and kernels up to 4 × 4, computed with tables instead of
// multiplications.
//
// A filter row of 4 taps has 16 sign patterns. For each padded image row and 16 output positions (int16 lanes), the
// 16 sums ±x0 ± x1 ± x2 ± x3 of the 4 taps each position reads from that row are built once (4 + 8 adds, 8
// negations); an output row's sum for a channel is then 4 table reads added (padded rows 2·oy + ky, each at the
// offset of the channel's pattern for kernel row ky), for 16 positions at once: 4 `vpaddw` with a memory operand
// where the multiply kernel (conv_direct.c) needs 16 taps × 16 positions / 32 = 8 `vpmaddubsw` and 8 `vpaddw`.
// Taps past k (k < 4) read a zero input.
//
// Lanes: the positions ox = 0, 2, …, 14 of an output row in lanes 0–7 and ox = 1, 3, …, 15 in lanes 8–15, so that
// the two positions of a pooling window's row are the two 128-bit halves: OR-pooling is a max (max a ≥ t ⇔ some
// a ≥ t) over the window's two rows, then over the halves. The halves of two channels are swapped into one vector
// (`vperm2i128`), so one compare serves 2 channels and one `vpacksswb` + `vpmovmskb` gives 4 channels × 8 cells.
// Those bytes (bit px = cell px) are turned into the format's words (bit c = channel c) by shifting each byte's bit
// px to its top and `vpmovmskb`: 64 channels in two instructions per cell.
//
// 2-bit filters (format v5, w = 2·h + l): each slot has the patterns of both sign planes; a row's sum is the high
// plane's entries added, doubled, plus the low plane's (8 table reads per channel and row pair instead of 4).
//
// Exact: |sum| ≤ 16 taps × 255 × 3 = 12 240 fits int16, and a threshold clamped to int16 changes no comparison.
// Limits: stride 2, pool 2, k ≤ 4, at most 8 × 8 pooled cells (Ho / 2, Wo / 2 ≤ 8), at most 64 channels.
#include <string.h>
#include <limits.h>
#include "bf_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define BF_X86 1
#endif

#define CT_MAX_CELLS 8                          // pooled cells per row and per column
#define CT_ROWS (2 * (2 * CT_MAX_CELLS - 1) + 4) // padded image rows the windows can reach: 34
#define CT_STRIDE 64                             // bytes per padded image row (reads reach column 3 + 31)

int bf_conv_table_fits(long H, long W, long k, long stride, long pad, long pool, long Ho, long Wo, long channels) {
    return stride == 2 && pool == 2 && k >= 1 && k <= 4 && pad >= 0 && pad < k && H >= 1 && W >= 1 &&
           Ho == (H + 2 * pad - k) / 2 + 1 && Wo == (W + 2 * pad - k) / 2 + 1 && Ho >= 2 && Wo >= 2 &&
           Ho / 2 <= CT_MAX_CELLS && Wo / 2 <= CT_MAX_CELLS && channels >= 1 && channels <= 64;
}

// Layout: per group of 4 channels c … c + 3, slots in the order c, c + 2, c + 1, c + 3 (what `vpacksswb` of the
// pairs (slot 0, slot 1) and (slot 2, slot 3) turns back into c … c + 3); per slot and sign plane (the high plane
// first: 1 or 2 planes) 4 uint16 byte offsets, one per kernel row ky: (16·ky + pattern)·32, pattern bit kx = 1 where
// tap (ky, kx) is +1. Then per group two vectors of thresholds, [t(slot 0) × 8 | t(slot 1) × 8] and
// [t(slot 2) × 8 | t(slot 3) × 8], as int16 (channels past the last: INT16_MAX, so their bits are 0).
static long ct_groups(long channels) { return (channels + 3) / 4; }

long bf_conv_table_bytes(long channels, long bits) { return ct_groups(channels) * (4 * bits * 4 * 2 + 64); }

static long ct_slot_channel(long s) {
    static const int order[4] = {0, 2, 1, 3};
    return s / 4 * 4 + order[s % 4];
}

void bf_conv_table_pack(const uint64_t *wbits, long words, long bits, const int32_t *threshold, long channels, long k,
                        uint8_t *dst) {
    const long G = ct_groups(channels);
    uint16_t *off = (uint16_t *)dst;
    int16_t *thr = (int16_t *)(dst + G * 4 * bits * 4 * 2);
    for (long s = 0; s < 4 * G; s++) {
        const long c = ct_slot_channel(s);
        for (long plane = 0; plane < bits; plane++)
            for (long ky = 0; ky < 4; ky++) {
                // plane 1 (the low bits of a 2-bit filter) is the row's third copy: bits 2k² …
                const long base = plane * 2 * k * k;
                unsigned pattern = 0;
                if (c < channels && ky < k)
                    for (long kx = 0; kx < k; kx++) {
                        const long t = base + ky * k + kx;
                        if ((wbits[c * words + t / 64] >> (t % 64)) & 1) pattern |= 1u << kx;
                    }
                off[(s * bits + plane) * 4 + ky] = (uint16_t)((16 * ky + pattern) * 32);
            }
        int32_t t = c < channels ? threshold[c] : INT16_MAX;
        const int16_t v = (int16_t)(t > INT16_MAX ? INT16_MAX : t < INT16_MIN ? INT16_MIN : t);
        // slot s of its group: vector s / 2, half s % 2
        const long g = s / 4, j = s % 4;
        for (int l = 0; l < 8; l++) thr[g * 32 + (j / 2) * 16 + (j % 2) * 8 + l] = v;
    }
}

#if BF_X86
// scratch of one call: the padded image, the tables of every padded row, and the cells' channel bytes
typedef struct {
    __m256i tables[CT_ROWS][16];
    uint8_t img[(CT_ROWS + 4) * CT_STRIDE];
    uint8_t cells[CT_MAX_CELLS][64];
} ct_scratch;
static _Thread_local ct_scratch ct_work __attribute__((aligned(64)));

// Padded row r's table: T[p] = Σ_kx (bit kx of p ? +x_kx : −x_kx), x_kx the row's tap kx at the 16 positions.
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline void ct_table(const __m256i *x, __m256i *T) {
    const __m256i a = _mm256_add_epi16(x[0], x[1]), b = _mm256_sub_epi16(x[0], x[1]);
    const __m256i c = _mm256_add_epi16(x[2], x[3]), d = _mm256_sub_epi16(x[2], x[3]);
    const __m256i z = _mm256_setzero_si256();
    // low pair (bits 0, 1): 3 → a, 1 → b, 2 → −b, 0 → −a; high pair (bits 2, 3): 3 → c, 1 → d, 2 → −d, 0 → −c
    const __m256i s15 = _mm256_add_epi16(a, c), s3 = _mm256_sub_epi16(a, c);
    const __m256i s7 = _mm256_add_epi16(a, d), s11 = _mm256_sub_epi16(a, d);
    const __m256i s13 = _mm256_add_epi16(b, c), s1 = _mm256_sub_epi16(b, c);
    const __m256i s5 = _mm256_add_epi16(b, d), s9 = _mm256_sub_epi16(b, d);
    T[15] = s15, T[3] = s3, T[7] = s7, T[11] = s11, T[13] = s13, T[1] = s1, T[5] = s5, T[9] = s9;
    // all signs flipped: pattern p ^ 15
    T[0] = _mm256_sub_epi16(z, s15), T[12] = _mm256_sub_epi16(z, s3), T[8] = _mm256_sub_epi16(z, s7);
    T[4] = _mm256_sub_epi16(z, s11), T[2] = _mm256_sub_epi16(z, s13), T[14] = _mm256_sub_epi16(z, s1);
    T[10] = _mm256_sub_epi16(z, s5), T[6] = _mm256_sub_epi16(z, s9);
}

// The channels, a pair of slots at a time over every row pair (8 table pointers, one per slot and kernel row, and a
// row-pair offset: no pointer spills), output rows 2·rp and 2·rp + 1 reading padded rows 4·rp + ky and 4·rp + 2 + ky
// (`o[ky]` = ky·512 + 32·pattern from the row's table): K entries added per row, the rows' maximum, then the pair's
// halves swapped into one vector for the cells' maximum and one compare; each row pair's two compares of a group
// are packed into its 4 channel bytes. On the AMD EPYC Zen 3 this order was 1.2-1.3x as fast as all 4 slots of a
// group per row pair (16 pointers: spilled).
// With 2 planes (2-bit filters) the high plane's entries are added, the sums doubled, and the low plane's added.
#define CT_KERNEL(NAME, K, PLANES)                                                                                    \
    __attribute__((target(BF_AVX2_TARGET))) static void NAME(const uint8_t *packed, long G, long k, long Hq,          \
                                                             ct_scratch *s) {                                         \
        (void)k;                                                                                                      \
        const uint16_t *off = (const uint16_t *)packed;                                                               \
        const __m256i *thr = (const __m256i *)(packed + G * 4 * (PLANES) * 4 * 2);                                    \
        __m256i lt[2][CT_MAX_CELLS];                                                                                  \
        const uint8_t *tables = (const uint8_t *)s->tables;                                                           \
        for (long g = 0; g < G; g++) {                                                                                \
            for (int pair = 0; pair < 2; pair++) {                                                                    \
                const uint16_t *o0 = off + (g * 4 + pair * 2) * 4 * (PLANES), *o1 = o0 + 4 * (PLANES);                \
                const uint8_t *p0[4 * (PLANES)], *p1[4 * (PLANES)];                                                   \
                for (int i = 0; i < 4 * (PLANES); i++) { p0[i] = tables + o0[i]; p1[i] = tables + o1[i]; }            \
                const __m256i t = _mm256_loadu_si256(thr + 2 * g + pair);                                             \
                for (long rp = 0; rp < Hq; rp++) {                                                                    \
                    const long ro = rp * 2048;                                                                        \
                    __m256i a0 = _mm256_load_si256((const __m256i *)(p0[0] + ro));                                    \
                    __m256i a1 = _mm256_load_si256((const __m256i *)(p0[0] + ro + 1024));                             \
                    __m256i b0 = _mm256_load_si256((const __m256i *)(p1[0] + ro));                                    \
                    __m256i b1 = _mm256_load_si256((const __m256i *)(p1[0] + ro + 1024));                             \
                    for (int ky = 1; ky < (K); ky++) {                                                                \
                        a0 = _mm256_add_epi16(a0, _mm256_load_si256((const __m256i *)(p0[ky] + ro)));                 \
                        a1 = _mm256_add_epi16(a1, _mm256_load_si256((const __m256i *)(p0[ky] + ro + 1024)));          \
                        b0 = _mm256_add_epi16(b0, _mm256_load_si256((const __m256i *)(p1[ky] + ro)));                 \
                        b1 = _mm256_add_epi16(b1, _mm256_load_si256((const __m256i *)(p1[ky] + ro + 1024)));          \
                    }                                                                                                 \
                    if ((PLANES) == 2) {                                                                              \
                        a0 = _mm256_add_epi16(a0, a0), a1 = _mm256_add_epi16(a1, a1);                                 \
                        b0 = _mm256_add_epi16(b0, b0), b1 = _mm256_add_epi16(b1, b1);                                 \
                        for (int ky = 4; ky < 4 + (K); ky++) {                                                        \
                            a0 = _mm256_add_epi16(a0, _mm256_load_si256((const __m256i *)(p0[ky] + ro)));             \
                            a1 = _mm256_add_epi16(a1, _mm256_load_si256((const __m256i *)(p0[ky] + ro + 1024)));      \
                            b0 = _mm256_add_epi16(b0, _mm256_load_si256((const __m256i *)(p1[ky] + ro)));             \
                            b1 = _mm256_add_epi16(b1, _mm256_load_si256((const __m256i *)(p1[ky] + ro + 1024)));      \
                        }                                                                                             \
                    }                                                                                                 \
                    const __m256i m0 = _mm256_max_epi16(a0, a1), m1 = _mm256_max_epi16(b0, b1);                       \
                    const __m256i A = _mm256_max_epi16(_mm256_permute2x128_si256(m0, m1, 0x20),                       \
                                                       _mm256_permute2x128_si256(m0, m1, 0x31));                      \
                    lt[pair][rp] = _mm256_cmpgt_epi16(t, A);                                                          \
                }                                                                                                     \
            }                                                                                                         \
            for (long rp = 0; rp < Hq; rp++) {                                                                        \
                const uint32_t bits = ~(uint32_t)_mm256_movemask_epi8(_mm256_packs_epi16(lt[0][rp], lt[1][rp]));      \
                memcpy(s->cells[rp] + 4 * g, &bits, 4);                                                               \
            }                                                                                                         \
        }                                                                                                             \
    }
// Instances of the one body: 4 x 4 filters (every shipped conv model) with the kernel-row loop unrolled at compile
// time, and k < 4 with it run-time bounded; each with 1-bit and 2-bit filters.
CT_KERNEL(ct_channels_k4, 4, 1)
CT_KERNEL(ct_channels_kk, k, 1)
CT_KERNEL(ct_channels2_k4, 4, 2)
CT_KERNEL(ct_channels2_kk, k, 2)

__attribute__((target(BF_AVX2_TARGET)))
static void ct_conv(const uint8_t *x, long H, long W, long k, long bits, long pad, long Hq, long Wq, int shift,
                    const uint8_t *packed, long channels, uint64_t *pooled) {
    ct_scratch *s = &ct_work;
    const long G = ct_groups(channels);
    // the groups' bytes past the last channel are not written: masked off
    const uint64_t keep = channels == 64 ? ~0ull : (1ull << channels) - 1;
    // the padded image, row stride CT_STRIDE; the windows' rows: 0 … 2·(2·Hq − 1) + k − 1
    const long rows = 2 * (2 * Hq - 1) + k;
    memset(s->img, 0, (size_t)(rows * CT_STRIDE));
    const __m128i count = _mm_cvtsi32_si128(shift), mask = _mm_set1_epi8((char)(0xFF >> shift));
    for (long y = 0; y < H; y++) {
        const long r = y + pad;
        if (r >= rows) break;
        uint8_t *dst = s->img + r * CT_STRIDE + pad;
        const uint8_t *src = x + y * W;
        const long n = W + pad <= CT_STRIDE ? W : CT_STRIDE - pad;   // (a fitting shape has W + pad ≤ 36)
        if (n >= 16) {
            // 16 pixels at a time, the last 16 overlapping the ones before (the same values written twice)
            for (long xx = 0;; xx += 16) {
                if (xx > n - 16) xx = n - 16;
                const __m128i v = _mm_loadu_si128((const __m128i *)(src + xx));
                _mm_storeu_si128((__m128i *)(dst + xx), _mm_and_si128(_mm_srl_epi16(v, count), mask));
                if (xx == n - 16) break;
            }
        } else {
            for (long xx = 0; xx < n; xx++) dst[xx] = (uint8_t)(src[xx] >> shift);
        }
    }
    // each padded row's taps (kx: columns kx + 4l in lanes 0–7, the even positions, and kx + 2 + 4l in lanes 8–15),
    // then its table
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, 2, 6, 10, 14, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, 2, 6, 10, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (long r = 0; r < rows; r++) {
        __m256i taps[4];
        for (long kx = 0; kx < 4; kx++) {
            if (kx >= k) { taps[kx] = _mm256_setzero_si256(); continue; }
            const __m256i v = _mm256_loadu_si256((const __m256i *)(s->img + r * CT_STRIDE + kx));
            const __m256i p = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), order);
            taps[kx] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(p));
        }
        ct_table(taps, s->tables[r]);
    }
    if (bits == 2) {
        if (k == 4) ct_channels2_k4(packed, G, k, Hq, s);
        else ct_channels2_kk(packed, G, k, Hq, s);
    } else if (k == 4) {
        ct_channels_k4(packed, G, k, Hq, s);
    } else {
        ct_channels_kk(packed, G, k, Hq, s);
    }
    // channel bytes (bit px = cell px) to cell words (bit c = channel c)
    for (long py = 0; py < Hq; py++) {
        const __m256i lo = _mm256_load_si256((const __m256i *)s->cells[py]);
        const __m256i hi = _mm256_load_si256((const __m256i *)(s->cells[py] + 32));
        uint64_t *out = pooled + py * Wq;
        for (long px = 0; px < Wq; px++) {
            const __m128i n = _mm_cvtsi32_si128((int)(7 - px));
            const uint64_t l = (uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(lo, n));
            const uint64_t u = channels > 32 ? (uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(hi, n)) : 0;
            out[px] = (l | u << 32) & keep;
        }
    }
}
#endif

int bf_conv_table(const uint8_t *x, long H, long W, long k, long bits, long stride, long pad, long Ho, long Wo,
                  long pool, int shift, const uint8_t *packed, long channels, uint64_t *pooled) {
#if BF_X86
    if (!bf_conv_direct_supported(BF_CONV_AVX2) || !bf_conv_table_fits(H, W, k, stride, pad, pool, Ho, Wo, channels) ||
        (bits != 1 && bits != 2))
        return 0;
    ct_conv(x, H, W, k, bits, pad, Ho / 2, Wo / 2, shift, packed, channels, pooled);
    return 1;
#else
    (void)x; (void)H; (void)W; (void)k; (void)bits; (void)stride; (void)pad; (void)Ho; (void)Wo; (void)pool; (void)shift;
    (void)packed; (void)channels; (void)pooled;
    return 0;
#endif
}
