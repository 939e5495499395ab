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
