// The stem (input layer) as int8 dot products, for CPUs with AVX-512 VNNI or AMX-INT8.
//
// With at most 4 input bit planes every activation q = x >> (8 − P) is 0…15, and the stem needs
// acc_j = Σ_k q_k · [w_jk = +1]: an exact product of unsigned bytes and {0, 1} weight bytes. So the weights are
// expanded at model load to one byte each (private memory, 8× the packed bits) in the layout both instruction sets
// read: per block of 16 rows and group of 4 inputs, 64 bytes [r × 4 + t].
//
//   VNNI: one `vpdpbusd` multiplies 4 broadcast activation bytes by 16 rows × 4 weight bytes (64 MACs).
//   AMX:  one `tdpbusd` multiplies a 16-sample × 64-input tile by a 64-input × 16-row tile (16 384 MACs; 1 024 per
//         cycle). Linux hands out the tile registers only after `arch_prctl(ARCH_REQ_XCOMP_PERM)`.
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "bf_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define BF_X86 1
#endif

long bf_stem_int8_bytes(long rows, long features) {
    const long kpad = (features + 63) / 64 * 64;
    const long blocks = (rows + 15) / 16;
    return blocks * (kpad / 4) * 64;
}

void bf_stem_int8_pack(const uint64_t *src, long rows, long features, uint8_t *dst) {
    const long words = (features + 63) / 64;
    const long kpad = (features + 63) / 64 * 64;
    const long quads = kpad / 4;
    const long blocks = (rows + 15) / 16;
    memset(dst, 0, (size_t)(blocks * quads * 64));
    // branch-free, four weights (one nibble of the row) per store: a bit test per weight mispredicted half the time,
    // and packing was a quarter of a demo worker's CPU (start-up, before the first job)
    for (long j = 0; j < rows; j++) {
        const uint64_t *row = src + j * words;
        const long b = j / 16, r = j % 16;
        uint8_t *out = dst + b * quads * 64 + r * 4;
        for (long g = 0; g < (features + 3) / 4; g++) {
            const long k = g * 4;
            uint32_t nibble = (uint32_t)(row[k >> 6] >> (k & 63)) & 0xF;
            const long valid = features - k < 4 ? features - k : 4;
            nibble &= (1u << valid) - 1;
            // bit t of the nibble to byte t: 0x00204081 spreads four bits 7 apart, the mask keeps bit 0 of each byte
            const uint32_t bytes = (nibble * 0x00204081u) & 0x01010101u;
            memcpy(out + g * 64, &bytes, 4);
        }
    }
}

#define BF_ACTIVATIONS_BODY                                                                                     \
    for (long k = from; k < features; k++) {                                                                    \
        const uint8_t v = (uint8_t)(xi[k] >> shift);                                                            \
        qi[k] = v;                                                                                              \
        s += v;                                                                                                 \
    }                                                                                                           \
    for (long k = features; k < kpad; k++) qi[k] = 0;

#if defined(__x86_64__)
#include <immintrin.h>
// 32 inputs per step: shift in 16-bit lanes, mask the bits that crossed from the neighbour byte, sum with vpsadbw
__attribute__((target(BF_AVX2_TARGET)))
static void bf_stem_int8_activations_avx2(const uint8_t *x, long n, long features, int shift, uint8_t *q, long *sumQ) {
    const long kpad = (features + 63) / 64 * 64;
    const __m256i mask = _mm256_set1_epi8((char)(0xFF >> shift));
    const __m128i count = _mm_cvtsi32_si128(shift);
    for (long i = 0; i < n; i++) {
        const uint8_t *xi = x + i * features;
        uint8_t *qi = q + i * kpad;
        __m256i total = _mm256_setzero_si256();
        long from = 0;
        for (; from + 32 <= features; from += 32) {
            const __m256i v = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(xi + from)), count), mask);
            _mm256_storeu_si256((__m256i *)(qi + from), v);
            total = _mm256_add_epi64(total, _mm256_sad_epu8(v, _mm256_setzero_si256()));
        }
        long long lanes[4];
        _mm256_storeu_si256((__m256i *)lanes, total);
        long s = (long)(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
        BF_ACTIVATIONS_BODY
        sumQ[i] = s;
    }
}
#endif

void bf_stem_int8_activations(const uint8_t *x, long n, long features, int shift, uint8_t *q, long *sumQ) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        bf_stem_int8_activations_avx2(x, n, features, shift, q, sumQ);
        return;
    }
#endif
    const long kpad = (features + 63) / 64 * 64;
    for (long i = 0; i < n; i++) {
        const uint8_t *xi = x + i * features;
        uint8_t *qi = q + i * kpad;
        long s = 0;
        const long from = 0;
        BF_ACTIVATIONS_BODY
        sumQ[i] = s;
    }
}

#if BF_X86
// ---------------------------------------------------------------------------------------------------------------
// AVX-512 VNNI: tiles of 4 samples × 4 blocks of 16 rows.

#define BF_VNNI_TARGET "avx512f,avx512bw,avx512vl,avx512vnni"

#define BF_VNNI_TILE(MS, NB)                                                                                    \
    __attribute__((target(BF_VNNI_TARGET), always_inline)) static inline void bf_vnni_##MS##x##NB(             \
        const uint8_t *q, long kpad, long used, long i, const uint8_t *w, long b, int32_t *acc, long ldacc) {   \
        const long quads = kpad / 4;                                                                            \
        __m512i c[MS][NB];                                                                                      \
        for (int u = 0; u < MS; u++)                                                                            \
            for (int v = 0; v < NB; v++) c[u][v] = _mm512_setzero_si512();                                      \
        for (long g = 0; g < used; g++) {                                                                       \
            __m512i wv[NB];                                                                                     \
            for (int v = 0; v < NB; v++) wv[v] = _mm512_loadu_si512((const void *)(w + ((b + v) * quads + g) * 64)); \
            for (int u = 0; u < MS; u++) {                                                                      \
                int32_t four;                                                                                   \
                memcpy(&four, q + (i + u) * kpad + g * 4, 4);                                                   \
                const __m512i xv = _mm512_set1_epi32(four);                                                     \
                for (int v = 0; v < NB; v++) c[u][v] = _mm512_dpbusd_epi32(c[u][v], xv, wv[v]);                 \
            }                                                                                                   \
        }                                                                                                       \
        for (int u = 0; u < MS; u++)                                                                            \
            for (int v = 0; v < NB; v++) _mm512_storeu_si512((void *)(acc + (i + u) * ldacc + (b + v) * 16), c[u][v]); \
    }

BF_VNNI_TILE(4, 4)
BF_VNNI_TILE(1, 4)
BF_VNNI_TILE(4, 1)
BF_VNNI_TILE(1, 1)

__attribute__((target(BF_VNNI_TARGET)))
static void bf_stem_vnni(const uint8_t *q, long n, long kpad, long used, const uint8_t *w, long blocks, int32_t *acc,
                         long ldacc) {
    // `used` quads of four inputs hold data (the rest of kpad is zero padding: a 5 × 5 conv window is 7 of 16)
    // 4 blocks (64 rows × kpad bytes: 52 KB for 784 inputs) at a time while the samples stream past
    for (long b0 = 0; b0 < blocks; b0 += 4) {
        const long nb = blocks - b0 < 4 ? blocks - b0 : 4;
        long i = 0;
        for (; i + 4 <= n; i += 4) {
            if (nb == 4) bf_vnni_4x4(q, kpad, used, i, w, b0, acc, ldacc);
            else for (long b = b0; b < b0 + nb; b++) bf_vnni_4x1(q, kpad, used, i, w, b, acc, ldacc);
        }
        for (; i < n; i++) {
            if (nb == 4) bf_vnni_1x4(q, kpad, used, i, w, b0, acc, ldacc);
            else for (long b = b0; b < b0 + nb; b++) bf_vnni_1x1(q, kpad, used, i, w, b, acc, ldacc);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AMX-INT8: C tiles 0–3 (2 × 2 blocks of 16 samples × 16 rows), A tiles 4–5, B tiles 6–7.

#define BF_AMX_TARGET "amx-tile,amx-int8"
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette;
    uint8_t startRow;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) bf_tile_config;

static int bf_amx_state = -1;   // -1 unknown, 0 unavailable, 1 usable

static int bf_amx_usable(void) {
    const int known = __atomic_load_n(&bf_amx_state, __ATOMIC_ACQUIRE);
    if (known >= 0) return known;
    int ok = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8")) {
        // process-wide permission to use the tile data state (Linux 5.16+); granted once, kept for the process
        if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) {
            unsigned long bitmask = 0;
            if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bitmask) == 0 && (bitmask & (1UL << XFEATURE_XTILEDATA)))
                ok = 1;
        }
    }
    __atomic_store_n(&bf_amx_state, ok, __ATOMIC_RELEASE);
    return ok;
}

__attribute__((target(BF_AMX_TARGET)))
static void bf_stem_amx(const uint8_t *q, long n, long kpad, const uint8_t *w, long blocks, int32_t *acc,
                        long ldacc) {
    bf_tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    const long quads = kpad / 4;
    const long chunks = kpad / 64;
    const long bstride = quads * 64;     // bytes between consecutive row blocks
    // samples in groups of 16 (the caller pads q and acc to a multiple of 16 rows)
    const long groups = (n + 15) / 16;
    for (long b = 0; b < blocks; b += 2) {
        const int two = b + 1 < blocks;
        const uint8_t *w0 = w + b * bstride, *w1 = w0 + bstride;
        long g = 0;
        for (; g + 2 <= groups; g += 2) {
            const uint8_t *a0 = q + g * 16 * kpad, *a1 = a0 + 16 * kpad;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (long c = 0; c < chunks; c++) {
                _tile_loadd(4, a0 + c * 64, kpad);
                _tile_loadd(5, a1 + c * 64, kpad);
                _tile_loadd(6, w0 + c * 16 * 64, 64);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(2, 5, 6);
                if (two) {
                    _tile_loadd(7, w1 + c * 16 * 64, 64);
                    _tile_dpbusd(1, 4, 7);
                    _tile_dpbusd(3, 5, 7);
                }
            }
            int32_t *o = acc + g * 16 * ldacc + b * 16;
            _tile_stored(0, o, ldacc * 4);
            _tile_stored(2, o + 16 * ldacc, ldacc * 4);
            if (two) {
                _tile_stored(1, o + 16, ldacc * 4);
                _tile_stored(3, o + 16 * ldacc + 16, ldacc * 4);
            }
        }
        if (g < groups) {
            const uint8_t *a0 = q + g * 16 * kpad;
            _tile_zero(0); _tile_zero(1);
            for (long c = 0; c < chunks; c++) {
                _tile_loadd(4, a0 + c * 64, kpad);
                _tile_loadd(6, w0 + c * 16 * 64, 64);
                _tile_dpbusd(0, 4, 6);
                if (two) {
                    _tile_loadd(7, w1 + c * 16 * 64, 64);
                    _tile_dpbusd(1, 4, 7);
                }
            }
            int32_t *o = acc + g * 16 * ldacc + b * 16;
            _tile_stored(0, o, ldacc * 4);
            if (two) _tile_stored(1, o + 16, ldacc * 4);
        }
    }
    _tile_release();
}

// ---------------------------------------------------------------------------------------------------------------
// Threshold: AVX-512 compares 16 channels at once into 16 output bits.

__attribute__((target("avx512f,avx512bw")))
static void bf_stem_threshold_avx512(const int32_t *acc, long ldacc, long n, long S, const long *sumQ,
                                     const int32_t *t, uint64_t *h, long ldh) {
    const long words = (S + 63) / 64;
    for (long i = 0; i < n; i++) {
        uint16_t *out = (uint16_t *)(h + i * ldh);
        memset(h + i * ldh, 0, (size_t)words * 8);
        const __m512i q = _mm512_set1_epi32((int)sumQ[i]);
        const int32_t *a = acc + i * ldacc;
        for (long j = 0; j < S; j += 16) {
            const long valid = S - j < 16 ? S - j : 16;
            const __mmask16 vm = (__mmask16)((1u << valid) - 1);
            const __m512i av = _mm512_maskz_loadu_epi32(vm, a + j);
            const __m512i tv = _mm512_maskz_loadu_epi32(vm, t + j);
            // 2·acc − q ≥ t
            const __m512i lhs = _mm512_sub_epi32(_mm512_add_epi32(av, av), q);
            out[j / 16] = (uint16_t)(_mm512_cmpge_epi32_mask(lhs, tv) & vm);
        }
    }
}
#endif

// The threshold's loops over samples and 64-channel words, the scalar rule for the channels that STEP8 (a loop over
// whole groups of 8 from j, or nothing) leaves.
#define BF_THRESHOLD_BODY(STEP8)                                                                                \
    const long words = (S + 63) / 64;                                                                           \
    for (long i = 0; i < n; i++) {                                                                              \
        const int32_t *a = acc + i * ldacc;                                                                     \
        uint64_t *out = h + i * ldh;                                                                            \
        const long q = sumQ[i];                                                                                 \
        for (long wd = 0; wd < words; wd++) {                                                                   \
            uint64_t word = 0;                                                                                  \
            const long j0 = wd * 64, end = j0 + 64 < S ? j0 + 64 : S;                                           \
            long j = j0;                                                                                        \
            STEP8                                                                                               \
            for (; j < end; j++) word |= (uint64_t)(2 * (long)a[j] - q >= (long)t[j]) << (j - j0);             \
            out[wd] = word;                                                                                     \
        }                                                                                                       \
    }

static void bf_stem_threshold_generic(const int32_t *acc, long ldacc, long n, long S, const long *sumQ,
                                      const int32_t *t, uint64_t *h, long ldh) {
    BF_THRESHOLD_BODY()
}

#if BF_X86
// AVX2: 8 channels per compare, `vmovmskps` of t > 2·acc − q inverted. AVX2 CPUs ran the scalar loop before: 12–20 %
// of `fashion` v2's time at batch 256 on an AMD EPYC Zen 3 (and the share moved with the loop's code alignment).
// 2·acc − q is exact in int32: |acc| and q are at most features × 255.
#define BF_THRESHOLD_AVX2_STEP8                                                                                 \
    for (; j + 8 <= end; j += 8) {                                                                              \
        const __m256i av = _mm256_loadu_si256((const __m256i *)(a + j));                                        \
        const __m256i tv = _mm256_loadu_si256((const __m256i *)(t + j));                                        \
        const __m256i lhs = _mm256_sub_epi32(_mm256_add_epi32(av, av), _mm256_set1_epi32((int)q));              \
        const unsigned below = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(tv, lhs)));  \
        word |= (uint64_t)(~below & 0xFFu) << (j - j0);                                                         \
    }
__attribute__((target(BF_AVX2_TARGET)))
static void bf_stem_threshold_avx2(const int32_t *acc, long ldacc, long n, long S, const long *sumQ,
                                   const int32_t *t, uint64_t *h, long ldh) {
    BF_THRESHOLD_BODY(BF_THRESHOLD_AVX2_STEP8)
}
#endif

int bf_stem_threshold_path_supported(int path) {
#if BF_X86
    __builtin_cpu_init();
    switch (path) {
    case BF_THRESHOLD_PORTABLE: return 1;
    case BF_THRESHOLD_AVX2: return __builtin_cpu_supports("avx2") ? 1 : 0;
    case BF_THRESHOLD_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") ? 1 : 0;
    default: return 0;
    }
#else
    return path == BF_THRESHOLD_PORTABLE;
#endif
}

int bf_stem_threshold_with(int path, const int32_t *acc, long ldacc, long n, long S, const long *sumQ,
                           const int32_t *t, uint64_t *h, long ldh) {
    if (!bf_stem_threshold_path_supported(path)) return 0;
    switch (path) {
#if BF_X86
    case BF_THRESHOLD_AVX2: bf_stem_threshold_avx2(acc, ldacc, n, S, sumQ, t, h, ldh); return 1;
    case BF_THRESHOLD_AVX512: bf_stem_threshold_avx512(acc, ldacc, n, S, sumQ, t, h, ldh); return 1;
#endif
    default: bf_stem_threshold_generic(acc, ldacc, n, S, sumQ, t, h, ldh); return 1;
    }
}

void bf_stem_threshold(const int32_t *acc, long ldacc, long n, long S, const long *sumQ, const int32_t *t,
                       uint64_t *h, long ldh) {
    static const int best[] = {BF_THRESHOLD_AVX512, BF_THRESHOLD_AVX2, BF_THRESHOLD_PORTABLE};
    for (int i = 0; i < 3; i++)
        if (bf_stem_threshold_with(best[i], acc, ldacc, n, S, sumQ, t, h, ldh)) return;
}

int bf_stem_path_supported(int path) {
#if BF_X86
    __builtin_cpu_init();
    switch (path) {
    case BF_STEM_LOOKUP_AVX2: return __builtin_cpu_supports("avx2") ? 1 : 0;
    case BF_STEM_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") ? 1 : 0;
    case BF_STEM_AMX: return bf_amx_usable();
    default: return 0;
    }
#else
    (void)path;
    return 0;
#endif
}

void bf_stem_int8(int path, const uint8_t *q, long n, long features, const uint8_t *weights, long blocks,
                  int32_t *acc, long ldacc) {
    if (n <= 0) return;
    const long kpad = (features + 63) / 64 * 64;
#if BF_X86
    if (path == BF_STEM_AMX && bf_stem_path_supported(BF_STEM_AMX)) {
        bf_stem_amx(q, n, kpad, weights, blocks, acc, ldacc);
        return;
    }
    if (path == BF_STEM_VNNI && bf_stem_path_supported(BF_STEM_VNNI)) {
        bf_stem_vnni(q, n, kpad, (features + 3) / 4, weights, blocks, acc, ldacc);
        return;
    }
#endif
    // no int8 path on this CPU: plain C over the same layout (never chosen automatically; keeps callers total)
    const long quads = kpad / 4;
    for (long i = 0; i < n; i++) {
        for (long b = 0; b < blocks; b++) {
            for (long r = 0; r < 16; r++) {
                long s = 0;
                for (long k = 0; k < kpad; k++) s += (long)q[i * kpad + k] * weights[(b * quads + k / 4) * 64 + r * 4 + (k & 3)];
                acc[i * ldacc + b * 16 + r] = (int32_t)s;
            }
        }
    }
}
