// Binary convolution front (docs/MODEL_FORMAT.md, format v2 "conv"): im2col of one image into patches that the stem
// kernels (lookup, VNNI, AMX, or the portable loop below) treat as samples, then OR-pooling of the thresholded bits.
#include <string.h>
#include "bf_kernels.h"

long bf_conv_work_bytes(long H, long W, long k, long pad, long Wo) {
    const long img = ((H + 2 * pad) * (W + 2 * pad) + 16 + 63) / 64 * 64;
    return img + (H + 2 * pad) * Wo * (long)sizeof(int32_t);
}

// The image shifted right by `shift`, inside a zero border of `pad` (row stride W + 2·pad), 16 bytes of zero slack
// after it (the window copies below read 8 bytes at a time).
static void conv_padded(const uint8_t *x, long H, long W, long pad, int shift, uint8_t *img) {
    const long Wp = W + 2 * pad;
    memset(img, 0, (size_t)((H + 2 * pad) * Wp + 16));
    for (long y = 0; y < H; y++) {
        uint8_t *dst = img + (y + pad) * Wp + pad;
        const uint8_t *src = x + y * W;
        for (long xx = 0; xx < W; xx++) dst[xx] = (uint8_t)(src[xx] >> shift);
    }
}

// Window of position (oy, ox) to dst (k rows of k bytes, back to back). With k ≤ 8 each row is one 8-byte copy: the
// bytes past the row are overwritten by the next row or lie in the caller's slack / padding (8 bytes past the
// window, which the caller either ignores — zero weights — or overwrites with the next window).
static inline void conv_window(const uint8_t *img, long Wp, long k, long stride, long oy, long ox, uint8_t *dst) {
    const uint8_t *src = img + oy * stride * Wp + ox * stride;
    if (k <= 8) {
        for (long ky = 0; ky < k; ky++) {
            uint64_t v;
            memcpy(&v, src + ky * Wp, 8);
            memcpy(dst + ky * k, &v, 8);
        }
    } else {
        for (long ky = 0; ky < k; ky++) memcpy(dst + ky * k, src + ky * Wp, (size_t)k);
    }
}

void bf_conv_patches(const uint8_t *x, long H, long W, long k, long stride, long pad, long Ho, long Wo, long reps,
                     uint8_t *work, uint8_t *patches) {
    const long kk = k * k, Wp = W + 2 * pad;
    conv_padded(x, H, W, pad, 0, work);
    // the copies in address order: each one's 8-byte overrun is written over by the next
    for (long oy = 0; oy < Ho; oy++)
        for (long ox = 0; ox < Wo; ox++)
            for (long j = 0; j < reps; j++)
                conv_window(work, Wp, k, stride, oy, ox, patches + ((oy * Wo + ox) * reps + j) * kk);
}

void bf_conv_activations(const uint8_t *x, long H, long W, long k, long stride, long pad, long Ho, long Wo, long reps,
                         int shift, uint8_t *work, uint8_t *q, long kpad, long *sumQ) {
    const long kk = k * k;
    const long Wp = W + 2 * pad, Hp = H + 2 * pad;
    uint8_t *img = work;
    int32_t *rowsum = (int32_t *)(work + ((Hp * Wp + 16 + 63) / 64 * 64));
    conv_padded(x, H, W, pad, shift, img);
    // window sums Σq by separable box sums: k-wide sums along each padded row (as differences of the row's running
    // sum: no loop over the window per output), then k of them down the column
    for (long y = 0; y < Hp; y++) {
        const uint8_t *row = img + y * Wp;
        int32_t prefix[Wp + 1];
        prefix[0] = 0;
        for (long xx = 0; xx < Wp; xx++) prefix[xx + 1] = prefix[xx] + row[xx];
        for (long ox = 0; ox < Wo; ox++) rowsum[y * Wo + ox] = prefix[ox * stride + k] - prefix[ox * stride];
    }
    for (long oy = 0; oy < Ho; oy++) {
        for (long ox = 0; ox < Wo; ox++) {
            const long r = oy * Wo + ox;
            for (long j = 0; j < reps; j++) conv_window(img, Wp, k, stride, oy, ox, q + r * kpad + j * kk);
            long t = 0;
            for (long ky = 0; ky < k; ky++) t += rowsum[(oy * stride + ky) * Wo + ox];
            sumQ[r] = t * reps;
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

void bf_conv_pool(uint64_t *bits, long Ho, long Wo, long pool) {
    // cell (py, px) reads positions whose index is at least its own (pool >= 1, Wo >= Wo / pool), and every later
    // cell reads only positions past its own index: each cell can be written over the first positions in turn
    const long Hp = Ho / pool, Wp = Wo / pool;
    for (long py = 0; py < Hp; py++) {
        for (long px = 0; px < Wp; px++) {
            uint64_t v = 0;
            for (long dy = 0; dy < pool; dy++) {
                const uint64_t *row = bits + (py * pool + dy) * Wo + px * pool;
                for (long dx = 0; dx < pool; dx++) v |= row[dx];
            }
            bits[py * Wp + px] = v;
        }
    }
}

void bf_conv_pack(const uint64_t *cells, long count, long channels, uint64_t *f, long wf) {
    if (channels == 64) {
        memcpy(f, cells, (size_t)count * sizeof(uint64_t));
        if (wf > count) memset(f + count, 0, (size_t)(wf - count) * sizeof(uint64_t));
        return;
    }
    // a bit stream: `channels` bits per cell appended in a register, a word stored whenever 64 are complete
    const uint64_t mask = (1ULL << channels) - 1;
    uint64_t acc = 0;
    long used = 0, w = 0;
    for (long i = 0; i < count; i++) {
        const uint64_t v = cells[i] & mask;
        acc |= v << used;
        used += channels;
        if (used >= 64) {
            f[w++] = acc;
            used -= 64;
            acc = used > 0 ? v >> (channels - used) : 0;
        }
    }
    if (used > 0) f[w++] = acc;
    while (w < wf) f[w++] = 0;
}

/* ----------------------------------------------------------------------------------------- second conv layer */

/// `len` (1…64) bits of `src` from bit `off`.
static inline uint64_t bits_at(const uint64_t *src, long off, long len) {
    const long w = off >> 6, sh = off & 63;
    uint64_t v = src[w] >> sh;
    if (sh != 0 && sh + len > 64) v |= src[w + 1] << (64 - sh);
    return len == 64 ? v : v & ((1ULL << len) - 1);
}

/// ORs `len` (1…64) bits `v` (nothing above them set) into `dst` from bit `off`.
static inline void or_bits(uint64_t *dst, long off, long len, uint64_t v) {
    const long w = off >> 6, sh = off & 63;
    dst[w] |= v << sh;
    if (sh != 0 && sh + len > 64) dst[w + 1] |= v >> (64 - sh);
}

/// Copies `len` bits from bit `from` of `src` into bit `to` of `dst` (zero there), 64 at a time.
static inline void copy_bits(const uint64_t *src, long from, uint64_t *dst, long to, long len) {
    while (len > 0) {
        const long l = len < 64 ? len : 64;
        or_bits(dst, to, l, bits_at(src, from, l));
        from += l;
        to += l;
        len -= l;
    }
}

void bf_conv2_windows(const uint64_t *f, long ldf, long n, long Hp, long Wp, long C1, long k, long stride, long Ho,
                      long Wo, uint64_t *rows, long ldr) {
    (void)Hp;
    const long run = k * C1;
    if (C1 % 8 == 0 && run >= 64) {
        // byte-aligned runs (C1 a multiple of 8): each run is copied in unaligned 8-byte pieces, the last one
        // overlapping the one before; the runs fill the row's bytes up to k·run / 8, the rest of its last word is
        // cleared first
        const long rb = run / 8;
        for (long i = 0; i < n; i++) {
            const uint8_t *map = (const uint8_t *)(f + i * ldf);
            for (long oy = 0; oy < Ho; oy++) {
                for (long ox = 0; ox < Wo; ox++) {
                    uint64_t *row = rows + ((i * Ho + oy) * Wo + ox) * ldr;
                    uint8_t *dst = (uint8_t *)row;
                    row[ldr - 1] = 0;
                    for (long ky = 0; ky < k; ky++) {
                        const uint8_t *src = map + ((oy * stride + ky) * Wp + ox * stride) * C1 / 8;
                        uint8_t *d = dst + ky * rb;
                        long b = 0;
                        for (; b + 8 <= rb; b += 8) {
                            uint64_t v;
                            memcpy(&v, src + b, 8);
                            memcpy(d + b, &v, 8);
                        }
                        if (b < rb) {
                            uint64_t v;
                            memcpy(&v, src + rb - 8, 8);
                            memcpy(d + rb - 8, &v, 8);
                        }
                    }
                }
            }
        }
        return;
    }
    for (long i = 0; i < n; i++) {
        const uint64_t *map = f + i * ldf;
        for (long oy = 0; oy < Ho; oy++) {
            for (long ox = 0; ox < Wo; ox++) {
                uint64_t *row = rows + ((i * Ho + oy) * Wo + ox) * ldr;
                memset(row, 0, (size_t)ldr * sizeof(uint64_t));
                for (long ky = 0; ky < k; ky++) {
                    const long from = ((oy * stride + ky) * Wp + ox * stride) * C1;
                    copy_bits(map, from, row, ky * run, run);
                }
            }
        }
    }
}

void bf_conv2_pool(const uint64_t *bits, long ldb, long n, long Ho, long Wo, long pool, long C2, uint64_t *out, long ldo) {
    const long Hp = Ho / pool, Wp = Wo / pool;
    if (pool == 1 && ldb == 1) {
        // no pooling, one word per position (C2 ≤ 64): the positions' bits appended as a stream (bf_conv_pack)
        for (long i = 0; i < n; i++) bf_conv_pack(bits + i * Ho * Wo * ldb, Ho * Wo, C2, out + i * ldo, ldo);
        return;
    }
    for (long i = 0; i < n; i++) {
        uint64_t *o = out + i * ldo;
        memset(o, 0, (size_t)ldo * sizeof(uint64_t));
        const uint64_t *b = bits + i * Ho * Wo * ldb;
        for (long py = 0; py < Hp; py++) {
            for (long px = 0; px < Wp; px++) {
                const long cell = (py * Wp + px) * C2;
                for (long c = 0; c < C2; c += 64) {
                    const long l = C2 - c < 64 ? C2 - c : 64;
                    uint64_t v = 0;
                    for (long dy = 0; dy < pool; dy++) {
                        for (long dx = 0; dx < pool; dx++) {
                            v |= b[((py * pool + dy) * Wo + px * pool + dx) * ldb + (c >> 6)];
                        }
                    }
                    if (l < 64) v &= (1ULL << l) - 1;
                    or_bits(o, cell + c, l, v);
                }
            }
        }
    }
}
