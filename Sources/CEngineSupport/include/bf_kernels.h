#ifndef BF_KERNELS_H
#define BF_KERNELS_H

#include <stdint.h>

/// The target of every AVX2 function: `avx2` plus Haswell's tuning. The build targets baseline x86-64 (or
/// x86-64-v2), whose generic tuning splits each unaligned 256-bit load into a 128-bit load and a `vinserti128`,
/// a vector ALU operation in the kernels' inner loops (the XNOR kernel ran at 0.79-0.87x on an AMD EPYC Zen 3
/// built that way); no AVX2 CPU needs that split.
#define BF_AVX2_TARGET "avx2,tune=haswell"

/// Instruction-set paths of the binary kernels. Every path computes the same integers; the engine picks the best
/// one the running CPU supports (`bf_xnor_best_path`), or the one `BITFLEET_KERNEL_PATH` names.
enum {
    /// Plain C, `__builtin_popcountll` (a `popcnt` instruction where the CPU has one): any x86-64 or Arm CPU.
    BF_XNOR_PORTABLE = 0,
    /// AVX2: `vpshufb` nibble popcounts summed in byte lanes, folded with `vpsadbw`.
    BF_XNOR_AVX2 = 1,
    /// AVX-512 with VPOPCNTDQ: `vpopcntq` on 512-bit lanes.
    BF_XNOR_AVX512 = 2,
    BF_XNOR_PATH_COUNT = 3
};

/// 1 when the running CPU can execute `path`.
int bf_xnor_path_supported(int path);

/// Rows per interleaved block: weights are re-laid so that word k of 8 consecutive rows is contiguous.
#define BF_XNOR_BLOCK_ROWS 8

/// Re-lays `rows` packed rows of `words` UInt64 (row stride `ld`) into blocks of 8 rows:
/// `dst[(b × words + k) × 8 + r] = src[(8b + r) × ld + k]`, rows past `rows` zero.
/// `dst` holds `ceil(rows / 8) × 8 × words` words.
void bf_xnor_interleave(const uint64_t *src, long ld, long rows, long words, uint64_t *dst);

/// Raw popcounts: `out[i × ldo + j] = popcount(a_i XOR w_j)` for samples `i < n`, rows `j < m`.
/// `a` holds n rows of `words` (stride `lda`); `w` is interleaved by `bf_xnor_interleave`.
void bf_xnor_popcounts(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                       int32_t *out, long ldo);

/// Fused threshold: bit j of output row i (row stride `ldbits` words) is set when
/// `popcount(a_i XOR w_j) ≤ maxPop[j]`; every other bit of the first `ceil(m / 64)` words of each row is zero.
void bf_xnor_threshold(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                       const int32_t *maxPop, uint64_t *bits, long ldbits);

/// `bf_xnor_threshold` that also prefetches `nextBytes` at `next` into L2 while it runs (AVX-512 path: one line per
/// k step of its tiles), for the next expert's weights: with hundreds of experts each one's are cold.
void bf_xnor_threshold_prefetch(int path, const uint64_t *a, long lda, long n, const uint64_t *w, long m, long words,
                                const int32_t *maxPop, uint64_t *bits, long ldbits, const void *next, long nextBytes);

/// Rows per panel of the AVX2 lookup kernel's layout (one 32-byte vector holds one K byte's nibbles of 32 rows).
#define BF_XNOR_LUT_PANEL 32
/// The AVX2 lookup kernel's layout of a threshold layer: per panel of 32 rows and per K byte, 32 bytes of the rows'
/// low nibbles then 32 of their high nibbles (rows in the order `bf_xnor_threshold_lut` needs; rows past `rows`
/// zero); then per panel, for each of `levels` (1 or 2) threshold levels, its rows' `maxPop` thresholds as 32 int16
/// in the same order, clamped to −1 … 32 767 (so the kernel compares them as they are, with no per-call work);
/// `maxPop` holds `levels × rows` (level v's at `maxPop + v × rows`). 1 when the lookup kernel runs for a `rows` ×
/// `words` layer on `path` (AVX2 on a CPU with it, ≥ 32 rows, ≤ 511 words).
int bf_xnor_lut_used(int path, long rows, long words);
/// Bytes of the lookup layout: `ceil(rows / 32) × (words × 8 × 64 + 64 × levels)`.
long bf_xnor_lut_bytes(long rows, long words, long levels);
void bf_xnor_lut_layout(const uint64_t *src, long ld, long rows, long words, const int32_t *maxPop, long levels,
                        uint8_t *dst);

/// `bf_xnor_threshold_prefetch` with the same result, run by the AVX2 lookup kernel over `lut` (laid out by
/// `bf_xnor_lut_layout` from the same rows as `w` and the same `maxPop` and `levels`) where `lut` is not null,
/// `n ≥ 2` and `bf_xnor_lut_used(path, m, words)`; otherwise by the kernel of `path` over `w`. With `levels` 2
/// (format v6) `maxPop` holds 2 × m thresholds and each output row gets a second set of bits, against
/// `maxPop + m`, starting `levelWords` words after the first (both sets zero past m).
void bf_xnor_threshold_lut(int path, const uint64_t *a, long lda, long n, const uint64_t *w, const uint8_t *lut,
                           long m, long words, const int32_t *maxPop, long levels, uint64_t *bits, long ldbits,
                           long levelWords, const void *next, long nextBytes);

/// Router scores of one sample from its E XNOR popcounts against the router rows of S bits:
/// `out[e] = scale[e] · (S − 2·pops[e]) + bias[e]`, multiply and add rounded separately (as `reference.py`). A C loop
/// the compiler vectorises: with hundreds of experts the router's scalar Swift loop was a tenth of the time.
void bf_router_scores(const int32_t *pops, long E, int32_t S, const float *scale, const float *bias, float *out);

/// Indices of the `k` largest of the `n` scores at `r`, best first, into `out` (k ≤ n): ties go to the lower index,
/// NaN ranks last. Where the CPU has AVX-512F: up to 16 scores without NaN are one vector, ranked in k rounds of
/// masked maximum and lowest equal index; with at least 32 scores, for k ≤ 16 and no NaN, one pass takes
/// the lane-wise maxima of the 16-score vectors (their k-th largest bounds the k-th score from below) and a second
/// offers only the scores at or above that bound; otherwise 16 scores at a time are compared with the current k-th
/// and only those above it are looked at.
void bf_select_topk(const float *r, long n, long k, int32_t *out);

/// `bf_router_scores` then `bf_select_topk` for one sample, fused where the CPU has AVX-512F, E ≥ 32 and k ≤ 16: the
/// scores are computed 16 at a time (same two roundings) while their lane-wise maxima are kept, so the top-k's
/// bound pass needs no extra read of them. The same scores and the same selection as the two calls.
void bf_router_select(const int32_t *pops, long E, int32_t S, const float *scale, const float *bias, float *scores,
                      long k, int32_t *selected);

/// Instruction-set paths of the stem (input layer): `acc[i × ldacc + j] = Σ_k q_ik · [w_jk = +1]` for 4-bit
/// activations q (≤ 4 input planes).
enum {
    /// AVX2 table lookup (T-MAC style), `bf_lut_stem`.
    BF_STEM_LOOKUP_AVX2 = 0,
    /// AVX-512 VNNI: `vpdpbusd`, unsigned activations × {0, 1} weight bytes.
    BF_STEM_VNNI = 1,
    /// AMX-INT8: `tdpbusd` on 16 × 64 tiles.
    BF_STEM_AMX = 2,
    BF_STEM_PATH_COUNT = 3
};

/// 1 when the running CPU (and, for AMX, the kernel: `arch_prctl(ARCH_REQ_XCOMP_PERM)`) allows `path`.
int bf_stem_path_supported(int path);

/// Bytes of the int8 weight layout (`bf_stem_int8_pack`) for `rows × features`.
long bf_stem_int8_bytes(long rows, long features);

/// Lays out stem weights for the VNNI and AMX kernels: per block of 16 rows and group of 4 inputs, 64 bytes
/// `[r × 4 + t] = bit(8·... )` of row 16b + r, input 4g + t, as 0 or 1. Inputs are padded to a multiple of 64,
/// rows to a multiple of 16. `src` is packed rows of `ceil(features / 64)` words.
void bf_stem_int8_pack(const uint64_t *src, long rows, long features, uint8_t *dst);

/// Activations for the int8 kernels: `q[i × kpad + k] = x[i × features + k] >> shift` (zero padded to kpad =
/// features rounded up to 64); returns nothing; `sumQ[i] = Σ_k q_ik`.
void bf_stem_int8_activations(const uint8_t *x, long n, long features, int shift, uint8_t *q, long *sumQ);

/// `acc[i × ldacc + j] = Σ_k q_ik · w_jk` (w ∈ {0, 1}) for i < n, j < blocks × 16, with q from
/// `bf_stem_int8_activations` and weights from `bf_stem_int8_pack`. `path` is BF_STEM_VNNI or BF_STEM_AMX.
void bf_stem_int8(int path, const uint8_t *q, long n, long features, const uint8_t *weights, long blocks,
                  int32_t *acc, long ldacc);

/// Stem threshold: bit j of `h` row i (stride `ldh` words; the first ceil(S/64) words are written whole) is set
/// when `2·acc[i × ldacc + j] − sumQ[i] ≥ t[j]`, for j < S.
void bf_stem_threshold(const int32_t *acc, long ldacc, long n, long S, const long *sumQ, const int32_t *t,
                       uint64_t *h, long ldh);

/// The threshold's paths, for tests: `bf_stem_threshold` runs the first this CPU supports of AVX-512, AVX2, portable.
enum {
    BF_THRESHOLD_PORTABLE = 0,
    BF_THRESHOLD_AVX2 = 1,
    BF_THRESHOLD_AVX512 = 2
};
int bf_stem_threshold_path_supported(int path);
/// `bf_stem_threshold` on `path`; 0 (nothing written) where this CPU lacks it.
int bf_stem_threshold_with(int path, const int32_t *acc, long ldacc, long n, long S, const long *sumQ,
                           const int32_t *t, uint64_t *h, long ldh);

/// Cycle counter of this thread (`perf_event_open`, PERF_COUNT_HW_CPU_CYCLES, user space only): a handle ≥ 0, or
/// -1 where the kernel or the hypervisor does not expose it.
int bf_perf_cycles_open(void);
/// Cycles counted since open (or -1).
long long bf_perf_cycles_read(int handle);
void bf_perf_cycles_close(int handle);

/// Seconds of thread CPU time for `iterations` × 20 dependent 64-bit `imul`s (3 cycles of latency each on every
/// x86-64 core since 2008, Intel and AMD alike, and not folded away by rename like an add of an immediate):
/// cycles/second = iterations × 60 / seconds. Negative where unsupported.
double bf_dependent_imul_seconds(long iterations);

/// Binary convolution front (format v2): the `k × k` window of every output position of one `H × W` uint8 image, row
/// by row: `patches[(oy × Wo + ox) × k² + ky × k + kx] = x[(oy·stride + ky − pad) × W + ox·stride + kx − pad]`, 0
/// outside the image (q = 0 in the padding). The stem kernels then treat each patch as one sample of `k²` features.
/// With `reps` > 1 each window is written `reps` times back to back (a patch of `reps × k²` bytes: a 2-bit conv's
/// rows, format v5, are 3 binary taps per pixel). `work` holds `bf_conv_work_bytes` bytes; `patches` has 8 bytes of
/// slack past its last window.
void bf_conv_patches(const uint8_t *x, long H, long W, long k, long stride, long pad, long Ho, long Wo, long reps,
                     uint8_t *work, uint8_t *patches);

/// Scratch bytes for `bf_conv_patches` and `bf_conv_activations` (the padded image and its row sums).
long bf_conv_work_bytes(long H, long W, long k, long pad, long Wo);

/// The windows as the int8 kernels' activations, fused: `q[r × kpad + j × k² + t] = window_r[t] >> shift` for
/// t < k² and each of `reps` copies j (bytes from reps·k² up to reps·k² + 8 may hold other pixels: the int8 weight
/// layout is zero there), `sumQ[r] = Σ` of the row's `reps × k²` values. `q` has 8 bytes of slack past its last row.
void bf_conv_activations(const uint8_t *x, long H, long W, long k, long stride, long pad, long Ho, long Wo, long reps,
                         int shift, uint8_t *work, uint8_t *q, long kpad, long *sumQ);

/// The portable conv kernel: `acc[r × ldacc + c] = Σ_t q_rt · wbits[c × kk + t]` with `q = patches >> shift` and
/// `wbits` 0 or 1, and `sumQ[r] = Σ_t q_rt`.
void bf_conv_accumulate(const uint8_t *patches, long rows, long kk, int shift, const uint8_t *wbits, long channels,
                        int32_t *acc, long ldacc, long *sumQ);

/// OR-pooling (max of ±1) in place: `bits` holds one word per conv output position, row-major `Ho × Wo` (channel c
/// = bit c); afterwards word `py × Wp + px` (`Hp = Ho / pool`, `Wp = Wo / pool`) is the OR of the `pool × pool`
/// window's words, the pooled cells that `bf_conv_pack` lays out as features.
void bf_conv_pool(uint64_t *bits, long Ho, long Wo, long pool);

/// The features of `count` pooled cells (one word each, channel c = bit c, `channels` ≤ 64): cell i's channels are
/// features `i × channels + c` of `f` (`wf` words, the bits past the last feature zero).
void bf_conv_pack(const uint64_t *cells, long count, long channels, uint64_t *f, long wf);

/// The second conv layer's windows (format v4): for each of `n` samples (the conv front's pooled map at `f + i × ldf`,
/// `Hp × Wp × C1` bits in (y, x, c) order) and each output position (oy, ox) of `Ho × Wo`, the `k × k × C1` window
/// bits (tap `(ky × k + kx) × C1 + c`) as one row of `ldr` words, the bits past `k²·C1` zero. Rows in (sample, oy, ox)
/// order: the activation rows of the XNOR kernels. A window row `ky` is one run of `k·C1` bits in the map.
void bf_conv2_windows(const uint64_t *f, long ldf, long n, long Hp, long Wp, long C1, long k, long stride, long Ho,
                      long Wo, uint64_t *rows, long ldr);

/// The second conv layer's bits OR-pooled and laid out as features: `bits` holds `n × Ho × Wo` rows of `ldb` words
/// (channel c = bit c of the row, `C2` channels), in (sample, oy, ox) order; sample i's features at `out + i × ldo`
/// are cell `(py × Wp2 + px)`'s channels at `(py × Wp2 + px) × C2 + c` (`Hp2 = Ho / pool`, `Wp2 = Wo / pool`, positions
/// past them dropped), the bits past the last feature of the first `ldo` words zero.
void bf_conv2_pool(const uint64_t *bits, long ldb, long n, long Ho, long Wo, long pool, long C2, uint64_t *out, long ldo);

/// Direct binary convolution (conv_direct.c): the filters as signed bytes, read by u8 × s8 dot products straight
/// from the padded image, the thresholds compared in registers.
enum {
    /// `vpmaddubsw` on 256-bit lanes (AVX2): 16 int16 channel sums per block for kernels up to 11 × 11, else 8 int32.
    BF_CONV_AVX2 = 0,
    /// `vpmaddubsw` on 512-bit lanes, 16 channels per block (AVX-512BW).
    BF_CONV_AVX512BW = 1,
    /// `vpdpbusd` on 512-bit lanes, 16 channels per block (AVX-512 VNNI).
    BF_CONV_VNNI = 2
};

/// 1 when the running CPU has what `path` needs.
int bf_conv_direct_supported(int path);

/// 1 when `path` computes filters of `bits` weight bits (1, or 2: format v5) and `k × k` exactly: 2-bit weights
/// (|w| ≤ 3) keep the int16 sums below 32 768 for k ≤ 8 (the VNNI path sums in int32: any k).
int bf_conv_direct_fits(int path, long k, long bits);

/// Bytes of `bf_conv_direct_pack`'s output (allocate them 64-byte aligned).
long bf_conv_direct_bytes(int path, long channels, long k, long bits);

/// The conv filters (`channels` rows of `k²` bits, `words` 64-bit words per row, bit t = tap ky·k + kx, 1 for +1)
/// and their thresholds in `path`'s layout. With `bits` 2 a row holds `3k²` bits, the high sign plane twice and then
/// the low one (`Model.swift`'s integer layer rows): tap t's weight is `2·h_t + l_t`, h_t bit t and l_t bit 2k² + t.
void bf_conv_direct_pack(int path, const uint64_t *wbits, long words, long bits, const int32_t *threshold,
                         long channels, long k, uint8_t *dst);

/// One `H × W` uint8 image through the conv filters and the OR-pooling: bit c of position (oy, ox) is 1 when
/// `Σ_{ky,kx} w_c(ky, kx) · q(oy·stride + ky − pad, ox·stride + kx − pad) ≥ threshold_c` with `q = x >> shift`, 0
/// outside the image (format v2), and `pooled[py × (Wo / pool) + px]` is the OR of those words over its
/// `pool × pool` window (`Ho / pool` rows; `pool` 1 gives each position's word). `work` holds `bf_conv_work_bytes`
/// bytes. Returns 0 (and writes nothing) when the CPU lacks `path` or the shape is out of the format's limits
/// (channels ≤ 64, k ≤ 15) or `bf_conv_direct_fits` says no. `bits`: as packed.
int bf_conv_direct(int path, const uint8_t *x, long H, long W, long k, long bits, long stride, long pad, long Ho,
                   long Wo, long pool, int shift, const uint8_t *packed, long channels, uint8_t *work,
                   uint64_t *pooled);

/// Table conv (conv_table.c): the same bits as `bf_conv_direct` for stride 2 with 2 × 2 OR-pooling, k ≤ 4 (padding
/// below k), at most 8 × 8 pooled cells and 64 channels, from tables of each kernel row's 16 sign-pattern sums
/// (AVX2). 1 when it runs that shape (`Ho`, `Wo` as the format computes them from `H`, `W`).
int bf_conv_table_fits(long H, long W, long k, long stride, long pad, long pool, long Ho, long Wo, long channels);

/// Bytes of `bf_conv_table_pack`'s output (allocate them 64-byte aligned).
long bf_conv_table_bytes(long channels, long bits);

/// The filters' sign patterns per kernel row and their thresholds, in the table conv's layout (`bits` 2: the sign
/// patterns of both planes, rows as for `bf_conv_direct_pack`).
void bf_conv_table_pack(const uint64_t *wbits, long words, long bits, const int32_t *threshold, long channels, long k,
                        uint8_t *dst);

/// One image through the table conv (see `bf_conv_direct` for the bits and the pooled layout; no `work`: its
/// scratch is per thread). Returns 0 (and writes nothing) when the CPU lacks AVX2 or the shape does not fit.
int bf_conv_table(const uint8_t *x, long H, long W, long k, long bits, long stride, long pad, long Ho, long Wo,
                  long pool, int shift, const uint8_t *packed, long channels, uint64_t *pooled);

#endif
