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

void bf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

double bf_monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bf_process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------------------------------------------
// Cycle counting for the benchmark's per-cycle figures.

#if defined(__linux__)
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <string.h>
#include "bf_kernels.h"

int bf_perf_cycles_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_HARDWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_HW_CPU_CYCLES;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    // this thread, any CPU; counting starts now
    long fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    return fd < 0 ? -1 : (int)fd;
}

long long bf_perf_cycles_read(int handle) {
    if (handle < 0) return -1;
    long long value = 0;
    if (read(handle, &value, sizeof value) != (ssize_t)sizeof value) return -1;
    return value;
}

void bf_perf_cycles_close(int handle) {
    if (handle >= 0) close(handle);
}
#else
#include "bf_kernels.h"
int bf_perf_cycles_open(void) { return -1; }
long long bf_perf_cycles_read(int handle) { (void)handle; return -1; }
void bf_perf_cycles_close(int handle) { (void)handle; }
#endif

double bf_dependent_imul_seconds(long iterations) {
#if defined(__x86_64__)
    unsigned long x = 1, y = 3;
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < iterations; i++) {
        __asm__ volatile(
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            : "+r"(x) : "r"(y));
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    if (x == 0) return -2.0;  /* keeps x alive (3^n is odd, never 0) */
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
#else
    (void)iterations;
    return -1.0;
#endif
}
