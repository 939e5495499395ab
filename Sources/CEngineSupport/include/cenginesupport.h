#ifndef CENGINESUPPORT_H
#define CENGINESUPPORT_H

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

/// Runs `iterations` × 20 dependent integer adds (one cycle each on any modern x86 core) and returns the
/// thread CPU seconds they took (not wall time, so time given to other processes does not count):
/// cycles/second = iterations × 20 / seconds. Returns a negative value where unsupported.
double bf_dependent_add_seconds(long iterations);

/// Monotonic clock in seconds.
double bf_monotonic_seconds(void);

/// CPU time of this process (all threads) in seconds.
double bf_process_cpu_seconds(void);

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
