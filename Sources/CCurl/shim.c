#include "ccurl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

// ---- typed setopt / getinfo ----------------------------------------------------------------------------------
CURLcode ccurl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
CURLcode ccurl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
CURLcode ccurl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
CURLcode ccurl_setopt_off_t(CURL *h, CURLoption o, int64_t v) { return curl_easy_setopt(h, o, (curl_off_t)v); }
CURLcode ccurl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
CURLcode ccurl_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }
CURLcode ccurl_getinfo_string(CURL *h, CURLINFO i, const char **v) { return curl_easy_getinfo(h, i, v); }
CURLcode ccurl_getinfo_off_t(CURL *h, CURLINFO i, int64_t *v) {
    curl_off_t x = 0;
    CURLcode rc = curl_easy_getinfo(h, i, &x);
    *v = (int64_t)x;
    return rc;
}

// ---- body sink -----------------------------------------------------------------------------------------------
void ccurl_sink_reset(ccurl_sink *s, size_t limit) {
    s->length = 0;
    s->limit = limit;
    s->exceeded = 0;
    s->oom = 0;
}

void ccurl_sink_free(ccurl_sink *s) {
    free(s->data);
    s->data = NULL;
    s->length = s->capacity = 0;
}

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    ccurl_sink *s = (ccurl_sink *)userdata;
    size_t n = size * nmemb;
    if (n == 0) return 0;
    if (s->limit != 0 && (s->length > s->limit || n > s->limit - s->length)) {
        s->exceeded = 1;
        return 0;   // abort: CURLE_WRITE_ERROR
    }
    if (s->length + n > s->capacity) {
        size_t cap = s->capacity ? s->capacity : 65536;
        while (cap < s->length + n) cap *= 2;
        if (s->limit != 0 && cap > s->limit) cap = s->limit;
        uint8_t *d = (uint8_t *)realloc(s->data, cap);
        if (!d) {
            s->oom = 1;
            return 0;
        }
        s->data = d;
        s->capacity = cap;
    }
    memcpy(s->data + s->length, ptr, n);
    s->length += n;
    return n;
}

CURLcode ccurl_install_sink(CURL *h, ccurl_sink *s) {
    CURLcode rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)s);
}

// ---- header capture ------------------------------------------------------------------------------------------
static size_t header_cb(char *buffer, size_t size, size_t nitems, void *userdata) {
    ccurl_headers *hd = (ccurl_headers *)userdata;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
        hd->content_encoding[0] = 0;   // a new response (redirect hop) starts
        return n;
    }
    static const char key[] = "content-encoding:";
    size_t kl = sizeof(key) - 1;
    if (n > kl && strncasecmp(buffer, key, kl) == 0) {
        size_t i = kl, j = 0;
        while (i < n && (buffer[i] == ' ' || buffer[i] == '\t')) i++;
        while (i < n && buffer[i] != '\r' && buffer[i] != '\n' && j + 1 < sizeof(hd->content_encoding)) {
            hd->content_encoding[j++] = (char)tolower((unsigned char)buffer[i++]);
        }
        while (j > 0 && (hd->content_encoding[j - 1] == ' ' || hd->content_encoding[j - 1] == '\t')) j--;
        hd->content_encoding[j] = 0;
    }
    return n;
}

CURLcode ccurl_install_header_capture(CURL *h, ccurl_headers *hd) {
    hd->content_encoding[0] = 0;
    CURLcode rc = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(h, CURLOPT_HEADERDATA, (void *)hd);
}

// ---- SSRF guard ----------------------------------------------------------------------------------------------
typedef struct v4range { uint32_t net; int prefix; const char *reason; } v4range;

static const v4range V4_BLOCKED[] = {
    {0x00000000u, 8, "this-network (0.0.0.0/8)"},
    {0x0A000000u, 8, "private (10.0.0.0/8)"},
    {0x64400000u, 10, "carrier-grade NAT (100.64.0.0/10)"},
    {0x7F000000u, 8, "loopback (127.0.0.0/8)"},
    {0xA9FE0000u, 16, "link-local (169.254.0.0/16)"},
    {0xAC100000u, 12, "private (172.16.0.0/12)"},
    {0xC0000000u, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {0xC0A80000u, 16, "private (192.168.0.0/16)"},
    {0xC6120000u, 15, "benchmarking (198.18.0.0/15)"},
    {0xE0000000u, 4, "multicast (224.0.0.0/4)"},
    {0xFFFFFFFFu, 32, "broadcast (255.255.255.255)"},
    {0xF0000000u, 4, "reserved (240.0.0.0/4)"},
};

static const char *classify_v4(uint32_t a) {   // a in host order
    for (size_t i = 0; i < sizeof(V4_BLOCKED) / sizeof(V4_BLOCKED[0]); i++) {
        uint32_t mask = V4_BLOCKED[i].prefix == 0 ? 0 : (0xFFFFFFFFu << (32 - V4_BLOCKED[i].prefix));
        if ((a & mask) == V4_BLOCKED[i].net) return V4_BLOCKED[i].reason;
    }
    return NULL;
}

static int v6_is_zero(const uint8_t *b, int from, int to) {
    for (int i = from; i < to; i++) if (b[i]) return 0;
    return 1;
}

// If `b` embeds an IPv4 address the kernel would route to (::ffff:a.b.c.d mapped, ::a.b.c.d compatible),
// return 1 and store it (host order).
static int v6_embedded_v4(const uint8_t *b, uint32_t *out) {
    if (v6_is_zero(b, 0, 10) && b[10] == 0xFF && b[11] == 0xFF) {
        *out = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) | b[15];
        return 1;
    }
    if (v6_is_zero(b, 0, 12) && !(v6_is_zero(b, 12, 15) && b[15] <= 1)) {   // ::a.b.c.d (not :: or ::1)
        *out = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) | b[15];
        return 1;
    }
    return 0;
}

static const char *classify_v6(const uint8_t *b) {
    uint32_t v4;
    if (v6_is_zero(b, 0, 16)) return "unspecified (::)";
    if (v6_is_zero(b, 0, 15) && b[15] == 1) return "loopback (::1)";
    if (v6_embedded_v4(b, &v4)) {
        const char *r = classify_v4(v4);
        return r ? r : NULL;
    }
    // NAT64 64:ff9b::/96 carries an IPv4 address in the low 32 bits.
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && v6_is_zero(b, 4, 12)) {
        v4 = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) | b[15];
        return classify_v4(v4);
    }
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "link-local (fe80::/10)";
    if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "site-local (fec0::/10)";
    if ((b[0] & 0xFE) == 0xFC) return "unique-local (fc00::/7)";
    if (b[0] == 0xFF) return "multicast (ff00::/8)";
    return NULL;
}

static int prefix_match(const uint8_t *a, const uint8_t *net, int prefix) {
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, (size_t)full) != 0) return 0;
    if (rest == 0) return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

// family + bytes, with v4-mapped IPv6 normalised to IPv4.
static void normalise(int family, const uint8_t *bytes, int *out_family, uint8_t out[16]) {
    uint32_t v4;
    if (family == AF_INET6 && v6_is_zero(bytes, 0, 10) && bytes[10] == 0xFF && bytes[11] == 0xFF &&
        v6_embedded_v4(bytes, &v4)) {
        *out_family = AF_INET;
        memcpy(out, bytes + 12, 4);
        return;
    }
    *out_family = family;
    memcpy(out, bytes, family == AF_INET ? 4 : 16);
}

static int guard_allows(const ccurl_guard *g, int family, const uint8_t *bytes) {
    int fam;
    uint8_t b[16];
    normalise(family, bytes, &fam, b);
    for (int i = 0; i < g->count; i++) {
        if (g->nets[i].family == fam && prefix_match(b, g->nets[i].addr, g->nets[i].prefix)) return 1;
    }
    return 0;
}

static const char *classify_bytes(int family, const uint8_t *bytes) {
    if (family == AF_INET) {
        uint32_t a = ((uint32_t)bytes[0] << 24) | ((uint32_t)bytes[1] << 16) | ((uint32_t)bytes[2] << 8) | bytes[3];
        return classify_v4(a);
    }
    return classify_v6(bytes);
}

static int parse_numeric(const char *text, int *family, uint8_t bytes[16]) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        *family = AF_INET;
        memcpy(bytes, &a4, 4);
        return 1;
    }
    char buf[80];
    size_t n = strlen(text);
    if (n >= 2 && n < sizeof(buf) && text[0] == '[' && text[n - 1] == ']') {
        memcpy(buf, text + 1, n - 2);
        buf[n - 2] = 0;
        text = buf;
    }
    if (inet_pton(AF_INET6, text, &a6) == 1) {
        *family = AF_INET6;
        memcpy(bytes, &a6, 16);
        return 1;
    }
    return 0;
}

const char *ccurl_classify_text(const char *address) {
    int fam;
    uint8_t b[16];
    if (!parse_numeric(address, &fam, b)) return "invalid";
    return classify_bytes(fam, b);
}

int ccurl_guard_permits_text(const ccurl_guard *g, const char *address) {
    int fam;
    uint8_t b[16];
    if (!parse_numeric(address, &fam, b)) return -1;
    if (!g->enabled) return 1;
    if (classify_bytes(fam, b) == NULL) return 1;
    return guard_allows(g, fam, b);
}

void ccurl_guard_init(ccurl_guard *g, int enabled) {
    memset(g, 0, sizeof(*g));
    g->enabled = enabled;
}

void ccurl_guard_reset_transfer(ccurl_guard *g) {
    g->refused = 0;
    g->refused_address[0] = 0;
    g->refused_reason[0] = 0;
    g->connects = 0;
    g->refused_since_connect = 0;
    g->last_address[0] = 0;
}

static int add_net(ccurl_guard *g, int family, const uint8_t *bytes, int prefix, char *err, size_t errlen) {
    if (g->count >= CCURL_GUARD_MAX_NETS) {
        snprintf(err, errlen, "too many allowed networks (at most %d addresses)", CCURL_GUARD_MAX_NETS);
        return -1;
    }
    ccurl_net *n = &g->nets[g->count++];
    memset(n, 0, sizeof(*n));
    int fam;
    uint8_t b[16];
    if (family == AF_INET6 && prefix >= 96) {
        normalise(family, bytes, &fam, b);
        if (fam == AF_INET) prefix -= 96;
    } else {
        fam = family;
        memcpy(b, bytes, family == AF_INET ? 4 : 16);
    }
    n->family = fam;
    n->prefix = prefix;
    memcpy(n->addr, b, fam == AF_INET ? 4 : 16);
    return 0;
}

int ccurl_guard_allow(ccurl_guard *g, const char *entry, char *err, size_t errlen) {
    char buf[300];
    size_t len = strlen(entry);
    if (len == 0 || len >= sizeof(buf)) {
        snprintf(err, errlen, "invalid allowed network '%s'", entry);
        return -1;
    }
    memcpy(buf, entry, len + 1);
    int prefix = -1;
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = 0;
        char *end = NULL;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] == 0 || *end != 0 || p < 0 || p > 128) {
            snprintf(err, errlen, "invalid prefix length in allowed network '%s'", entry);
            return -1;
        }
        prefix = (int)p;
    }
    int fam;
    uint8_t b[16];
    if (parse_numeric(buf, &fam, b)) {
        int maxp = fam == AF_INET ? 32 : 128;
        if (prefix < 0) prefix = maxp;
        if (prefix > maxp) {
            snprintf(err, errlen, "prefix /%d is too long for '%s'", prefix, entry);
            return -1;
        }
        return add_net(g, fam, b, prefix, err, errlen);
    }
    if (prefix >= 0) {
        snprintf(err, errlen, "invalid address in allowed network '%s'", entry);
        return -1;
    }
    // "localhost" (and *.localhost): libcurl resolves these itself to 127.0.0.1 and ::1 whatever /etc/hosts
    // says, so allow the whole loopback range of both families.
    size_t bl = strlen(buf);
    if (strcasecmp(buf, "localhost") == 0 || (bl > 10 && strcasecmp(buf + bl - 10, ".localhost") == 0)) {
        uint8_t v4[16] = {127, 0, 0, 0}, v6[16] = {0};
        v6[15] = 1;
        if (add_net(g, AF_INET, v4, 8, err, errlen) != 0) return -1;
        return add_net(g, AF_INET6, v6, 128, err, errlen);
    }
    // A host name: allow the addresses it resolves to now.
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(buf, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve allowed host '%s': %s", entry, gai_strerror(rc));
        return -1;
    }
    int added = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            const uint8_t *p = (const uint8_t *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if (guard_allows(g, AF_INET, p)) continue;
            if (add_net(g, AF_INET, p, 32, err, errlen) != 0) { freeaddrinfo(res); return -1; }
            added++;
        } else if (ai->ai_family == AF_INET6) {
            const uint8_t *p = (const uint8_t *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            if (guard_allows(g, AF_INET6, p)) continue;
            if (add_net(g, AF_INET6, p, 128, err, errlen) != 0) { freeaddrinfo(res); return -1; }
            added++;
        }
    }
    freeaddrinfo(res);
    (void)added;
    return 0;
}

static curl_socket_t guard_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    ccurl_guard *g = (ccurl_guard *)clientp;
    char text[64] = "?";
    const uint8_t *bytes = NULL;
    int family = address->family;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&address->addr;
        bytes = (const uint8_t *)&sin->sin_addr;
        inet_ntop(AF_INET, bytes, text, sizeof(text));
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&address->addr;
        bytes = (const uint8_t *)&sin6->sin6_addr;
        inet_ntop(AF_INET6, bytes, text, sizeof(text));
    }
    if (g->enabled && purpose == CURLSOCKTYPE_IPCXN) {
        const char *reason = NULL;
        if (bytes == NULL) {
            reason = "not an IP socket";
        } else {
            reason = classify_bytes(family, bytes);
            if (reason && guard_allows(g, family, bytes)) reason = NULL;
        }
        if (reason) {
            g->refused++;
            g->refused_since_connect++;
            snprintf(g->refused_address, sizeof(g->refused_address), "%s", text);
            snprintf(g->refused_reason, sizeof(g->refused_reason), "%s", reason);
            return CURL_SOCKET_BAD;
        }
    }
    g->connects++;
    g->refused_since_connect = 0;
    snprintf(g->last_address, sizeof(g->last_address), "%s", text);
    return socket(address->family, address->socktype, address->protocol);
}

CURLcode ccurl_install_guard(CURL *h, ccurl_guard *g) {
    CURLcode rc = curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, guard_opensocket);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, (void *)g);
}
