#ifndef CENGINESUPPORT_H
#define CENGINESUPPORT_H

#include <stdint.h>
#include "bf_kernels.h"

/// What the *C* compilation of this target assumed (reflects `-Xcc -march=...`).
int bf_c_built_avx2(void);
int bf_c_built_popcnt(void);
int bf_c_built_bmi2(void);
int bf_c_built_fma(void);

/// What the running CPU supports (`__builtin_cpu_supports`).
int bf_cpu_has_avx2(void);
int bf_cpu_has_popcnt(void);
int bf_cpu_has_bmi2(void);
int bf_cpu_has_fma(void);
int bf_cpu_has_avx512f(void);

/// CPUs this process may run on (sched_getaffinity), else online CPUs.
int bf_usable_cpus(void);

/// Monotonic clock in seconds.
double bf_monotonic_seconds(void);

/// A spin-wait hint (`pause` on x86, `yield` on Arm): slows the spinning thread's loop down to the memory system's
/// pace and leaves the core's execution units to the thread that shares it (SMT sibling, or a vCPU's neighbour).
void bf_cpu_relax(void);

/// CPU time of this process (all threads) in seconds.
double bf_process_cpu_seconds(void);

/// Table-lookup stem kernel (lut_stem.c): 1 when this CPU can run it (x86-64 with AVX2), whatever the build flags.
int bf_lut_available(void);

/// Lookup tables of one sample: inputs `x[0..<features]` become `q = x >> shift` (shift ≥ 4, so q ≤ 15), zero
/// padded to `pairs × 8`; table pair p (32 bytes at `tables + p × 32`) holds, in lane L (bytes 16L…16L+15), entry n =
/// Σ of the q of inputs 8p + 4L + t over the bits t set in n. Returns Σ q.
long bf_lut_build_tables(const uint8_t *x, long features, int shift, long pairs, uint8_t *tables);

/// `acc[i × ldacc + j] = Σ_k q_ik · bit_jk` for samples i < n and rows j < blocks × 16. `tables` holds n samples'
/// tables back to back (`pairs × 32` bytes each); `weights` holds, per block of 16 rows and pair p, 32 bytes:
/// byte 16L + r is the 4-bit index of row 16b + r over inputs 8p + 4L … 8p + 4L + 3. Row sums are 16-bit:
/// needs pairs ≤ 546 (15 × 4 368 = 65 520).
void bf_lut_stem(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                 int32_t *acc, long ldacc);

/// The same lookup on 512-bit lanes (AVX-512BW: four groups per `vpshufb`), same tables, layout and limits.
int bf_lut512_available(void);
void bf_lut_stem_avx512(const uint8_t *tables, long n, long pairs, const uint8_t *weights, long blocks,
                        int32_t *acc, long ldacc);

/// Evaluated by the clang importer inside the Swift module that imports this header, so it reflects the clang
/// options the *Swift* compilation saw (`-Xcc -march=...`).
static inline int bf_importer_built_avx2(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}
static inline int bf_importer_built_popcnt(void) {
#if defined(__POPCNT__)
    return 1;
#else
    return 0;
#endif
}

#endif
