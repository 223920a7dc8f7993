/*
 * fuzz_dispatch — dispatch.yaml (af_dispatch_parse, proxy/dispatch.c) and
 * its matcher under libFuzzer.
 *
 * Invariants: no memory error, leak or undefined behaviour; a parse either
 * succeeds or fails with a one-line message that names the file; every rule
 * of a file that loaded matches a request made from its own pattern (the
 * '*' of the host replaced by a label, the path as written), and the first
 * rule that matches comes no later than it; the matcher never answers an
 * index outside the rules, whatever host and target it is given. The input
 * read as a Host field (af_dispatch_module_host): a module form names a
 * non-empty label inside the host's name, followed by '.', with
 * ".localhost" ending the name; a plain form leaves the outputs alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "proxy/dispatch.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_dispatch: invariant violated: %s [%s]\n", what, detail ? detail : "");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    return 0;
}

static void check_index(const struct af_dispatch *d, int i)
{
    if (i < -1 || i >= (int)d->n_rules)
        die("match returned an index outside the rules", NULL);
}

static void check_module_host(const char *host, size_t len)
{
    const char *mod = NULL;
    size_t mod_len = 0;
    enum af_module_host k = af_dispatch_module_host(host, len, &mod, &mod_len);
    if (k == AF_HOST_PLAIN) {
        if (mod || mod_len)
            die("a plain host set the module", NULL);
        return;
    }
    if (k != AF_HOST_MODULE && k != AF_HOST_VERSIONED)
        die("an unknown host kind", NULL);
    const char *colon = memchr(host, ':', len);
    size_t name = colon ? (size_t)(colon - host) : len;
    if (!mod || mod < host || mod_len == 0 || (size_t)(mod - host) + mod_len + 10 != name)
        die("the module label is not the last before .localhost", NULL);
    if (strncasecmp(mod + mod_len, ".localhost", 10) != 0)
        die("the module label is not followed by .localhost", NULL);
    if (memchr(mod, '.', mod_len))
        die("the module label holds a dot", NULL);
    if ((k == AF_HOST_VERSIONED) != (mod > host))
        die("versioned, or not, against the labels before the module", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_module_host((const char *)data, size);
    char err[512];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    struct af_dispatch *d = NULL;
    int rc = af_dispatch_parse("dispatch.yaml", (const char *)data, size, &d, err, sizeof(err));
    if (rc != 0) {
        if (d)
            die("a failed parse returned rules", err);
        if (err[0] == '\0' || strchr(err, '\n'))
            die("error message is empty or spans lines", err);
        if (strncmp(err, "dispatch.yaml", 13) != 0)
            die("error message does not name the file", err);
        return 0;
    }
    if (!d)
        die("a successful parse without a result", NULL);
    for (size_t i = 0; i < d->n_rules; i++) {
        const struct af_dispatch_rule *r = &d->rules[i];
        if (r->path[0] != '/' || strlen(r->path) != r->path_len || strlen(r->host) != r->host_len ||
            !r->service || !r->service[0])
            die("a rule's fields disagree", r->url);
        if (strncmp(r->path, "/_ah/", 5) == 0 || strcmp(r->path, "/_ah") == 0)
            continue; /* never dispatched */
        size_t hlen = r->host_len + 8;
        char *host = malloc(hlen);
        snprintf(host, hlen, "%s%s:8080", r->host_exact ? "" : "x", r->host);
        char *target = malloc(r->path_len + 8);
        memcpy(target, r->path, r->path_len);
        strcpy(target + r->path_len, r->path_exact ? "?q=1" : "more");
        int m = af_dispatch_match(d, host, strlen(host), target);
        check_index(d, m);
        if (m < 0 || m > (int)i)
            die("a rule does not match a request made from its own pattern", r->url);
        free(target);
        free(host);
    }
    /* The input itself as a target and as a host. */
    char *s = malloc(size + 2);
    s[0] = '/';
    memcpy(s + 1, data, size);
    s[size + 1] = '\0';
    check_index(d, af_dispatch_match(d, s + 1, size, s));
    check_index(d, af_dispatch_match(d, NULL, 0, s + 1));
    free(s);
    af_dispatch_free(d);
    return 0;
}
