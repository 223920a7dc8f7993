/*
 * urlfetch_url — the absolute URLs urlfetch accepts (RFC 3986 section 3),
 * and redirect targets resolved against them (section 5.2).
 *
 * What App Engine refuses, refused here as INVALID_URL: a scheme other than
 * http or https, no host, credentials in the authority ("user:pass@"), a URL
 * over 2048 bytes. Also refused: whitespace and control bytes anywhere (a
 * request line cannot carry them; they must be percent-encoded) and a bad
 * port. Bytes over 0x7f in the path or query are percent-encoded, as a
 * browser would.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "apiserver/services/urlfetch.h"
#include "common/xalloc.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void uf_url_release(struct uf_url *u)
{
    free(u->host);
    free(u->authority);
    free(u->target);
    memset(u, 0, sizeof(*u));
}

/* RFC 3986 reg-name characters we accept in a host: unreserved plus the
 * sub-delims a DNS name or an IPv4 literal could hold. */
static bool host_char(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Copies the target (path and query, fragment already dropped), percent-
 * encoding bytes over 0x7f, and making it start with '/'. */
static char *make_target(const char *s, size_t n)
{
    char *out = af_xmalloc(3 * n + 2);
    char *o = out;
    if (n == 0 || s[0] != '/')
        *o++ = '/';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            o += sprintf(o, "%%%02X", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

int uf_url_parse(const char *s, struct uf_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    size_t len = strlen(s);
    if (len == 0) {
        set_err(err, errlen, "the URL is empty");
        return -1;
    }
    if (len > UF_MAX_URL) {
        set_err(err, errlen, "the URL is %zu bytes long; App Engine allows at most %d", len,
                UF_MAX_URL);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f) {
            set_err(err, errlen,
                    "the URL has a space or control byte (0x%02x) at offset %zu; "
                    "percent-encode it",
                    c, i);
            return -1;
        }
    }

    const char *p;
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        u->https = true;
        p = s + 8;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && colon != s && strncmp(colon, "://", 3) == 0)
            set_err(err, errlen,
                    "scheme \"%.*s\" is not supported: only http and https URLs can be fetched",
                    (int)(colon - s) > 32 ? 32 : (int)(colon - s), s);
        else
            set_err(err, errlen, "\"%.64s\" is not an absolute http:// or https:// URL", s);
        return -1;
    }

    size_t alen = strcspn(p, "/?#");
    const char *auth = p, *rest = p + alen;
    if (memchr(auth, '@', alen)) {
        set_err(err, errlen,
                "the URL carries credentials (user@host), which App Engine does not allow; "
                "send an Authorization header instead");
        return -1;
    }

    /* host, then an optional :port */
    const char *h = auth, *hend, *after;
    if (alen > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close) {
            set_err(err, errlen, "the IPv6 address in the URL has no closing ']'");
            return -1;
        }
        h = auth + 1;
        hend = close;
        after = close + 1;
        char tmp[64];
        struct in6_addr a6;
        size_t hl = (size_t)(hend - h);
        if (hl == 0 || hl >= sizeof(tmp) ||
            (memcpy(tmp, h, hl), tmp[hl] = '\0', inet_pton(AF_INET6, tmp, &a6) != 1)) {
            set_err(err, errlen, "\"%.*s\" is not an IPv6 address", (int)(hl > 64 ? 64 : hl), h);
            return -1;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hend = colon ? colon : auth + alen;
        after = hend;
        for (const char *c = h; c < hend; c++)
            if (!host_char((unsigned char)*c)) {
                set_err(err, errlen, "the host \"%.*s\" has the invalid character '%c'",
                        (int)(hend - h > 64 ? 64 : hend - h), h, *c);
                return -1;
            }
    }
    if (hend == h) {
        set_err(err, errlen, "the URL has no host");
        return -1;
    }

    int port = u->https ? 443 : 80;
    bool explicit_port = false;
    if (after < auth + alen) {
        if (*after != ':') {
            set_err(err, errlen, "unexpected characters after the host in the URL");
            return -1;
        }
        const char *ps = after + 1, *pe = auth + alen;
        if (pe > ps) {
            long v = 0;
            for (const char *c = ps; c < pe; c++) {
                if (!isdigit((unsigned char)*c) || v > 65535) {
                    v = -1;
                    break;
                }
                v = v * 10 + (*c - '0');
            }
            if (v < 1 || v > 65535) {
                set_err(err, errlen, "the port \"%.*s\" is not a number from 1 to 65535",
                        (int)(pe - ps > 16 ? 16 : pe - ps), ps);
                return -1;
            }
            port = (int)v;
            explicit_port = true;
        }
    }

    u->port = port;
    u->host = af_xstrndup(h, (size_t)(hend - h));
    /* The Host header: as written, without a default port (RFC 9110
     * section 7.2) and without an empty one. */
    size_t hostpart = (size_t)(after - auth);
    if (explicit_port && port != (u->https ? 443 : 80))
        u->authority = af_xasprintf("%.*s:%d", (int)hostpart, auth, port);
    else
        u->authority = af_xstrndup(auth, hostpart);
    u->target = make_target(rest, strcspn(rest, "#"));
    return 0;
}

char *uf_url_string(const struct uf_url *u)
{
    return af_xasprintf("%s://%s%s", u->https ? "https" : "http", u->authority, u->target);
}

/* Whether s starts with a URI scheme and a colon (RFC 3986 section 3.1). */
static bool has_scheme(const char *s)
{
    if (!isalpha((unsigned char)s[0]))
        return false;
    for (const char *p = s + 1; *p; p++) {
        if (*p == ':')
            return true;
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return false;
    }
    return false;
}

char *uf_url_resolve(const struct uf_url *base, const char *location)
{
    while (*location == ' ' || *location == '\t')
        location++;
    size_t n = strlen(location);
    while (n > 0 && (location[n - 1] == ' ' || location[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)location[i] < 0x20 || location[i] == 0x7f)
            return NULL;
    char *loc = af_xstrndup(location, n);
    const char *scheme = base->https ? "https" : "http";
    char *out;

    if (has_scheme(loc)) {
        return loc;
    } else if (loc[0] == '/' && loc[1] == '/') {
        out = af_xasprintf("%s:%s", scheme, loc);
    } else if (loc[0] == '/') {
        out = af_xasprintf("%s://%s%s", scheme, base->authority, loc);
    } else if (loc[0] == '?' || loc[0] == '#') {
        size_t path = strcspn(base->target, "?");
        out = loc[0] == '#' ? uf_url_string(base)
                            : af_xasprintf("%s://%s%.*s%s", scheme, base->authority, (int)path,
                                           base->target, loc);
    } else {
        /* Relative path: replaces the last segment of the base path. */
        size_t path = strcspn(base->target, "?");
        size_t dir = path;
        while (dir > 0 && base->target[dir - 1] != '/')
            dir--;
        out = af_xasprintf("%s://%s%.*s%s", scheme, base->authority, (int)dir, base->target, loc);
    }
    free(loc);
    return out;
}
