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

static uint32_t v4_at(const uint8_t *b, int i0, int i1, int i2, int i3) {
    return ((uint32_t)b[i0] << 24) | ((uint32_t)b[i1] << 16) | ((uint32_t)b[i2] << 8) | b[i3];
}

// IPv6 forms that carry an IPv4 address a packet may end up at are judged by that address: a non-public embedded
// address makes the IPv6 address non-public too (the reason names the form and the embedded range).
static const char *classify_v6_embedded(const uint8_t *b) {
    static __thread char reason[96];
    const char *form = NULL;
    const char *r = NULL;
    if (v6_is_zero(b, 0, 8) && b[8] == 0xFF && b[9] == 0xFF && b[10] == 0 && b[11] == 0) {
        form = "IPv4-translated";                       // ::ffff:0:a.b.c.d (SIIT)
        r = classify_v4(v4_at(b, 12, 13, 14, 15));
    } else if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && v6_is_zero(b, 4, 12)) {
        form = "NAT64";                                 // 64:ff9b::/96, IPv4 in the low 32 bits
        r = classify_v4(v4_at(b, 12, 13, 14, 15));
    } else if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 && b[5] == 0x01) {
        form = "local NAT64";                           // 64:ff9b:1::/48 (RFC 8215): RFC 6052 /48 layout
        r = classify_v4(v4_at(b, 6, 7, 9, 10));
    } else if (b[0] == 0x20 && b[1] == 0x02) {
        form = "6to4";                                  // 2002:AABB:CCDD::/48
        r = classify_v4(v4_at(b, 2, 3, 4, 5));
    } else if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00) {
        form = "Teredo";                                // 2001::/32: server IPv4, then the client's, inverted
        uint32_t client = ~v4_at(b, 12, 13, 14, 15);
        r = classify_v4(client);
        if (!r) r = classify_v4(v4_at(b, 4, 5, 6, 7));
    }
    if (!form || !r) return NULL;
    snprintf(reason, sizeof(reason), "%s of %s", form, r);
    return reason;
}

static const char *classify_v6(const uint8_t *b) {
    uint32_t v4;
    if (v6_is_zero(b, 0, 16)) return "unspecified (::)";
    if (v6_is_zero(b, 0, 15) && b[15] == 1) return "loopback (::1)";
    if (v6_embedded_v4(b, &v4)) {
        const char *r = classify_v4(v4);
        return r ? r : NULL;
    }
    const char *embedded = classify_v6_embedded(b);
    if (embedded) return embedded;
    if (b[0] == 0x01 && b[1] == 0x00 && v6_is_zero(b, 2, 8)) return "discard-only (100::/64)";
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return "documentation (2001:db8::/32)";
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

static int default_resolve(void *context, const char *name, int *families, uint8_t (*addresses)[16], int capacity) {
    (void)context;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(name, NULL, &hints, &res) != 0 || !res) return 0;
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < capacity; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            families[n] = AF_INET;
            memset(addresses[n], 0, 16);
            memcpy(addresses[n], &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
            n++;
        } else if (ai->ai_family == AF_INET6) {
            families[n] = AF_INET6;
            memcpy(addresses[n], &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
            n++;
        }
    }
    freeaddrinfo(res);
    return n;
}

// Whether an allow-list entry covers this address and port (port < 0: unknown, only port-less entries match).
// Host-name entries are resolved again on every check, so a name whose addresses change is followed.
static int guard_allows(const ccurl_guard *g, int family, const uint8_t *bytes, int port) {
    int fam;
    uint8_t b[16];
    normalise(family, bytes, &fam, b);
    for (int i = 0; i < g->count; i++) {
        const ccurl_net *n = &g->nets[i];
        if (n->port != 0 && n->port != port) continue;
        if (n->family == fam && prefix_match(b, n->addr, n->prefix)) return 1;
    }
    for (int i = 0; i < g->host_count; i++) {
        const ccurl_host *h = &g->hosts[i];
        if (h->port != 0 && h->port != port) continue;
        int families[32];
        uint8_t addresses[32][16];
        ccurl_resolver resolve = g->resolver ? g->resolver : default_resolve;
        int found = resolve(g->resolver_context, h->name, families, addresses, 32);
        for (int k = 0; k < found && k < 32; k++) {
            int af;
            uint8_t ab[16];
            normalise(families[k], addresses[k], &af, ab);
            if (af == fam && memcmp(ab, b, fam == AF_INET ? 4 : 16) == 0) return 1;
        }
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
    return ccurl_guard_permits_text_port(g, address, -1);
}

int ccurl_guard_permits_text_port(const ccurl_guard *g, const char *address, int port) {
    int fam;
    uint8_t b[16];
    if (!parse_numeric(address, &fam, b)) return -1;
    if (!g->enabled) return 1;
    if (classify_bytes(fam, b) == NULL) return 1;
    return guard_allows(g, fam, b, port);
}

void ccurl_guard_set_resolver(ccurl_guard *g, ccurl_resolver resolver, void *context) {
    g->resolver = resolver;
    g->resolver_context = context;
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

static int add_net(ccurl_guard *g, int family, const uint8_t *bytes, int prefix, int port, char *err, size_t errlen) {
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
    n->port = port;
    memcpy(n->addr, b, fam == AF_INET ? 4 : 16);
    return 0;
}

static int parse_port(const char *text, int *port) {
    if (!*text) return 0;
    long p = 0;
    for (const char *c = text; *c; c++) {
        if (*c < '0' || *c > '9') return 0;
        p = p * 10 + (*c - '0');
        if (p > 65535) return 0;
    }
    if (p < 1) return 0;
    *port = (int)p;
    return 1;
}

static int valid_host_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 253 || name[0] == '-' || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_')) return 0;
    }
    return 1;
}

// Entry forms: 10.1.2.3, 10.0.0.0/8, fd00::/8, ::1, host.name, and each with a port: 10.1.2.3:9000,
// 10.0.0.0/8:443, [fd00::1]:443, [fd00::/8]:443, host.name:9000.
int ccurl_guard_allow(ccurl_guard *g, const char *entry, char *err, size_t errlen) {
    char buf[300];
    size_t len = strlen(entry);
    if (len == 0 || len >= sizeof(buf)) {
        snprintf(err, errlen, "invalid allowed network '%s'", entry);
        return -1;
    }
    memcpy(buf, entry, len + 1);
    int port = 0;
    char *host = buf;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close || (close[1] != 0 && (close[1] != ':' || !parse_port(close + 2, &port)))) {
            snprintf(err, errlen, "invalid allowed network '%s' (expected [address]:port)", entry);
            return -1;
        }
        *close = 0;
        host = buf + 1;
    } else {
        char *first = strchr(buf, ':'), *last = strrchr(buf, ':');
        if (first && first == last) {   // one colon: host:port (IPv6 addresses have several; bracket them)
            if (!parse_port(first + 1, &port)) {
                snprintf(err, errlen, "invalid port in allowed network '%s' (1-65535)", entry);
                return -1;
            }
            *first = 0;
        }
    }
    int prefix = -1;
    char *slash = strchr(host, '/');
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
    if (parse_numeric(host, &fam, b)) {
        int maxp = fam == AF_INET ? 32 : 128;
        if (prefix < 0) prefix = maxp;
        if (prefix > maxp) {
            snprintf(err, errlen, "prefix /%d is too long for '%s'", prefix, entry);
            return -1;
        }
        return add_net(g, fam, b, prefix, port, err, errlen);
    }
    if (prefix >= 0 || !valid_host_name(host)) {
        snprintf(err, errlen, "invalid address or host name in allowed network '%s'", entry);
        return -1;
    }
    // "localhost" (and *.localhost): libcurl resolves these itself to 127.0.0.1 and ::1 whatever /etc/hosts
    // says, so allow the whole loopback range of both families.
    size_t bl = strlen(host);
    if (strcasecmp(host, "localhost") == 0 || (bl > 10 && strcasecmp(host + bl - 10, ".localhost") == 0)) {
        uint8_t v4[16] = {127, 0, 0, 0}, v6[16] = {0};
        v6[15] = 1;
        if (add_net(g, AF_INET, v4, 8, port, err, errlen) != 0) return -1;
        return add_net(g, AF_INET6, v6, 128, port, err, errlen);
    }
    // A host name: kept as a name and resolved whenever a non-public address must be checked against it, so
    // the allow-list follows the name's current addresses (a name that does not resolve allows nothing).
    if (g->host_count >= CCURL_GUARD_MAX_HOSTS) {
        snprintf(err, errlen, "too many allowed host names (at most %d)", CCURL_GUARD_MAX_HOSTS);
        return -1;
    }
    ccurl_host *h = &g->hosts[g->host_count++];
    snprintf(h->name, sizeof(h->name), "%s", host);
    h->port = port;
    return 0;
}

static curl_socket_t guard_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    ccurl_guard *g = (ccurl_guard *)clientp;
    char text[64] = "?";
    const uint8_t *bytes = NULL;
    int port = -1;
    int family = address->family;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&address->addr;
        bytes = (const uint8_t *)&sin->sin_addr;
        port = ntohs(sin->sin_port);
        inet_ntop(AF_INET, bytes, text, sizeof(text));
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&address->addr;
        bytes = (const uint8_t *)&sin6->sin6_addr;
        port = ntohs(sin6->sin6_port);
        inet_ntop(AF_INET6, bytes, text, sizeof(text));
    }
    if (g->enabled && purpose == CURLSOCKTYPE_IPCXN) {
        const char *reason = NULL;
        if (bytes == NULL) {
            reason = "not an IP socket";
        } else {
            reason = classify_bytes(family, bytes);
            if (reason && guard_allows(g, family, bytes, port)) reason = NULL;
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
