/*
 * dispatch — dispatch.yaml: which module serves a request that arrives on
 * the default module's main port, by the request's host and path
 * (docs/modules.md).
 *
 * The file is loaded once at startup with libyaml; the first problem is one
 * line, "FILE:LINE:COLUMN: what is wrong", as for app.yaml. Each rule of
 * the `dispatch:` list is a pattern "HOST/PATH" whose host may start with
 * `*` (any prefix) and whose path may end with `*` (any suffix), and the
 * service (or module) it sends matching requests to.
 *
 * af_dispatch_match() runs for every request on that port when the app has
 * a dispatch.yaml, so it allocates nothing: a few byte comparisons per rule,
 * first match wins.
 */
#ifndef AF_DISPATCH_H
#define AF_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>

/* Production's limits (dispatch.yaml reference): more is warned about,
 * since App Engine refuses such a file on deploy. */
#define AF_DISPATCH_PROD_MAX_RULES 20
#define AF_DISPATCH_PROD_MAX_PART 100
/* More rules than this is not a dispatch file: refused. */
#define AF_DISPATCH_MAX_RULES 1000

/* One entry of "dispatch:". Every pointer is owned by the struct af_dispatch. */
struct af_dispatch_rule {
    int line, col; /* of the entry, for messages (1-based) */
    char *url;     /* the pattern as written */
    char *host;    /* without a leading '*'; lower case; "" for "*" */
    size_t host_len;
    bool host_exact; /* no leading '*': the whole host must be equal */
    char *path;      /* without a trailing '*'; starts with '/' */
    size_t path_len;
    bool path_exact; /* no trailing '*': the whole path must be equal */
    char *service;   /* "service:" or "module:" */
};

/* The whole file; free with af_dispatch_free(). */
struct af_dispatch {
    char *path; /* the file as named in messages */
    struct af_dispatch_rule *rules;
    size_t n_rules;
};

/*
 * Parses dispatch.yaml text; `name` is used in messages. Returns 0 and sets
 * *out (caller frees), or -1 with a one-line message in err. A file with no
 * rules (or an empty "dispatch:") is valid and has n_rules 0.
 */
int af_dispatch_parse(const char *name, const char *text, size_t len, struct af_dispatch **out,
                      char *err, size_t errlen);

/* Loads the file at path (at most 1 MiB). Same returns as af_dispatch_parse. */
int af_dispatch_load(const char *path, struct af_dispatch **out, char *err, size_t errlen);

/* Loads dir/dispatch.yaml, or dir/dispatch.yml when there is no .yaml.
 * Returns 0 with *out NULL when there is neither. */
int af_dispatch_load_dir(const char *dir, struct af_dispatch **out, char *err, size_t errlen);

/* True when the last path component of path is dispatch.yaml or
 * dispatch.yml: how a command-line argument names the file. */
bool af_dispatch_is_file_name(const char *path);

/* Removes rule i (i < n_rules); the later rules move up one place. */
void af_dispatch_drop_rule(struct af_dispatch *d, size_t i);

void af_dispatch_free(struct af_dispatch *d);

/*
 * The index of the first rule matching a request, or -1 when none does.
 * host is the request's Host field value (a port after the host is ignored,
 * letters compare in any case), NULL or "" when it has none; target is its
 * origin-form request target ("/path?query": the query is not part of the
 * match). As in production, paths under /_ah/ are never dispatched, except
 * /_ah/queue/deferred (the deferred library's task handler).
 */
int af_dispatch_match(const struct af_dispatch *d, const char *host, size_t host_len,
                      const char *target);

/* What af_dispatch_module_host() found in a Host field. */
enum af_module_host {
    AF_HOST_PLAIN = 0,     /* not a module's host name */
    AF_HOST_MODULE = 1,    /* "MODULE.localhost": dispatch.yaml applies first */
    AF_HOST_VERSIONED = 2, /* "VERSION.MODULE.localhost" (or more labels): never dispatched */
};

/*
 * Reads a Host field value (port allowed, letters in any case) as
 * production's host names of a module, spelled for a development server:
 * "[INSTANCE.][VERSION.]MODULE.localhost". On a module form, *module and
 * *module_len are the MODULE label (inside host); nothing says it names a
 * module being served. A host of ten bytes or fewer before its port
 * ("localhost:8080", "127.0.0.1:8080") costs a length check and one
 * memchr; nothing allocates.
 */
enum af_module_host af_dispatch_module_host(const char *host, size_t len, const char **module,
                                            size_t *module_len);

#endif
