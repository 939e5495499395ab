// Binary convolution front (docs/MODEL_FORMAT.md, format v2 "conv"): im2col of one image into patches that the stem
// kernels (lookup, VNNI, AMX, or the portable loop below) treat as samples, then OR-pooling of the thresholded bits.
#include <string.h>
#include "bf_kernels.h"

void bf_conv_patches(const uint8_t *x, long H, long W, long k, long stride, long pad, long Ho, long Wo,
                     uint8_t *patches) {
    const long kk = k * k;
    for (long oy = 0; oy < Ho; oy++) {
        for (long ox = 0; ox < Wo; ox++) {
            uint8_t *dst = patches + (oy * Wo + ox) * kk;
            const long y0 = oy * stride - pad, x0 = ox * stride - pad;
            const int inside = y0 >= 0 && x0 >= 0 && y0 + k <= H && x0 + k <= W;
            if (inside) {
                for (long ky = 0; ky < k; ky++) memcpy(dst + ky * k, x + (y0 + ky) * W + x0, (size_t)k);
                continue;
            }
            for (long ky = 0; ky < k; ky++) {
                const long y = y0 + ky;
                for (long kx = 0; kx < k; kx++) {
                    const long xx = x0 + kx;
                    dst[ky * k + kx] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[y * W + xx] : 0;
                }
            }
        }
    }
}

void bf_conv_accumulate(const uint8_t *patches, long rows, long kk, int shift, const uint8_t *wbits, long channels,
                        int32_t *acc, long ldacc, long *sumQ) {
    for (long r = 0; r < rows; r++) {
        const uint8_t *p = patches + r * kk;
        int32_t *a = acc + r * ldacc;
        long total = 0;
        for (long t = 0; t < kk; t++) total += p[t] >> shift;
        sumQ[r] = total;
        for (long c = 0; c < channels; c++) {
            const uint8_t *w = wbits + c * kk;
            int32_t s = 0;
            for (long t = 0; t < kk; t++) s += (int32_t)((p[t] >> shift) & (uint8_t)(0 - w[t]));
            a[c] = s;
        }
    }
}

void bf_conv_pool(const uint64_t *bits, long ldb, long Ho, long Wo, long channels, long pool, uint64_t *f, long wf) {
    const long Hp = Ho / pool, Wp = Wo / pool;
    memset(f, 0, (size_t)wf * sizeof(uint64_t));
    const uint64_t mask = channels >= 64 ? ~0ULL : ((1ULL << channels) - 1);
    for (long py = 0; py < Hp; py++) {
        for (long px = 0; px < Wp; px++) {
            uint64_t v = 0;
            for (long dy = 0; dy < pool; dy++) {
                const uint64_t *row = bits + ((py * pool + dy) * Wo + px * pool) * ldb;
                for (long dx = 0; dx < pool; dx++) v |= row[dx * ldb];
            }
            v &= mask;
            const long o = (py * Wp + px) * channels;
            const long w = o >> 6, s = o & 63;
            f[w] |= v << s;
            if (s != 0 && s + channels > 64) f[w + 1] |= v >> (64 - s);
        }
    }
}
