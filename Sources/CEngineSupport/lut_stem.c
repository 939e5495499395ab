// Table-lookup kernel for the stem: 4-bit activations × one-bit weights, in the style of T-MAC.
//
// Why C: the kernel needs a per-lane table lookup (`vpshufb` with a run-time table), which Swift's SIMD types do
// not express, and Swift cannot call the AVX2 intrinsics from a build without a target CPU (the compiler aborts).
// Here the functions carry `target(BF_AVX2_TARGET)`, so every build (debug tests included) compiles them and the engine
// calls them only when the running CPU has AVX2 (`bf_lut_available`).
//
// For every group of four inputs q0..q3 (each 0…15) a 16-entry table holds T[n] = Σ_{bit t of n set} q_t (≤ 60, one
// byte). A weight row's four bits for that group are the index, so one `vpshufb` does 32 lookups = 128 MACs:
// the low 128-bit lane serves 16 rows for group 2p, the high lane the same 16 rows for group 2p+1. Four lookups
// fit a byte (4 × 60 = 240); then the bytes are widened into 16-bit sums. The two lanes are added once per row
// block at the end, still in 16 bits, so a row's whole sum (≤ 15 × features) must fit: features ≤ 4 368.
#include "cenginesupport.h"

#if defined(__x86_64__)
#include <immintrin.h>

int bf_lut_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

__attribute__((target(BF_AVX2_TARGET)))
long bf_lut_build_tables(const uint8_t *x, long features, int shift, long pairs, uint8_t *tables) {
    // control bytes: position n of lane L picks input byte 4L + t when bit t of n is set, else zero (0x80)
    uint8_t ctl[4][32];
    for (int t = 0; t < 4; t++) {
        for (int lane = 0; lane < 2; lane++) {
            for (int n = 0; n < 16; n++) {
                ctl[t][lane * 16 + n] = ((n >> t) & 1) ? (uint8_t)(4 * lane + t) : 0x80;
            }
        }
    }
    const __m256i c0 = _mm256_loadu_si256((const __m256i *)ctl[0]);
    const __m256i c1 = _mm256_loadu_si256((const __m256i *)ctl[1]);
    const __m256i c2 = _mm256_loadu_si256((const __m256i *)ctl[2]);
    const __m256i c3 = _mm256_loadu_si256((const __m256i *)ctl[3]);
    const __m256i mask = _mm256_set1_epi8((char)(0xFF >> shift));
    const __m128i shiftCount = _mm_cvtsi32_si128(shift);
    long sum = 0;
    for (long p = 0; p < pairs; p++) {
        uint64_t raw = 0;
        long first = p * 8;
        if (first + 8 <= features) {
            __builtin_memcpy(&raw, x + first, 8);
        } else {
            for (long k = first; k < features; k++) raw |= (uint64_t)x[k] << (8 * (k - first));
        }
        __m256i v = _mm256_set1_epi64x((long long)raw);
        v = _mm256_and_si256(_mm256_srl_epi16(v, shiftCount), mask);
        __m256i t = _mm256_add_epi8(_mm256_add_epi8(_mm256_shuffle_epi8(v, c0), _mm256_shuffle_epi8(v, c1)),
                                    _mm256_add_epi8(_mm256_shuffle_epi8(v, c2), _mm256_shuffle_epi8(v, c3)));
        _mm256_storeu_si256((__m256i *)(tables + p * 32), t);
        // entry 15 of each lane is the sum of its four inputs
        sum += tables[p * 32 + 15] + tables[p * 32 + 31];
    }
    return sum;
}

// Widens the byte sums of `t` into the even-row and odd-row 16-bit accumulators.
#define BF_WIDEN(t, e, o)                                              \
    do {                                                               \
        e = _mm256_add_epi16(e, _mm256_and_si256(t, lowBytes));        \
        o = _mm256_add_epi16(o, _mm256_srli_epi16(t, 8));              \
    } while (0)

// Adds the two lanes and stores 16 row sums as int32: lane 0 of `e` holds rows 0,2,…,14 over even groups, lane 1
// the same rows over odd groups; `o` the odd rows.
__attribute__((target(BF_AVX2_TARGET)))
static inline void bf_lut_store16(__m256i e, __m256i o, int32_t *out) {
    __m128i se = _mm_add_epi16(_mm256_castsi256_si128(e), _mm256_extracti128_si256(e, 1));
    __m128i so = _mm_add_epi16(_mm256_castsi256_si128(o), _mm256_extracti128_si256(o, 1));
    __m128i lo = _mm_unpacklo_epi16(se, so);  // rows 0…7
    __m128i hi = _mm_unpackhi_epi16(se, so);  // rows 8…15
    _mm256_storeu_si256((__m256i *)out, _mm256_cvtepu16_epi32(lo));
    _mm256_storeu_si256((__m256i *)(out + 8), _mm256_cvtepu16_epi32(hi));
}

// One pair of groups for four row blocks: t_r += lookup(table, indices of block r).
#define BF_LOOKUP4(q)                                                                                            \
    do {                                                                                                         \
        const __m256i tb = _mm256_loadu_si256((const __m256i *)(tab + (q)));                                     \
        t0 = _mm256_add_epi8(t0, _mm256_shuffle_epi8(tb, _mm256_loadu_si256((const __m256i *)(w0 + (q)))));     \
        t1 = _mm256_add_epi8(t1, _mm256_shuffle_epi8(tb, _mm256_loadu_si256((const __m256i *)(w1 + (q)))));     \
        t2 = _mm256_add_epi8(t2, _mm256_shuffle_epi8(tb, _mm256_loadu_si256((const __m256i *)(w2 + (q)))));     \
        t3 = _mm256_add_epi8(t3, _mm256_shuffle_epi8(tb, _mm256_loadu_si256((const __m256i *)(w3 + (q)))));     \
    } while (0)

__attribute__((target(BF_AVX2_TARGET)))
void bf_lut_stem(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                 int32_t *acc, long ldacc) {
    const __m256i lowBytes = _mm256_set1_epi16(0x00FF);
    const long blockBytes = pairs * 32;
    long b = 0;
    // four row blocks (64 rows) at a time; their weights (4 × pairs × 32 bytes, 12.5 KB for 784 inputs) stay in L1
    // while every sample of the micro-batch streams past them
    for (; b + 4 <= blocks; b += 4) {
        const uint8_t *w0 = weights + b * blockBytes, *w1 = w0 + blockBytes, *w2 = w1 + blockBytes,
                      *w3 = w2 + blockBytes;
        for (long i = 0; i < n; i++) {
            const uint8_t *tab = tables + i * pairs * 32;
            __m256i e0 = _mm256_setzero_si256(), e1 = e0, e2 = e0, e3 = e0;
            __m256i o0 = e0, o1 = e0, o2 = e0, o3 = e0;
            // chunks of up to 4 pairs: 4 lookups of ≤ 60 add up in a byte (≤ 240), then widen
            for (long p = 0; p < pairs; p += 4) {
                __m256i t0 = _mm256_setzero_si256(), t1 = t0, t2 = t0, t3 = t0;
                if (p + 4 <= pairs) {
                    BF_LOOKUP4(p * 32);
                    BF_LOOKUP4(p * 32 + 32);
                    BF_LOOKUP4(p * 32 + 64);
                    BF_LOOKUP4(p * 32 + 96);
                } else {
                    for (long r = p; r < pairs; r++) BF_LOOKUP4(r * 32);
                }
                BF_WIDEN(t0, e0, o0);
                BF_WIDEN(t1, e1, o1);
                BF_WIDEN(t2, e2, o2);
                BF_WIDEN(t3, e3, o3);
            }
            int32_t *out = acc + i * ldacc + b * 16;
            bf_lut_store16(e0, o0, out);
            bf_lut_store16(e1, o1, out + 16);
            bf_lut_store16(e2, o2, out + 32);
            bf_lut_store16(e3, o3, out + 48);
        }
    }
    for (; b < blocks; b++) {
        const uint8_t *w0 = weights + b * blockBytes;
        for (long i = 0; i < n; i++) {
            const uint8_t *tab = tables + i * pairs * 32;
            __m256i e0 = _mm256_setzero_si256(), o0 = e0;
            for (long p = 0; p < pairs; p += 4) {
                __m256i t0 = _mm256_setzero_si256();
                const long end = p + 4 < pairs ? p + 4 : pairs;
                for (long r = p; r < end; r++) {
                    const __m256i tb = _mm256_loadu_si256((const __m256i *)(tab + r * 32));
                    t0 = _mm256_add_epi8(t0, _mm256_shuffle_epi8(tb, _mm256_loadu_si256((const __m256i *)(w0 + r * 32))));
                }
                BF_WIDEN(t0, e0, o0);
            }
            bf_lut_store16(e0, o0, acc + i * ldacc + b * 16);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX-512BW: the same tables and weight layout, two pairs (four groups, one per 128-bit lane) per `vpshufb`.
// An odd last pair is read with its upper 32 table bytes zeroed, so those lanes look up zeros.

#define BF_LUT512_TARGET "avx512f,avx512bw"

#define BF_WIDEN512(t, e, o)                                           \
    do {                                                               \
        e = _mm512_add_epi16(e, _mm512_and_si512(t, lowBytes));        \
        o = _mm512_add_epi16(o, _mm512_srli_epi16(t, 8));              \
    } while (0)

__attribute__((target(BF_LUT512_TARGET)))
static inline void bf_lut_store16_512(__m512i e, __m512i o, int32_t *out) {
    const __m256i e2 = _mm256_add_epi16(_mm512_castsi512_si256(e), _mm512_extracti64x4_epi64(e, 1));
    const __m256i o2 = _mm256_add_epi16(_mm512_castsi512_si256(o), _mm512_extracti64x4_epi64(o, 1));
    const __m128i se = _mm_add_epi16(_mm256_castsi256_si128(e2), _mm256_extracti128_si256(e2, 1));
    const __m128i so = _mm_add_epi16(_mm256_castsi256_si128(o2), _mm256_extracti128_si256(o2, 1));
    _mm256_storeu_si256((__m256i *)out, _mm256_cvtepu16_epi32(_mm_unpacklo_epi16(se, so)));
    _mm256_storeu_si256((__m256i *)(out + 8), _mm256_cvtepu16_epi32(_mm_unpackhi_epi16(se, so)));
}

// One quad (two pairs) for `NB` row blocks.
#define BF_LOOKUP512(NB, q, tb)                                                                                    \
    do {                                                                                                         \
        for (int r = 0; r < NB; r++)                                                                             \
            t[r] = _mm512_add_epi8(t[r], _mm512_shuffle_epi8(tb, _mm512_loadu_si512((const void *)(w[r] + (q))))); \
    } while (0)

#define BF_LUT512_BLOCKS(NB)                                                                                     \
    __attribute__((target(BF_LUT512_TARGET), always_inline)) static inline void bf_lut512_##NB(                 \
        const uint8_t *tables, long n, long pairs, const uint8_t *weights, long b, int32_t *acc, long ldacc) {   \
        const __m512i lowBytes = _mm512_set1_epi16(0x00FF);                                                     \
        const long blockBytes = pairs * 32;                                                                      \
        const uint8_t *w[NB];                                                                                    \
        for (int r = 0; r < NB; r++) w[r] = weights + (b + r) * blockBytes;                                      \
        const long quads = pairs / 2;                                                                            \
        for (long i = 0; i < n; i++) {                                                                           \
            const uint8_t *tab = tables + i * pairs * 32;                                                        \
            __m512i e[NB], o[NB], t[NB];                                                                         \
            for (int r = 0; r < NB; r++) e[r] = o[r] = _mm512_setzero_si512();                                  \
            /* chunks of up to 4 quads: 4 lookups of ≤ 60 add up in a byte (≤ 240), then widen */               \
            for (long p = 0; p < quads; p += 4) {                                                                \
                for (int r = 0; r < NB; r++) t[r] = _mm512_setzero_si512();                                     \
                const long end = p + 4 < quads ? p + 4 : quads;                                                  \
                for (long u = p; u < end; u++) {                                                                 \
                    const __m512i tb = _mm512_loadu_si512((const void *)(tab + u * 64));                        \
                    BF_LOOKUP512(NB, u * 64, tb);                                                                    \
                }                                                                                                \
                for (int r = 0; r < NB; r++) BF_WIDEN512(t[r], e[r], o[r]);                                      \
            }                                                                                                    \
            if (pairs & 1) {                                                                                     \
                for (int r = 0; r < NB; r++) t[r] = _mm512_setzero_si512();                                     \
                const __m512i tb = _mm512_maskz_loadu_epi8(0xFFFFFFFFULL, tab + quads * 64);                    \
                for (int r = 0; r < NB; r++)                                                                     \
                    t[r] = _mm512_shuffle_epi8(tb, _mm512_maskz_loadu_epi8(0xFFFFFFFFULL, w[r] + quads * 64));   \
                for (int r = 0; r < NB; r++) BF_WIDEN512(t[r], e[r], o[r]);                                      \
            }                                                                                                    \
            int32_t *out = acc + i * ldacc + b * 16;                                                             \
            for (int r = 0; r < NB; r++) bf_lut_store16_512(e[r], o[r], out + 16 * r);                          \
        }                                                                                                        \
    }

BF_LUT512_BLOCKS(4)
BF_LUT512_BLOCKS(1)

__attribute__((target(BF_LUT512_TARGET)))
void bf_lut_stem_avx512(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                        int32_t *acc, long ldacc) {
    long b = 0;
    for (; b + 4 <= blocks; b += 4) bf_lut512_4(tables, n, pairs, weights, b, acc, ldacc);
    for (; b < blocks; b++) bf_lut512_1(tables, n, pairs, weights, b, acc, ldacc);
}

int bf_lut512_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
}

#else

int bf_lut_available(void) { return 0; }
long bf_lut_build_tables(const uint8_t *x, long features, int shift, long pairs, uint8_t *tables) {
    (void)x; (void)features; (void)shift; (void)pairs; (void)tables;
    return -1;
}
void bf_lut_stem(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                 int32_t *acc, long ldacc) {
    (void)tables; (void)n; (void)pairs; (void)weights; (void)blocks; (void)acc; (void)ldacc;
}
int bf_lut512_available(void) { return 0; }
void bf_lut_stem_avx512(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                        int32_t *acc, long ldacc) {
    (void)tables; (void)n; (void)pairs; (void)weights; (void)blocks; (void)acc; (void)ldacc;
}

#endif
