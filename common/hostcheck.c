/* hostcheck — see hostcheck.h. */
#include "common/hostcheck.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/xalloc.h"

/* Lower-cases the n bytes of s in place, drops a trailing dot and ends
 * the name with a NUL (s has room for it); returns the new length. Names
 * are compared in this form. */
static size_t normalize(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + 32);
    if (n > 1 && s[n - 1] == '.')
        n--;
    s[n] = '\0';
    return n;
}

static char *lower_dup(const char *s)
{
    char *d = af_xstrdup(s);
    normalize(d, strlen(d));
    return d;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

void af_hostcheck_init(struct af_hostcheck *h, bool enabled, const char *bind_host,
                       char *const *extra, size_t n_extra)
{
    memset(h, 0, sizeof(*h));
    h->enabled = enabled;
    if (bind_host && *bind_host && !is_ip_literal(bind_host))
        h->bind_host = lower_dup(bind_host);
    char name[256];
    if (gethostname(name, sizeof(name)) == 0) {
        name[sizeof(name) - 1] = '\0';
        if (name[0])
            h->machine = lower_dup(name);
    }
    if (n_extra) {
        h->extra = af_xcalloc(n_extra, sizeof(*h->extra));
        for (size_t i = 0; i < n_extra; i++)
            h->extra[i] = lower_dup(extra[i]);
        h->n_extra = n_extra;
    }
}

void af_hostcheck_release(struct af_hostcheck *h)
{
    free(h->bind_host);
    free(h->machine);
    for (size_t i = 0; i < h->n_extra; i++)
        free(h->extra[i]);
    free(h->extra);
    memset(h, 0, sizeof(*h));
}

/* Whether name (lower-case) matches pattern: exact, "*.d" (one label and
 * ".d") or "**.d" (one or more labels and ".d"). */
static bool matches(const char *pattern, const char *name)
{
    size_t skip = strncmp(pattern, "**.", 3) == 0 ? 3 : strncmp(pattern, "*.", 2) == 0 ? 2 : 0;
    if (!skip)
        return strcmp(pattern, name) == 0;
    const char *domain = pattern + skip - 1; /* ".d" */
    size_t dn = strlen(domain), nn = strlen(name);
    if (nn <= dn || strcmp(name + nn - dn, domain) != 0)
        return false;
    size_t labels_len = nn - dn; /* what stands before ".d" */
    if (skip == 3)
        return labels_len > 0;
    return labels_len > 0 && memchr(name, '.', labels_len) == NULL;
}

bool af_hostcheck_ok(const struct af_hostcheck *h, const char *host, size_t len)
{
    if (!h || !h->enabled || !host)
        return true;
    char name[256];
    if (len == 0 || len >= sizeof(name))
        return false;
    if (host[0] == '[') /* an IPv6 literal, with or without a port */
        return memchr(host, ']', len) != NULL;
    /* Without the port: ":digits" at the end. */
    size_t n = len;
    const char *colon = memchr(host, ':', len);
    if (colon) {
        if (memchr(colon + 1, ':', len - (size_t)(colon + 1 - host)))
            return false; /* a bare IPv6 address is not a valid Host */
        for (const char *p = colon + 1; p < host + len; p++)
            if (*p < '0' || *p > '9')
                return false;
        n = (size_t)(colon - host);
    }
    if (n == 0)
        return false;
    memcpy(name, host, n);
    n = normalize(name, n);
    if (is_ip_literal(name))
        return true;
    if (strcmp(name, "localhost") == 0 ||
        (n > 10 && strcmp(name + n - 10, ".localhost") == 0))
        return true;
    if ((h->bind_host && strcmp(name, h->bind_host) == 0) ||
        (h->machine && strcmp(name, h->machine) == 0))
        return true;
    for (size_t i = 0; i < h->n_extra; i++)
        if (matches(h->extra[i], name))
            return true;
    return false;
}

char *af_hostcheck_refusal(char *buf, size_t len, const char *server, const char *host,
                           size_t host_len)
{
    snprintf(buf, len,
             "%s does not answer for Host \"%.*s\": only for this machine's names (DNS "
             "rebinding protection). Start appfront with --addn_host=NAME or "
             "--enable_host_checking=false to allow it.",
             server, (int)(host_len > 100 ? 100 : host_len), host ? host : "");
    return buf;
}
