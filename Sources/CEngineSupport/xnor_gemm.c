// XNOR-popcount GEMM kernels, one per instruction-set path, all on one weight layout.
//
// Weights are re-laid at model load in blocks of 8 rows, word-interleaved: the 8 rows' word k sit next to each
// other (64 bytes). A kernel broadcasts one activation word, XORs it with the 8 rows' words in one vector and
// popcounts every 64-bit lane: the lanes accumulate the 8 rows' popcounts directly, so no horizontal reduction is
// ever needed, whatever K is, and the threshold is one vector compare that yields the 8 output bits.
//
//   AVX-512 VPOPCNTDQ: vpxorq + vpopcntq + vpaddq per 512 binary MACs (ports 0 and 5: ≈ 340 MACs/cycle peak),
//                      tiles of 4 samples × 32 rows (16 accumulators).
//   AVX2:              vpshufb nibble popcounts summed in byte lanes for up to 31 words, folded with vpsadbw
//                      (which sums exactly one row's 8 bytes per 64-bit lane), tiles of 2 samples × 8 rows; from 4
//                      samples on, both operands split into nibbles first (bf_xnor_avx2_nibbles). Threshold
//                      layers of ≥ 32 rows use a second, byte-transposed layout instead (bf_xnor_threshold_lut).
//   portable:          plain C with __builtin_popcountll, compiled twice (with `popcnt` where the CPU has it).
//
// Every function carries its own target attribute, so the package builds for baseline x86-64 (and Arm) and the
// engine picks a path at run time from what the CPU reports.
#include <string.h>
#include "bf_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define BF_X86 1
#define BF_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq"
#endif

// ---------------------------------------------------------------------------------------------------------------
// Layout and shared output handling

void bf_xnor_interleave(const uint64_t *src, long ld, long rows, long words, uint64_t *dst) {
    const long blocks = (rows + BF_XNOR_BLOCK_ROWS - 1) / BF_XNOR_BLOCK_ROWS;
    for (long b = 0; b < blocks; b++) {
        for (long k = 0; k < words; k++) {
            for (long r = 0; r < BF_XNOR_BLOCK_ROWS; r++) {
                const long row = b * BF_XNOR_BLOCK_ROWS + r;
                dst[(b * words + k) * BF_XNOR_BLOCK_ROWS + r] = row < rows ? src[row * ld + k] : 0;
            }
        }
    }
}

// Where a kernel puts the 8 popcounts of (sample i, block b): raw int32s, or threshold bits (one byte), and with a
// second level (format v6) a second byte of bits against the second thresholds, `bits2Bytes` further into the row.
typedef struct {
    int32_t *out;
    long ldo;
    const int32_t *maxPop;
    uint8_t *bits;      // row i starts at bits + i × ldbitsBytes
    long ldbitsBytes;
    long m;
    const char *next;   // memory to prefetch into L2 while this product runs (the next expert's weights), or 0
    long nextBytes;
    const int32_t *maxPop2;   // the second level's thresholds, or 0 (one level)
    long bits2Bytes;          // where in a row the second level's bits start
} bf_sink;

static void bf_xnor_run(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long words,
                        const bf_sink *s);

static inline void bf_store8(const bf_sink *s, long i, long b, const long long pops[8]) {
    const long j0 = b * 8;
    const long valid = s->m - j0 < 8 ? s->m - j0 : 8;
    if (s->out) {
        for (long r = 0; r < valid; r++) s->out[i * s->ldo + j0 + r] = (int32_t)pops[r];
    } else {
        for (int level = 0; level < (s->maxPop2 ? 2 : 1); level++) {
            const int32_t *mp = level ? s->maxPop2 : s->maxPop;
            unsigned byte = 0;
            for (long r = 0; r < valid; r++) byte |= (unsigned)(pops[r] <= mp[j0 + r]) << r;
            s->bits[i * s->ldbitsBytes + (level ? s->bits2Bytes : 0) + b] = (uint8_t)byte;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Portable

#define BF_PORTABLE_BODY                                                                                        \
    const long blocks = (s->m + 7) / 8;                                                                         \
    for (long i = 0; i < n; i++) {                                                                              \
        const uint64_t *x = a + i * lda;                                                                        \
        for (long b = 0; b < blocks; b++) {                                                                     \
            const uint64_t *wb = w + b * words * 8;                                                             \
            long long p[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                          \
            for (long k = 0; k < words; k++) {                                                                  \
                const uint64_t v = x[k];                                                                        \
                for (int r = 0; r < 8; r++) p[r] += __builtin_popcountll(v ^ wb[k * 8 + r]);                    \
            }                                                                                                   \
            bf_store8(s, i, b, p);                                                                              \
        }                                                                                                       \
    }

static void bf_xnor_generic(const uint64_t *a, long lda, long n, const uint64_t *w, long words, const bf_sink *s) {
    BF_PORTABLE_BODY
}

#if BF_X86
__attribute__((target("popcnt")))
static void bf_xnor_popcnt(const uint64_t *a, long lda, long n, const uint64_t *w, long words, const bf_sink *s) {
    BF_PORTABLE_BODY
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// AVX2

#if BF_X86
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline __m256i bf_popcnt8_avx2(__m256i v, __m256i lut, __m256i low) {
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
}

__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline void bf_store_avx2(const bf_sink *s, long i, long b, __m256i lo, __m256i hi) {
    if (!s->out && s->m - b * 8 >= 8) {
        // a whole block of threshold bits in registers: bit r = pops[r] ≤ maxPop[r], i.e. not (pops > maxPop)
        for (int level = 0; level < (s->maxPop2 ? 2 : 1); level++) {
            const int32_t *mp = level ? s->maxPop2 : s->maxPop;
            const __m256i t = _mm256_loadu_si256((const __m256i *)(mp + b * 8));
            const __m256i gtlo = _mm256_cmpgt_epi64(lo, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(t)));
            const __m256i gthi = _mm256_cmpgt_epi64(hi, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(t, 1)));
            const int gt = _mm256_movemask_pd(_mm256_castsi256_pd(gtlo)) |
                           _mm256_movemask_pd(_mm256_castsi256_pd(gthi)) << 4;
            s->bits[i * s->ldbitsBytes + (level ? s->bits2Bytes : 0) + b] = (uint8_t)~gt;
        }
        return;
    }
    long long p[8];
    _mm256_storeu_si256((__m256i *)p, lo);
    _mm256_storeu_si256((__m256i *)(p + 4), hi);
    bf_store8(s, i, b, p);
}

// `ms` samples (1 or 2) × one block of 8 rows.
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline void bf_tile_avx2(const uint64_t *a, long lda, long i, int ms, const uint64_t *wb, long words,
                                const bf_sink *s, long b) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i zero = _mm256_setzero_si256();
    const uint64_t *x0 = a + i * lda, *x1 = ms > 1 ? x0 + lda : x0;
    __m256i t00 = zero, t01 = zero, t10 = zero, t11 = zero;
    long k = 0;
    while (k < words) {
        const long end = k + 31 < words ? k + 31 : words;   // 31 × 8 ≤ 255: byte lanes cannot overflow
        __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero;
        for (; k < end; k++) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + k * 8));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + k * 8 + 4));
            const __m256i v0 = _mm256_set1_epi64x((long long)x0[k]);
            c00 = _mm256_add_epi8(c00, bf_popcnt8_avx2(_mm256_xor_si256(v0, w0), lut, low));
            c01 = _mm256_add_epi8(c01, bf_popcnt8_avx2(_mm256_xor_si256(v0, w1), lut, low));
            if (ms > 1) {
                const __m256i v1 = _mm256_set1_epi64x((long long)x1[k]);
                c10 = _mm256_add_epi8(c10, bf_popcnt8_avx2(_mm256_xor_si256(v1, w0), lut, low));
                c11 = _mm256_add_epi8(c11, bf_popcnt8_avx2(_mm256_xor_si256(v1, w1), lut, low));
            }
        }
        t00 = _mm256_add_epi64(t00, _mm256_sad_epu8(c00, zero));
        t01 = _mm256_add_epi64(t01, _mm256_sad_epu8(c01, zero));
        if (ms > 1) {
            t10 = _mm256_add_epi64(t10, _mm256_sad_epu8(c10, zero));
            t11 = _mm256_add_epi64(t11, _mm256_sad_epu8(c11, zero));
        }
    }
    bf_store_avx2(s, i, b, t00, t01);
    if (ms > 1) bf_store_avx2(s, i + 1, b, t10, t11);
}

// The nibble-split variant. popcount(x XOR w) per byte is lut[(x XOR w) & 15] + lut[(x XOR w) >> 4]; with both
// operands split into their low and high nibbles beforehand, (x_lo XOR w_lo) and (x_hi XOR w_hi) index the table
// directly: 6 vector operations per 256 weight bits instead of 8 (no `and`, `srl`, `and` per product). The samples
// are split once per group (at least 32 of them, in thread-local scratch), the weights once per chunk of row blocks
// and group, and then reused by every pair of samples of the group, so it pays only with several samples per call
// (BF_NIBBLE_MIN_SAMPLES). On an AMD EPYC Zen 3, 1 thread: 1.25x the plain kernel in a microbenchmark (32 samples x
// 256 rows x 49 words, pre-split weights); in the engine at batch 256, interleaved rounds, 1.05x for a 64-filter
// conv model (`fashion-c64`), 1.03x for `fashion` v3, 1.00x for v2.
#define BF_NIBBLE_MIN_SAMPLES 4
#define BF_NIBBLE_MAX_WORDS 128
#define BF_NIBBLE_SCRATCH_BYTES (16 * 1024)
static _Thread_local uint64_t bf_nibble_w[BF_NIBBLE_SCRATCH_BYTES / 8] __attribute__((aligned(64)));
static _Thread_local uint64_t bf_nibble_a[64 * BF_NIBBLE_MAX_WORDS] __attribute__((aligned(64)));

// lo[k] = src[k]'s low nibbles, hi[k] = its high nibbles, each in the low half of its byte
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline void bf_nibble_split(const uint64_t *src, long count, uint64_t *lo, uint64_t *hi) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    long k = 0;
    for (; k + 4 <= count; k += 4) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(src + k));
        _mm256_storeu_si256((__m256i *)(lo + k), _mm256_and_si256(v, low));
        _mm256_storeu_si256((__m256i *)(hi + k), _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    }
    for (; k < count; k++) {
        lo[k] = src[k] & 0x0F0F0F0F0F0F0F0FULL;
        hi[k] = (src[k] >> 4) & 0x0F0F0F0F0F0F0F0FULL;
    }
}

// 2 samples (split at xl0/xh0, xl1/xh1) × one block of 8 rows (split: per word k, 8 low then 8 high words).
__attribute__((target(BF_AVX2_TARGET), always_inline))
static inline void bf_tile_avx2_nibbles(const uint64_t *xl0, const uint64_t *xh0, const uint64_t *xl1,
                                        const uint64_t *xh1, const uint64_t *ws, long words, __m256i out[2][2]) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i zero = _mm256_setzero_si256();
    __m256i t00 = zero, t01 = zero, t10 = zero, t11 = zero;
    long k = 0;
    while (k < words) {
        const long end = k + 31 < words ? k + 31 : words;   // 31 × 8 ≤ 255: byte lanes cannot overflow
        __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero;
        for (; k < end; k++) {
            const __m256i w0l = _mm256_loadu_si256((const __m256i *)(ws + k * 16));
            const __m256i w1l = _mm256_loadu_si256((const __m256i *)(ws + k * 16 + 4));
            const __m256i w0h = _mm256_loadu_si256((const __m256i *)(ws + k * 16 + 8));
            const __m256i w1h = _mm256_loadu_si256((const __m256i *)(ws + k * 16 + 12));
            const __m256i l0 = _mm256_set1_epi64x((long long)xl0[k]), h0 = _mm256_set1_epi64x((long long)xh0[k]);
            const __m256i l1 = _mm256_set1_epi64x((long long)xl1[k]), h1 = _mm256_set1_epi64x((long long)xh1[k]);
            c00 = _mm256_add_epi8(c00, _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(l0, w0l)),
                                                       _mm256_shuffle_epi8(lut, _mm256_xor_si256(h0, w0h))));
            c01 = _mm256_add_epi8(c01, _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(l0, w1l)),
                                                       _mm256_shuffle_epi8(lut, _mm256_xor_si256(h0, w1h))));
            c10 = _mm256_add_epi8(c10, _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(l1, w0l)),
                                                       _mm256_shuffle_epi8(lut, _mm256_xor_si256(h1, w0h))));
            c11 = _mm256_add_epi8(c11, _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(l1, w1l)),
                                                       _mm256_shuffle_epi8(lut, _mm256_xor_si256(h1, w1h))));
        }
        t00 = _mm256_add_epi64(t00, _mm256_sad_epu8(c00, zero));
        t01 = _mm256_add_epi64(t01, _mm256_sad_epu8(c01, zero));
        t10 = _mm256_add_epi64(t10, _mm256_sad_epu8(c10, zero));
        t11 = _mm256_add_epi64(t11, _mm256_sad_epu8(c11, zero));
    }
    out[0][0] = t00; out[0][1] = t01; out[1][0] = t10; out[1][1] = t11;
}

__attribute__((target(BF_AVX2_TARGET)))
static void bf_xnor_avx2_nibbles(const uint64_t *a, long lda, long n, const uint64_t *w, long words,
                                 const bf_sink *s) {
    const long blocks = (s->m + 7) / 8;
    long chunk = BF_NIBBLE_SCRATCH_BYTES / (words * 128);   // split blocks that fit the scratch (and L1)
    if (chunk < 1) chunk = 1;
    long group = (long)(sizeof bf_nibble_a / sizeof bf_nibble_a[0]) / (2 * words) & ~1L;   // samples split at once
    for (long i0 = 0; i0 < n; i0 += group) {
        const long i1 = i0 + group < n ? i0 + group : n;
        for (long i = i0; i < i1; i++) bf_nibble_split(a + i * lda, words, bf_nibble_a + (i - i0) * 2 * words,
                                                       bf_nibble_a + (i - i0) * 2 * words + words);
        for (long b0 = 0; b0 < blocks; b0 += chunk) {
            const long b1 = b0 + chunk < blocks ? b0 + chunk : blocks;
            for (long b = b0; b < b1; b++) {
                const uint64_t *src = w + b * words * 8;
                uint64_t *dst = bf_nibble_w + (b - b0) * words * 16;
                for (long k = 0; k < words; k++) bf_nibble_split(src + k * 8, 8, dst + k * 16, dst + k * 16 + 8);
            }
            for (long i = i0; i < i1; i += 2) {
                const int two = i + 1 < i1;   // an odd last sample is paired with itself and stored once
                const uint64_t *x0 = bf_nibble_a + (i - i0) * 2 * words, *x1 = two ? x0 + 2 * words : x0;
                for (long b = b0; b < b1; b++) {
                    __m256i t[2][2];
                    bf_tile_avx2_nibbles(x0, x0 + words, x1, x1 + words, bf_nibble_w + (b - b0) * words * 16, words, t);
                    bf_store_avx2(s, i, b, t[0][0], t[0][1]);
                    if (two) bf_store_avx2(s, i + 1, b, t[1][0], t[1][1]);
                }
            }
        }
    }
}

__attribute__((target(BF_AVX2_TARGET)))
static void bf_xnor_avx2(const uint64_t *a, long lda, long n, const uint64_t *w, long words, const bf_sink *s) {
    if (n >= BF_NIBBLE_MIN_SAMPLES && words <= BF_NIBBLE_MAX_WORDS) {
        bf_xnor_avx2_nibbles(a, lda, n, w, words, s);
        return;
    }
    const long blocks = (s->m + 7) / 8;
    // blocks of weight rows that stay in L1 (≤ 16 KB) while every sample streams past them
    long chunk = (16 * 1024) / (words * 64);
    if (chunk < 1) chunk = 1;
    for (long b0 = 0; b0 < blocks; b0 += chunk) {
        const long b1 = b0 + chunk < blocks ? b0 + chunk : blocks;
        long i = 0;
        for (; i + 2 <= n; i += 2) {
            for (long b = b0; b < b1; b++) bf_tile_avx2(a, lda, i, 2, w + b * words * 8, words, s, b);
        }
        for (; i < n; i++) {
            for (long b = b0; b < b1; b++) bf_tile_avx2(a, lda, i, 1, w + b * words * 8, words, s, b);
        }
    }
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// AVX2 lookup kernel (threshold layers): no XOR in the inner loop
//
// popcount(x XOR w) over one byte is T_lo(x)[w & 15] + T_hi(x)[w >> 4], where T_lo(x)[v] = popcount((x & 15) XOR v)
// and T_hi(x)[v] = popcount((x >> 4) XOR v) are 16-byte tables that depend only on the activation byte x. With the
// weights laid out byte-transposed (one vector holds the same K byte of 32 rows, split into low and high nibbles
// at model load), one activation byte's two tables (fetched from a constant 8 KB table of all 256 bytes, one
// broadcast load each) serve every row vector: 2 vpshufb + 2 vpaddb per 256 binary MACs, against 2 vpxor + 2 vpshufb
// + 2 vpaddb in the nibble kernel above. Byte counters (≤ 8 per K byte) fold into 16-bit counters every 31 K bytes,
// even and odd bytes apart; the row order inside a vector is chosen so that packing the even and odd comparisons
// yields the 32 rows' bits in order. Tiles of 2 samples × 3 row vectors (6 accumulators, 4 tables, 2 weight
// vectors: no spills), K in chunks of 31 bytes so one chunk of weights (6 KB) stays in L1 while a group of 32
// samples passes. On an AMD EPYC Zen 3, 1 thread, microbenchmark (32 samples × 256 rows × 49 words, thresholds):
// 1.3-1.4x the nibble kernel.

#if BF_X86
#define BF_LUT_PANEL BF_XNOR_LUT_PANEL     // rows per vector
#define BF_LUT_PANELS 3     // row vectors per tile
#define BF_LUT_CHUNK 31     // K bytes per pass: 31 × 8 ≤ 255, so byte counters cannot overflow
#define BF_LUT_GROUP 32     // samples whose 16-bit counters are kept at once
#define BF_LUT_MAX_WORDS 511   // 511 × 64 = 32 704 bits: counts and thresholds fit a signed 16-bit compare

// bf_lut_tables[x] = T_lo(x) then T_hi(x)
#define BF_PC4(v) (((v) & 1) + (((v) >> 1) & 1) + (((v) >> 2) & 1) + (((v) >> 3) & 1))
#define BF_T16(n) BF_PC4((n) ^ 0), BF_PC4((n) ^ 1), BF_PC4((n) ^ 2), BF_PC4((n) ^ 3), BF_PC4((n) ^ 4),          \
    BF_PC4((n) ^ 5), BF_PC4((n) ^ 6), BF_PC4((n) ^ 7), BF_PC4((n) ^ 8), BF_PC4((n) ^ 9), BF_PC4((n) ^ 10),        \
    BF_PC4((n) ^ 11), BF_PC4((n) ^ 12), BF_PC4((n) ^ 13), BF_PC4((n) ^ 14), BF_PC4((n) ^ 15)
#define BF_TX(x) {BF_T16((x) & 15), BF_T16((x) >> 4)}
#define BF_TX4(x) BF_TX(x), BF_TX((x) + 1), BF_TX((x) + 2), BF_TX((x) + 3)
#define BF_TX16(x) BF_TX4(x), BF_TX4((x) + 4), BF_TX4((x) + 8), BF_TX4((x) + 12)
#define BF_TX64(x) BF_TX16(x), BF_TX16((x) + 16), BF_TX16((x) + 32), BF_TX16((x) + 48)
static const uint8_t bf_lut_tables[256][32] __attribute__((aligned(64))) = {
    BF_TX64(0), BF_TX64(64), BF_TX64(128), BF_TX64(192)};

// Byte position inside its vector of a panel's row r: packs_epi16(even, odd) puts, per 128-bit lane L, the even
// bytes' 8 comparisons before the odd bytes' 8, and movemask then gives bit r for row r.
static inline int bf_lut_position(int r) {
    const int lane = r / 16, j = r % 16;
    return lane * 16 + (j < 8 ? 2 * j : 2 * (j - 8) + 1);
}
#endif

int bf_xnor_lut_used(int path, long rows, long words) {
#if BF_X86
    return path == BF_XNOR_AVX2 && bf_xnor_path_supported(BF_XNOR_AVX2) && rows >= BF_LUT_PANEL &&
           words >= 1 && words <= BF_LUT_MAX_WORDS;
#else
    (void)path; (void)rows; (void)words;
    return 0;
#endif
}

// A panel's weights per K byte: its 32 rows' low nibbles, then their high nibbles (one byte each).
#define BF_LUT_KBYTE_BYTES ((long)(2 * BF_XNOR_LUT_PANEL))
// After the panels' weights: each panel's 32 thresholds as int16, 16 for its even then 16 for its odd byte positions.
#define BF_LUT_THRESHOLD_BYTES ((long)(BF_XNOR_LUT_PANEL * sizeof(int16_t)))

long bf_xnor_lut_bytes(long rows, long words, long levels) {
    const long panels = (rows + BF_XNOR_LUT_PANEL - 1) / BF_XNOR_LUT_PANEL;
    return panels * (words * 8 * BF_LUT_KBYTE_BYTES + levels * BF_LUT_THRESHOLD_BYTES);
}

void bf_xnor_lut_layout(const uint64_t *src, long ld, long rows, long words, const int32_t *maxPop, long levels,
                        uint8_t *dst) {
#if BF_X86
    const long kBytes = words * 8, panels = (rows + BF_LUT_PANEL - 1) / BF_LUT_PANEL;
    memset(dst, 0, (size_t)bf_xnor_lut_bytes(rows, words, levels));
    for (long r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)(src + r * ld);
        uint8_t *panel = dst + r / BF_LUT_PANEL * kBytes * BF_LUT_KBYTE_BYTES + bf_lut_position((int)(r % BF_LUT_PANEL));
        for (long kb = 0; kb < kBytes; kb++) {
            panel[kb * BF_LUT_KBYTE_BYTES] = row[kb] & 15;
            panel[kb * BF_LUT_KBYTE_BYTES + BF_LUT_PANEL] = row[kb] >> 4;
        }
    }
    // per panel and level, its rows' thresholds in the counters' order (16 even then 16 odd byte positions),
    // clamped to what a signed 16-bit compare can hold (a count is 0…32 704: below 0 no count passes, and 32 767 lets
    // every count pass, as the int32 thresholds do); rows past `rows` get -1, so their bits come out 0
    int16_t *t = (int16_t *)(dst + panels * kBytes * BF_LUT_KBYTE_BYTES);
    for (long p = 0; p < panels; p++) {
        for (long level = 0; level < levels; level++, t += BF_LUT_PANEL) {
            for (int q = 0; q < BF_LUT_PANEL; q++) {
                const long r = p * BF_LUT_PANEL + q;
                const int32_t v = r < rows ? maxPop[level * rows + r] : -1;
                const int pos = bf_lut_position(q);
                t[(pos & 1) * (BF_LUT_PANEL / 2) + pos / 2] = (int16_t)(v < -1 ? -1 : v > 32767 ? 32767 : v);
            }
        }
    }
#else
    (void)src; (void)ld; (void)rows; (void)words; (void)maxPop; (void)levels; (void)dst;
#endif
}

#if BF_X86
// MS samples (1 or 2) × NP row vectors over K bytes [k0, k1); the byte counts are added into 16-bit counters
// c[s][2 × r] (even bytes) and c[s][2 × r + 1] (odd bytes).
#define BF_LUT_TILE(MS, NP)                                                                                     \
    __attribute__((target(BF_AVX2_TARGET), always_inline)) static inline void bf_lut_tile_##MS##x##NP(           \
        const uint8_t *x0, const uint8_t *x1, const uint8_t *w, long panelBytes, long k0, long k1,             \
        __m256i *c0, __m256i *c1) {                                                                             \
        __m256i s0[NP], s1[NP];                                                                                 \
        for (int r = 0; r < NP; r++) s0[r] = s1[r] = _mm256_setzero_si256();                                   \
        const uint8_t *wk = w + k0 * BF_LUT_KBYTE_BYTES;                                                        \
        for (long kb = k0; kb < k1; kb++, wk += BF_LUT_KBYTE_BYTES) {                                           \
            const uint8_t *t0 = bf_lut_tables[x0[kb]];                                                          \
            const __m256i l0 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)t0));               \
            const __m256i h0 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(t0 + 16)));        \
            __m256i l1 = l0, h1 = h0;                                                                           \
            if (MS > 1) {                                                                                       \
                const uint8_t *t1 = bf_lut_tables[x1[kb]];                                                      \
                l1 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)t1));                          \
                h1 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(t1 + 16)));                   \
            }                                                                                                   \
            for (int r = 0; r < NP; r++) {                                                                      \
                const __m256i wl = _mm256_loadu_si256((const __m256i *)(wk + r * panelBytes));                  \
                const __m256i wh = _mm256_loadu_si256((const __m256i *)(wk + r * panelBytes + BF_LUT_PANEL));   \
                s0[r] = _mm256_add_epi8(s0[r], _mm256_add_epi8(_mm256_shuffle_epi8(l0, wl),                     \
                                                               _mm256_shuffle_epi8(h0, wh)));                   \
                if (MS > 1)                                                                                     \
                    s1[r] = _mm256_add_epi8(s1[r], _mm256_add_epi8(_mm256_shuffle_epi8(l1, wl),                 \
                                                                   _mm256_shuffle_epi8(h1, wh)));               \
            }                                                                                                   \
        }                                                                                                       \
        const __m256i lowByte = _mm256_set1_epi16(0x00FF);                                                      \
        for (int r = 0; r < NP; r++) {                                                                          \
            c0[2 * r] = _mm256_add_epi16(c0[2 * r], _mm256_and_si256(s0[r], lowByte));                          \
            c0[2 * r + 1] = _mm256_add_epi16(c0[2 * r + 1], _mm256_srli_epi16(s0[r], 8));                       \
            if (MS > 1) {                                                                                       \
                c1[2 * r] = _mm256_add_epi16(c1[2 * r], _mm256_and_si256(s1[r], lowByte));                      \
                c1[2 * r + 1] = _mm256_add_epi16(c1[2 * r + 1], _mm256_srli_epi16(s1[r], 8));                   \
            }                                                                                                   \
        }                                                                                                       \
    }
BF_LUT_TILE(2, 3)
BF_LUT_TILE(2, 2)
BF_LUT_TILE(2, 1)
BF_LUT_TILE(1, 3)
BF_LUT_TILE(1, 2)
BF_LUT_TILE(1, 1)

// 16-bit counters of one group of samples for one tile of row vectors
static _Thread_local uint16_t bf_lut_counts[BF_LUT_GROUP][BF_LUT_PANELS * 2][16] __attribute__((aligned(32)));

__attribute__((target(BF_AVX2_TARGET)))
static void bf_xnor_threshold_lut_avx2(const uint64_t *a, long lda, long n, const uint8_t *lut, long m, long words,
                                       long levels, uint64_t *bits, long ldbits, long levelWords) {
    const long panels = (m + BF_LUT_PANEL - 1) / BF_LUT_PANEL, kBytes = words * 8, panelBytes = kBytes * BF_LUT_KBYTE_BYTES;
    const uint8_t *thresholds = lut + panels * panelBytes;   // per panel, `levels` blocks
    __m256i(*counts)[BF_LUT_PANELS * 2] = (__m256i(*)[BF_LUT_PANELS * 2])bf_lut_counts;
    for (long i0 = 0; i0 < n; i0 += BF_LUT_GROUP) {
        const long g = n - i0 < BF_LUT_GROUP ? n - i0 : BF_LUT_GROUP;
        for (long p0 = 0; p0 < panels; p0 += BF_LUT_PANELS) {
            const long np = panels - p0 < BF_LUT_PANELS ? panels - p0 : BF_LUT_PANELS;
            const uint8_t *w = lut + p0 * panelBytes;
            memset(bf_lut_counts, 0, sizeof bf_lut_counts[0] * (size_t)g);
            for (long k0 = 0; k0 < kBytes; k0 += BF_LUT_CHUNK) {
                const long k1 = k0 + BF_LUT_CHUNK < kBytes ? k0 + BF_LUT_CHUNK : kBytes;
                long i = 0;
                for (; i + 2 <= g; i += 2) {
                    const uint8_t *x0 = (const uint8_t *)(a + (i0 + i) * lda), *x1 = x0 + lda * 8;
                    if (np == 3) bf_lut_tile_2x3(x0, x1, w, panelBytes, k0, k1, counts[i], counts[i + 1]);
                    else if (np == 2) bf_lut_tile_2x2(x0, x1, w, panelBytes, k0, k1, counts[i], counts[i + 1]);
                    else bf_lut_tile_2x1(x0, x1, w, panelBytes, k0, k1, counts[i], counts[i + 1]);
                }
                if (i < g) {
                    const uint8_t *x0 = (const uint8_t *)(a + (i0 + i) * lda);
                    if (np == 3) bf_lut_tile_1x3(x0, x0, w, panelBytes, k0, k1, counts[i], counts[i]);
                    else if (np == 2) bf_lut_tile_1x2(x0, x0, w, panelBytes, k0, k1, counts[i], counts[i]);
                    else bf_lut_tile_1x1(x0, x0, w, panelBytes, k0, k1, counts[i], counts[i]);
                }
            }
            for (long r = 0; r < np; r++) {
                const long p = p0 + r;
                for (long level = 0; level < levels; level++) {
                    // the panel's thresholds of this level, laid out with its weights (bf_xnor_lut_layout)
                    const uint8_t *tp = thresholds + (p * levels + level) * BF_LUT_THRESHOLD_BYTES;
                    const __m256i te = _mm256_loadu_si256((const __m256i *)tp);
                    const __m256i to = _mm256_loadu_si256((const __m256i *)(tp + BF_LUT_THRESHOLD_BYTES / 2));
                    for (long i = 0; i < g; i++) {
                        const __m256i gtE = _mm256_cmpgt_epi16(counts[i][2 * r], te);
                        const __m256i gtO = _mm256_cmpgt_epi16(counts[i][2 * r + 1], to);
                        const uint32_t gt = (uint32_t)_mm256_movemask_epi8(_mm256_packs_epi16(gtE, gtO));
                        // rows past m have threshold -1: their bits come out 0
                        memcpy((uint8_t *)(bits + (i0 + i) * ldbits + level * levelWords) + p * 4, &(uint32_t){~gt}, 4);
                    }
                }
            }
        }
    }
}
#endif

void bf_xnor_threshold_lut(int path, const uint64_t *a, long lda, long n, const uint64_t *w, const uint8_t *lut,
                           long m, long words, const int32_t *maxPop, long levels, uint64_t *bits, long ldbits,
                           long levelWords, const void *next, long nextBytes) {
    const long outWords = (m + 63) / 64;
    if (levels < 1 || levels > 2) return;   // the format allows 1 or 2 (the model loader checks)
    for (long i = 0; i < n; i++)
        for (long level = 0; level < levels; level++)
            memset(bits + i * ldbits + level * levelWords, 0, (size_t)outWords * 8);
#if BF_X86
    // one sample alone reads as many weight vectors as it shuffles (0.85x the nibble path's 1-sample tile)
    if (lut && n >= 2 && bf_xnor_lut_used(path, m, words)) {
        bf_xnor_threshold_lut_avx2(a, lda, n, lut, m, words, levels, bits, ldbits, levelWords);
        return;
    }
#endif
    (void)lut;
    bf_sink s = {0, 0, maxPop, (uint8_t *)bits, ldbits * 8, m, (const char *)next, next ? nextBytes : 0,
                 levels == 2 ? maxPop + m : 0, levelWords * 8};
    bf_xnor_run(path, a, lda, n, w, words, &s);
}

// ---------------------------------------------------------------------------------------------------------------
// AVX-512 VPOPCNTDQ

#if BF_X86
__attribute__((target(BF_AVX512_TARGET), always_inline))
static inline void bf_store_avx512(const bf_sink *s, long i, long b, __m512i acc) {
    const long j0 = b * 8;
    const long valid = s->m - j0 < 8 ? s->m - j0 : 8;
    const __mmask8 vm = (__mmask8)((1u << valid) - 1);
    if (s->out) {
        _mm256_mask_storeu_epi32(s->out + i * s->ldo + j0, vm, _mm512_cvtepi64_epi32(acc));
    } else {
        for (int level = 0; level < (s->maxPop2 ? 2 : 1); level++) {
            const __m512i mp = _mm512_cvtepi32_epi64(
                _mm256_maskz_loadu_epi32(vm, (level ? s->maxPop2 : s->maxPop) + j0));
            s->bits[i * s->ldbitsBytes + (level ? s->bits2Bytes : 0) + b] =
                (uint8_t)(_mm512_cmple_epi64_mask(acc, mp) & vm);
        }
    }
}

// MS samples × NB blocks (8 rows each) of accumulators; MS and NB are compile-time constants at every call.
#define BF_TILE512(MS, NB)                                                                                      \
    __attribute__((target(BF_AVX512_TARGET), always_inline)) static inline void bf_tile512_##MS##x##NB(        \
        const uint64_t *a, long lda, long i, const uint64_t *w, long b, long words, const bf_sink *s,          \
        const char *pf, long pfLines) {                                                                         \
        __m512i acc[MS][NB];                                                                                    \
        for (int u = 0; u < MS; u++)                                                                            \
            for (int q = 0; q < NB; q++) acc[u][q] = _mm512_setzero_si512();                                    \
        const uint64_t *wb = w + b * words * 8;                                                                 \
        const long stride = words * 8;                                                                          \
        for (long k = 0; k < words; k++) {                                                                     \
            __m512i wv[NB];                                                                                     \
            for (int q = 0; q < NB; q++) wv[q] = _mm512_loadu_si512((const void *)(wb + q * stride + k * 8));   \
            if (k < pfLines) _mm_prefetch(pf + k * 64, _MM_HINT_T1);                                            \
            for (int u = 0; u < MS; u++) {                                                                      \
                const __m512i x = _mm512_set1_epi64((long long)a[(i + u) * lda + k]);                           \
                for (int q = 0; q < NB; q++)                                                                    \
                    acc[u][q] = _mm512_add_epi64(acc[u][q], _mm512_popcnt_epi64(_mm512_xor_si512(x, wv[q])));   \
            }                                                                                                   \
        }                                                                                                       \
        for (int u = 0; u < MS; u++)                                                                            \
            for (int q = 0; q < NB; q++) bf_store_avx512(s, i + u, b + q, acc[u][q]);                           \
    }

BF_TILE512(4, 4)
BF_TILE512(1, 4)
BF_TILE512(4, 1)
BF_TILE512(1, 1)

__attribute__((target(BF_AVX512_TARGET)))
static void bf_xnor_avx512(const uint64_t *a, long lda, long n, const uint64_t *w, long words, const bf_sink *s) {
    const long blocks = (s->m + 7) / 8;
    // the next expert's weights, one line per k step of the tiles, until all are asked for: fetched into L2 while
    // this expert computes (with hundreds of experts each is cold, and L3 bandwidth, not compute, set their pace)
    const char *pf = s->next;
    long pfLeft = s->next ? (s->nextBytes + 63) / 64 : 0;
#define BF_PF_TILE(CALL)                                                                                        \
    do {                                                                                                        \
        const long lines = pfLeft < words ? pfLeft : words;                                                    \
        CALL;                                                                                                   \
        pf += lines * 64;                                                                                       \
        pfLeft -= lines;                                                                                        \
    } while (0)
    // groups of 4 blocks (32 rows) per tile; chunks of tiles whose weights stay in L1 (≤ 24 KB)
    long chunk = ((24 * 1024) / (words * 64)) & ~3L;
    if (chunk < 4) chunk = 4;
    for (long b0 = 0; b0 < blocks; b0 += chunk) {
        const long b1 = b0 + chunk < blocks ? b0 + chunk : blocks;
        long i = 0;
        for (; i + 4 <= n; i += 4) {
            long b = b0;
            for (; b + 4 <= b1; b += 4) BF_PF_TILE(bf_tile512_4x4(a, lda, i, w, b, words, s, pf, lines));
            for (; b < b1; b++) BF_PF_TILE(bf_tile512_4x1(a, lda, i, w, b, words, s, pf, lines));
        }
        for (; i < n; i++) {
            long b = b0;
            for (; b + 4 <= b1; b += 4) BF_PF_TILE(bf_tile512_1x4(a, lda, i, w, b, words, s, pf, lines));
            for (; b < b1; b++) BF_PF_TILE(bf_tile512_1x1(a, lda, i, w, b, words, s, pf, lines));
        }
    }
#undef BF_PF_TILE
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Dispatch

int bf_xnor_path_supported(int path) {
    switch (path) {
    case BF_XNOR_PORTABLE: return 1;
#if BF_X86
    case BF_XNOR_AVX2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2") ? 1 : 0;
    case BF_XNOR_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vpopcntdq") ? 1 : 0;
#endif
    default: return 0;
    }
}

static void bf_xnor_run(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long words,
                        const bf_sink *s) {
    if (n <= 0 || s->m <= 0) return;
#if BF_X86
    if (path == BF_XNOR_AVX512 && bf_xnor_path_supported(BF_XNOR_AVX512)) { bf_xnor_avx512(a, lda, n, w, words, s); return; }
    if (path == BF_XNOR_AVX2 && bf_xnor_path_supported(BF_XNOR_AVX2)) { bf_xnor_avx2(a, lda, n, w, words, s); return; }
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) { bf_xnor_popcnt(a, lda, n, w, words, s); return; }
#endif
    (void)path;
    bf_xnor_generic(a, lda, n, w, words, s);
}

void bf_xnor_popcounts(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                       int32_t *out, long ldo) {
    bf_sink s = {out, ldo, 0, 0, 0, m, 0, 0};
    bf_xnor_run(path, a, lda, n, w, words, &s);
}

void bf_xnor_threshold_prefetch(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                                const int32_t *maxPop, uint64_t *bits, long ldbits, const void *next, long nextBytes) {
    // one level, no lookup layout: bf_xnor_threshold_lut's zeroing and sink over the kernel of `path`
    bf_xnor_threshold_lut(path, a, lda, n, w, 0, m, words, maxPop, 1, bits, ldbits, 0, next, nextBytes);
}

void bf_xnor_threshold(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                       const int32_t *maxPop, uint64_t *bits, long ldbits) {
    bf_xnor_threshold_prefetch(path, a, lda, n, w, m, words, maxPop, bits, ldbits, 0, 0);
}

void bf_router_scores(const int32_t *pops, long E, int32_t S, const float *scale, const float *bias, float *out) {
    // exactly as the reference computes them: int32 → float32 (exact: |d| ≤ S < 2^24), one rounded multiply, one
    // rounded add, never fused into one FMA (that would round once and differ in the last bit)
#pragma clang fp contract(off)
    for (long e = 0; e < E; e++) {
        const float d = (float)(S - 2 * pops[e]);
        const float p = scale[e] * d;
        out[e] = p + bias[e];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Router top-k: indices of the k largest scores, best first; ties to the lower index; NaN ranks last.

static inline int bf_ranks_above(float a, float b) {
    if (a != a) return 0;   // NaN never ranks above anything
    if (b != b) return 1;   // anything else ranks above NaN
    return a > b;
}

// Offers score e: once k are held it enters only if it ranks above the k-th (strictly: an equal later score
// keeps the lower index, which came first), and is inserted in order.
static inline void bf_topk_offer(const float *r, long e, long k, int32_t *out, long *filled) {
    const float v = r[e];
    long pos;
    if (*filled == k) {
        if (!bf_ranks_above(v, r[out[k - 1]])) return;
        pos = k - 1;
    } else {
        pos = (*filled)++;
    }
    while (pos > 0 && bf_ranks_above(v, r[out[pos - 1]])) {
        out[pos] = out[pos - 1];
        pos--;
    }
    out[pos] = (int32_t)e;
}

#if BF_X86
// 16 scores per compare against the current k-th: only those above it are offered (with hundreds of experts the
// scalar scan was a tenth of a forward pass). Returns how many scores it took.
__attribute__((target("avx512f")))
static long bf_topk_avx512(const float *r, long n, long k, int32_t *out, long *filled) {
    long e = 0;
    for (; e < n && *filled < k; e++) bf_topk_offer(r, e, k, out, filled);
    for (; e + 16 <= n; e += 16) {
        const float kth = r[out[k - 1]];
        if (kth != kth) {   // a NaN k-th: any number beats it; offer the block one by one
            for (long j = 0; j < 16; j++) bf_topk_offer(r, e + j, k, out, filled);
            continue;
        }
        // NaN compares false (ordered compare): it never beats the k-th, as in bf_ranks_above
        __mmask16 above = _mm512_cmp_ps_mask(_mm512_loadu_ps(r + e), _mm512_set1_ps(kth), _CMP_GT_OQ);
        while (above) {
            const int j = __builtin_ctz(above);
            above &= (__mmask16)(above - 1);
            bf_topk_offer(r, e + j, k, out, filled);   // checks again against the k-th as it is now
        }
    }
    return e;
}

// Two passes for k ≤ 16 when no score is NaN: the lane-wise maxima of all full 16-score vectors are 16 distinct
// scores, so the k-th largest of them, T, is at most the k-th largest score. Only scores ≥ T can be among the top k
// (anything below T ranks under k scores ≥ T), so the second pass offers just those, in index order, as the scalar
// rule would. Few scores pass, so few branches mispredict; the one-pass scan below offered every new leader.
// `lanes` are the lane-wise maxima over the first `full` (a multiple of 16) scores.
__attribute__((target("avx512f")))
static void bf_topk_from_bound(const float *r, long full, long k, __m512 lanes, int32_t *out, long *filled) {
    float m[16], top[16];
    _mm512_storeu_ps(m, lanes);
    long held = 0;
    for (int j = 0; j < 16; j++) {   // k-th largest of the 16 lane maxima
        const float v = m[j];
        if (held == k && !(v > top[k - 1])) continue;
        long pos = held < k ? held++ : k - 1;
        while (pos > 0 && v > top[pos - 1]) { top[pos] = top[pos - 1]; pos--; }
        top[pos] = v;
    }
    const __m512 t = _mm512_set1_ps(top[k - 1]);
    for (long e = 0; e < full; e += 16) {
        __mmask16 at = _mm512_cmp_ps_mask(_mm512_loadu_ps(r + e), t, _CMP_GE_OQ);
        while (at) {
            const int j = __builtin_ctz(at);
            at &= (__mmask16)(at - 1);
            bf_topk_offer(r, e + j, k, out, filled);
        }
    }
}

// The bound pass over scores already written; returns how many it covered (0 when it does not apply: k > 16, fewer
// than 16 scores, or a NaN among them).
__attribute__((target("avx512f")))
static long bf_topk_avx512_bound(const float *r, long n, long k, int32_t *out, long *filled) {
    const long full = n / 16 * 16;
    if (k > 16 || full < 16) return 0;
    __m512 m = _mm512_loadu_ps(r);
    __mmask16 nan = _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
    for (long e = 16; e < full; e += 16) {
        const __m512 v = _mm512_loadu_ps(r + e);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        m = _mm512_max_ps(m, v);
    }
    if (nan) return 0;
    bf_topk_from_bound(r, full, k, m, out, filled);
    return full;
}

// Router scores and the bound pass in one: 16 scores per step (convert, multiply, add: two roundings, as the
// reference), their lane maxima kept on the way. Returns 0 (scores written, nothing selected) where a NaN came out.
__attribute__((target("avx512f")))
static long bf_router_select_avx512(const int32_t *pops, long E, int32_t S, const float *scale, const float *bias,
                                    float *out, long k, int32_t *selected, long *filled) {
    const long full = E / 16 * 16;
    const __m512i s = _mm512_set1_epi32(S);
    __m512 m = _mm512_set1_ps(-__builtin_inff());
    __mmask16 nan = 0;
    for (long e = 0; e < full; e += 16) {
        const __m512i p = _mm512_loadu_si512((const void *)(pops + e));
        const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(s, _mm512_add_epi32(p, p)));
        const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(scale + e), d), _mm512_loadu_ps(bias + e));
        _mm512_storeu_ps(out + e, v);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        m = _mm512_max_ps(m, v);
    }
    bf_router_scores(pops + full, E - full, S, scale + full, bias + full, out + full);
    if (nan) return 0;
    bf_topk_from_bound(out, full, k, m, selected, filled);
    return full;
}
#endif

#if BF_X86
// At most 16 scores (one vector; the router of a 16-expert model, a 10-class output), none NaN: k rounds of "the
// largest left, the lowest index among equals" — the scalar rule without its branches (a tenth of the time outside
// the kernels went to the two insertion scans per sample). Returns 0, writing nothing, when a score is NaN.
__attribute__((target("avx512f")))
static int bf_topk16_avx512(const float *r, long n, long k, int32_t *out) {
    const __mmask16 valid = (__mmask16)((1u << n) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, r);
    if (_mm512_mask_cmp_ps_mask(valid, v, v, _CMP_UNORD_Q)) return 0;
    __mmask16 left = valid;
    for (long j = 0; j < k && left; j++) {
        // masked-off lanes count as −∞; an all −∞ remainder still finds its lowest index by the equal compare
        const float m = _mm512_mask_reduce_max_ps(left, v);
        const __mmask16 at = _mm512_mask_cmp_ps_mask(left, v, _mm512_set1_ps(m), _CMP_EQ_OQ);
        const int e = __builtin_ctz(at);
        out[j] = e;
        left &= (__mmask16)~(1u << e);
    }
    return 1;
}
#endif

#if BF_X86
// The same for up to 16 scores on AVX2 (two 8-lane vectors; lanes past n and taken lanes read as −∞): the scalar
// scan's insertions branch on the scores, and with 16 experts top-2 it took 2-3 % of a conv model's forward pass.
__attribute__((target(BF_AVX2_TARGET)))
static int bf_topk16_avx2(const float *r, long n, long k, int32_t *out) {
    const __m256i idx0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), idx1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i nn = _mm256_set1_epi32((int)n);
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    const __m256i in0 = _mm256_cmpgt_epi32(nn, idx0), in1 = _mm256_cmpgt_epi32(nn, idx1);
    const __m256 v0 = _mm256_maskload_ps(r, in0), v1 = _mm256_maskload_ps(r + 8, in1);
    const int nan = _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(v0, v0, _CMP_UNORD_Q), _mm256_castsi256_ps(in0))) |
                    _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(v1, v1, _CMP_UNORD_Q), _mm256_castsi256_ps(in1)));
    if (nan) return 0;
    const __m256i bit0 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i bit1 = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    unsigned left = (1u << n) - 1;
    for (long j = 0; j < k && left; j++) {
        const __m256i l = _mm256_set1_epi32((int)left);
        const __m256 keep0 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(l, bit0), bit0));
        const __m256 keep1 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(l, bit1), bit1));
        __m256 m = _mm256_max_ps(_mm256_blendv_ps(ninf, v0, keep0), _mm256_blendv_ps(ninf, v1, keep1));
        m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4E));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xB1));
        // the lowest remaining index holding the maximum (an all −∞ remainder: its lowest index)
        const unsigned at = ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v0, m, _CMP_EQ_OQ)) |
                             (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v1, m, _CMP_EQ_OQ)) << 8) & left;
        const int e = __builtin_ctz(at);
        out[j] = e;
        left &= ~(1u << e);
    }
    return 1;
}
#endif

static int bf_topk_has_avx512(void) {
#if BF_X86
    // -1: not looked up yet (threads may race to look it up; they all store the same answer)
    static int avx512 = -1;
    int has = __atomic_load_n(&avx512, __ATOMIC_RELAXED);
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&avx512, has, __ATOMIC_RELAXED);
    }
    return has;
#else
    return 0;
#endif
}

void bf_router_select(const int32_t *pops, long E, int32_t S, const float *scale, const float *bias, float *scores,
                      long k, int32_t *selected) {
    if (k <= 0) return;
#if BF_X86
    if (E >= 32 && k <= 16 && bf_topk_has_avx512()) {
        long filled = 0;
        long e = bf_router_select_avx512(pops, E, S, scale, bias, scores, k, selected, &filled);
        if (e > 0) {
            for (; e < E; e++) bf_topk_offer(scores, e, k, selected, &filled);
            return;
        }
        bf_select_topk(scores, E, k, selected);   // a NaN score: the general scan
        return;
    }
#endif
    bf_router_scores(pops, E, S, scale, bias, scores);
    bf_select_topk(scores, E, k, selected);
}

void bf_select_topk(const float *r, long n, long k, int32_t *out) {
    long filled = 0, e = 0;
    if (k <= 0) return;
#if BF_X86
    if (n > 0 && n <= 16 && bf_topk_has_avx512() && bf_topk16_avx512(r, n, k, out)) return;
    if (n > 0 && n <= 16 && bf_xnor_path_supported(BF_XNOR_AVX2) && bf_topk16_avx2(r, n, k, out)) return;
    if (n >= 32 && bf_topk_has_avx512()) {
        e = bf_topk_avx512_bound(r, n, k, out, &filled);
        if (e == 0) e = bf_topk_avx512(r, n, k, out, &filled);
    }
#endif
    for (; e < n; e++) bf_topk_offer(r, e, k, out, &filled);
}
