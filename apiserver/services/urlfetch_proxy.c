/*
 * urlfetch_proxy — urlfetch's outbound proxy, from appfront's own
 * environment, read the way curl, Python and Go read it (docs/services.md,
 * "urlfetch", "Proxy"):
 *
 *   http_proxy / HTTP_PROXY    the proxy for http URLs (absolute-form requests)
 *   https_proxy / HTTPS_PROXY  the proxy for https URLs (a CONNECT tunnel)
 *   no_proxy / NO_PROXY        hosts reached directly: names (each matching
 *                              its subdomains too; a leading "." or "*." is
 *                              the same), IP addresses, each with ":port" to
 *                              match that port only, or "*" for every host;
 *                              separated by commas or spaces
 *
 * The lower-case name wins when both are set, as in curl. A proxy is
 * "[http://][user:password@]host[:port][/]", port 80 when absent as for any
 * http URL; credentials become Proxy-Authorization: Basic (RFC 9110 section
 * 11.7.2). A proxy that is not http:// (https://, socks5://) or does not
 * parse is not skipped silently: it is kept with the reason, a warning names
 * it at startup, and every fetch that would use it fails with FETCH_ERROR
 * naming the variable.
 *
 * Loopback is always reached directly, whatever the variables say: local
 * development means local servers, which a proxy elsewhere cannot reach
 * ("localhost", names under ".localhost", 127.0.0.0/8, ::1). The choice is
 * made on the URL's host as written, before any lookup.
 *
 * The variables are read once, when the service starts (urlfetch.c). The
 * result never changes after that and is shared by reference (an atomic
 * count) between the backend thread, which hands it to every fetch, and the
 * fetches on the I/O thread, which may outlive the service at shutdown.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "apiserver/services/urlfetch.h"
#include "common/log.h"
#include "common/pct.h"
#include "common/xalloc.h"

struct no_proxy_entry {
    char *host; /* lower case, without [] or a leading "." or "*." */
    int port;   /* 0: any port */
};

struct uf_proxy_config {
    atomic_int refs;
    struct uf_proxy http, https; /* .host and .error both NULL: none */
    bool direct_all;             /* no_proxy has "*" */
    struct no_proxy_entry *no_proxy;
    size_t n_no_proxy;
};

/* The value of the first of the two names that is set, and which it was. */
static const char *lookup2(char *(*get)(const char *), const char *lower, const char *upper,
                           const char **which)
{
    const char *v = get(lower);
    *which = lower;
    if (!v) {
        v = get(upper);
        *which = upper;
    }
    return v;
}

/* Percent-decodes [s, s + n) (RFC 3986 section 2.1) into a new string; a
 * '%' that starts no escape is kept, as curl reads proxy credentials. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = af_xmalloc(n + 1);
    out[af_pct_decode(s, n, out, AF_PCT_KEEP_BAD)] = '\0'; /* never -1 with KEEP_BAD */
    return out;
}

/* "Basic base64(user:password)" for Proxy-Authorization. */
static char *basic_auth(const char *userinfo, size_t n)
{
    const char *colon = memchr(userinfo, ':', n);
    char *user = pct_decode(userinfo, colon ? (size_t)(colon - userinfo) : n);
    char *pass = colon ? pct_decode(colon + 1, n - (size_t)(colon - userinfo) - 1) : af_xstrdup("");
    char *plain = af_xasprintf("%s:%s", user, pass);
    size_t len = strlen(plain);
    char *out = af_xmalloc(6 + 4 * ((len + 2) / 3) + 1);
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)plain, (int)len);
    /* The password is not left in freed memory. */
    memset(plain, 0, len);
    memset(pass, 0, strlen(pass));
    free(plain);
    free(pass);
    free(user);
    return out;
}

static void proxy_release(struct uf_proxy *p)
{
    free(p->host);
    free(p->authority);
    if (p->auth)
        memset(p->auth, 0, strlen(p->auth));
    free(p->auth);
    free(p->error);
    memset(p, 0, sizeof(*p));
}

/* Parses one proxy variable into p (zeroed first). An unusable value
 * leaves p->error set. */
static void parse_proxy(struct uf_proxy *p, const char *var, const char *value)
{
    memset(p, 0, sizeof(*p));
    p->var = var;
    while (isspace((unsigned char)*value))
        value++;
    size_t n = strlen(value);
    while (n > 0 && isspace((unsigned char)value[n - 1]))
        n--;
    if (n == 0)
        return; /* set but empty: no proxy */
    char *v = af_xstrndup(value, n);
    const char *rest = v;
    const char *sep = strstr(v, "://");
    if (sep) {
        size_t sl = (size_t)(sep - v);
        if (sl != 4 || strncasecmp(v, "http", 4) != 0) {
            p->error = af_xasprintf("%s names a %.*s:// proxy; only http:// proxies are "
                                    "supported",
                                    var, (int)(sl > 16 ? 16 : sl), v);
            goto out;
        }
        rest = sep + 3;
    }
    size_t alen = strcspn(rest, "/?#");
    const char *at = NULL;
    for (const char *c = rest; c < rest + alen; c++)
        if (*c == '@')
            at = c;
    if (at) {
        p->auth = basic_auth(rest, (size_t)(at - rest));
        alen -= (size_t)(at + 1 - rest);
        rest = at + 1;
    }
    /* The host and port, through the URL parser (its checks, its default
     * port of 80). */
    char *url = af_xasprintf("http://%.*s/", (int)alen, rest);
    struct uf_url u;
    char err[256];
    if (uf_url_parse(url, &u, err, sizeof(err)) != 0) {
        p->error = af_xasprintf("%s does not name a usable proxy: %s", var, err);
        if (p->auth)
            memset(p->auth, 0, strlen(p->auth));
        free(p->auth);
        p->auth = NULL;
    } else {
        p->host = u.host;
        p->port = u.port;
        p->authority = af_xasprintf("%s%s%s:%d", strchr(u.host, ':') ? "[" : "", u.host,
                                    strchr(u.host, ':') ? "]" : "", u.port);
        u.host = NULL;
        uf_url_release(&u);
    }
    free(url);
out:
    memset(v, 0, n);
    free(v);
}

/* Adds the no_proxy entries of value. */
static void parse_no_proxy(struct uf_proxy_config *c, const char *value)
{
    const char *p = value;
    while (*p) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        if (n == 0)
            break;
        const char *e = p;
        p += n;
        if (n == 1 && e[0] == '*') {
            c->direct_all = true;
            continue;
        }
        if (n >= 2 && e[0] == '*' && e[1] == '.') {
            e += 2;
            n -= 2;
        } else if (e[0] == '.') {
            e++;
            n--;
        }
        const char *host = e;
        size_t hlen = n;
        int port = 0;
        const char *portstr = NULL;
        if (n > 0 && e[0] == '[') {
            const char *close = memchr(e, ']', n);
            if (!close)
                continue;
            host = e + 1;
            hlen = (size_t)(close - host);
            if (close + 1 < e + n && close[1] == ':')
                portstr = close + 2;
        } else {
            const char *colon = memchr(e, ':', n);
            /* One colon: host:port; more: a bare IPv6 address. */
            if (colon && !memchr(colon + 1, ':', (size_t)(e + n - colon - 1))) {
                hlen = (size_t)(colon - e);
                portstr = colon + 1;
            }
        }
        if (portstr) {
            long v = 0;
            const char *q = portstr;
            for (; q < e + n && isdigit((unsigned char)*q) && v <= 65535; q++)
                v = v * 10 + (*q - '0');
            if (q != e + n || v < 1 || v > 65535) {
                af_warn("urlfetch: ignoring the no_proxy entry \"%.*s\": bad port", (int)n, e);
                continue;
            }
            port = (int)v;
        }
        while (hlen > 0 && host[hlen - 1] == '.')
            hlen--;
        if (hlen == 0)
            continue;
        c->no_proxy = af_xrealloc(c->no_proxy, (c->n_no_proxy + 1) * sizeof(*c->no_proxy));
        struct no_proxy_entry *ent = &c->no_proxy[c->n_no_proxy++];
        ent->host = af_xstrndup(host, hlen);
        for (char *h = ent->host; *h; h++)
            *h = (char)tolower((unsigned char)*h);
        ent->port = port;
    }
}

struct uf_proxy_config *uf_proxy_config_new(char *(*get)(const char *))
{
    const char *hvar, *svar, *nvar;
    const char *hv = lookup2(get, "http_proxy", "HTTP_PROXY", &hvar);
    const char *sv = lookup2(get, "https_proxy", "HTTPS_PROXY", &svar);
    const char *nv = lookup2(get, "no_proxy", "NO_PROXY", &nvar);
    if ((!hv || !*hv) && (!sv || !*sv))
        return NULL;
    struct uf_proxy_config *c = af_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    if (hv)
        parse_proxy(&c->http, hvar, hv);
    if (sv)
        parse_proxy(&c->https, svar, sv);
    if (nv)
        parse_no_proxy(c, nv);
    const struct uf_proxy *both[] = {&c->http, &c->https};
    for (int i = 0; i < 2; i++) {
        if (both[i]->error)
            af_warn("urlfetch: %s; %s fetches will fail until it is fixed", both[i]->error,
                    i ? "https" : "http");
        else if (both[i]->host)
            af_info("urlfetch: %s fetches go through the proxy %s (%s)%s", i ? "https" : "http",
                    both[i]->authority, both[i]->var, c->direct_all ? ", but no_proxy is *" : "");
    }
    if (!c->http.host && !c->https.host && !c->http.error && !c->https.error) {
        uf_proxy_config_unref(c);
        return NULL;
    }
    return c;
}

struct uf_proxy_config *uf_proxy_config_ref(struct uf_proxy_config *c)
{
    if (c)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void uf_proxy_config_unref(struct uf_proxy_config *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    proxy_release(&c->http);
    proxy_release(&c->https);
    for (size_t i = 0; i < c->n_no_proxy; i++)
        free(c->no_proxy[i].host);
    free(c->no_proxy);
    free(c);
}

bool uf_proxy_is_loopback(const char *host)
{
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0 ||
        (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0))
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* Whether host (as in the URL) on port is one of no_proxy's. */
static bool no_proxy_match(const struct uf_proxy_config *c, const char *host, int port)
{
    size_t hl = strlen(host);
    while (hl > 0 && host[hl - 1] == '.')
        hl--;
    for (size_t i = 0; i < c->n_no_proxy; i++) {
        const struct no_proxy_entry *e = &c->no_proxy[i];
        if (e->port && e->port != port)
            continue;
        size_t el = strlen(e->host);
        if (el > hl)
            continue;
        /* The host itself, or a name under it. */
        if (strncasecmp(host + hl - el, e->host, el) == 0 && (el == hl || host[hl - el - 1] == '.'))
            return true;
    }
    return false;
}

const struct uf_proxy *uf_proxy_for(const struct uf_proxy_config *c, const struct uf_url *u)
{
    if (!c)
        return NULL;
    const struct uf_proxy *p = u->https ? &c->https : &c->http;
    if (!p->host && !p->error)
        return NULL;
    if (c->direct_all || uf_proxy_is_loopback(u->host) || no_proxy_match(c, u->host, u->port))
        return NULL;
    return p;
}
