// CCurl: libcurl plus a small typed shim.
//
// `curl_easy_setopt` / `curl_easy_getinfo` are variadic and cannot be called from Swift, so this header offers
// typed wrappers, a growable body sink with a hard size limit, and the SSRF guard that runs in libcurl's
// CURLOPT_OPENSOCKETFUNCTION callback: it sees every address libcurl is about to connect to (after DNS, after
// numeric-host normalisation such as 0x7f.1 or 2130706433, on every redirect hop) and refuses the ones in
// non-public ranges unless an allow-list entry covers them.
#ifndef BITFLEET_CCURL_H
#define BITFLEET_CCURL_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- typed setopt / getinfo ----------------------------------------------------------------------------------
CURLcode ccurl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode ccurl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode ccurl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode ccurl_setopt_off_t(CURL *handle, CURLoption option, int64_t value);
CURLcode ccurl_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode ccurl_getinfo_double(CURL *handle, CURLINFO info, double *value);
CURLcode ccurl_getinfo_string(CURL *handle, CURLINFO info, const char **value);
CURLcode ccurl_getinfo_off_t(CURL *handle, CURLINFO info, int64_t *value);

// ---- body sink -----------------------------------------------------------------------------------------------
// The write callback appends into `data`; once `length` would pass `limit` (0 = no limit) it sets `exceeded` and
// returns 0, which makes libcurl abort the transfer with CURLE_WRITE_ERROR. This covers bodies without a
// Content-Length (chunked, or decoded gzip) that CURLOPT_MAXFILESIZE_LARGE cannot see in advance.
typedef struct ccurl_sink {
    uint8_t *data;
    size_t length;
    size_t capacity;
    size_t limit;
    int exceeded;      // 1 once the limit was hit
    int oom;           // 1 if growing the buffer failed
} ccurl_sink;

void ccurl_sink_reset(ccurl_sink *sink, size_t limit);   // keeps the buffer for reuse
void ccurl_sink_free(ccurl_sink *sink);
CURLcode ccurl_install_sink(CURL *handle, ccurl_sink *sink);

// ---- response header capture (Content-Encoding) ---------------------------------------------------------------
typedef struct ccurl_headers {
    char content_encoding[64];   // of the last response (after redirects), lowercased, "" if none
} ccurl_headers;
CURLcode ccurl_install_header_capture(CURL *handle, ccurl_headers *headers);

// ---- SSRF guard ----------------------------------------------------------------------------------------------
#define CCURL_GUARD_MAX_NETS 256

typedef struct ccurl_net {
    int family;          // AF_INET or AF_INET6
    uint8_t addr[16];    // network address (4 bytes used for AF_INET)
    int prefix;          // prefix length in bits
    int port;            // 0: any port
} ccurl_net;

#define CCURL_GUARD_MAX_HOSTS 64

typedef struct ccurl_host {
    char name[256];      // a host name, resolved again whenever it is checked
    int port;            // 0: any port
} ccurl_host;

// Resolves `name` into at most `capacity` addresses (family AF_INET/AF_INET6, 4 or 16 bytes); returns how many.
typedef int (*ccurl_resolver)(void *context, const char *name, int *families, uint8_t (*addresses)[16], int capacity);

typedef struct ccurl_guard {
    int enabled;                       // 0: every address passes (the guard only records)
    int count;
    ccurl_net nets[CCURL_GUARD_MAX_NETS];
    int refused;                       // addresses refused during the current transfer
    char refused_address[64];          // the last refused address, as text
    char refused_reason[96];           // why: "loopback", "private", "link-local", ...
    int connects;                      // sockets opened during the current transfer
    int refused_since_connect;         // refusals since the last socket that was opened (redirect hops)
    char last_address[64];             // the last address a socket was opened for
    int host_count;
    ccurl_host hosts[CCURL_GUARD_MAX_HOSTS];
    ccurl_resolver resolver;           // NULL: getaddrinfo (tests substitute their own)
    void *resolver_context;
} ccurl_guard;

void ccurl_guard_init(ccurl_guard *guard, int enabled);
// Add an allow-list entry: an IPv4/IPv6 address, a CIDR ("10.0.0.0/8", "fd00::/8"), or a host name (resolved
// again at every check, never frozen), each optionally with a port ("10.0.0.5:9000", "[fd00::/8]:443",
// "minio.internal:9000": only that port). Returns 0, or -1 with a message in `error`.
int ccurl_guard_allow(ccurl_guard *guard, const char *entry, char *error, size_t error_length);
void ccurl_guard_reset_transfer(ccurl_guard *guard);
CURLcode ccurl_install_guard(CURL *handle, ccurl_guard *guard);

// Why an address is not public ("loopback", "private", ...), or NULL for a public address.
// `ccurl_classify_text` parses a numeric IPv4/IPv6 address (returns "invalid" if it cannot).
const char *ccurl_classify_text(const char *address);
// 1 if the guard lets a connection to this numeric address through, 0 if it refuses it, -1 if unparsable.
int ccurl_guard_permits_text(const ccurl_guard *guard, const char *address);
// The same for a connection to `port` (-1: unknown; then only entries without a port count).
int ccurl_guard_permits_text_port(const ccurl_guard *guard, const char *address, int port);
void ccurl_guard_set_resolver(ccurl_guard *guard, ccurl_resolver resolver, void *context);

#ifdef __cplusplus
}
#endif
#endif
