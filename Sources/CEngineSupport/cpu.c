#define _GNU_SOURCE
#include <sched.h>
#include <unistd.h>
#include <time.h>
#include "cenginesupport.h"

int bf_c_built_avx2(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}
int bf_c_built_popcnt(void) {
#if defined(__POPCNT__)
    return 1;
#else
    return 0;
#endif
}
int bf_c_built_bmi2(void) {
#if defined(__BMI2__)
    return 1;
#else
    return 0;
#endif
}
int bf_c_built_fma(void) {
#if defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

#if defined(__x86_64__) || defined(__i386__)
int bf_cpu_has_avx2(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx2") ? 1 : 0; }
int bf_cpu_has_popcnt(void) { __builtin_cpu_init(); return __builtin_cpu_supports("popcnt") ? 1 : 0; }
int bf_cpu_has_bmi2(void) { __builtin_cpu_init(); return __builtin_cpu_supports("bmi2") ? 1 : 0; }
int bf_cpu_has_fma(void) { __builtin_cpu_init(); return __builtin_cpu_supports("fma") ? 1 : 0; }
int bf_cpu_has_avx512f(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx512f") ? 1 : 0; }
#else
int bf_cpu_has_avx2(void) { return 0; }
int bf_cpu_has_popcnt(void) { return 0; }
int bf_cpu_has_bmi2(void) { return 0; }
int bf_cpu_has_fma(void) { return 0; }
int bf_cpu_has_avx512f(void) { return 0; }
#endif

int bf_usable_cpus(void) {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double bf_monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bf_dependent_add_seconds(long iterations) {
#if defined(__x86_64__)
    unsigned long x = 1;
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < iterations; i++) {
        __asm__ volatile(
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            : "+r"(x));
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    if (x == 0) return -2.0;  /* keeps x alive */
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
#else
    (void)iterations;
    return -1.0;
#endif
}

double bf_process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
