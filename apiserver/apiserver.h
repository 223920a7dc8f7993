/*
 * apiserver — the always-on API RPC server (shared/DESIGN.md, "API protocol").
 *
 * af_api_start() binds the listeners and starts two threads: the listener
 * thread (its own libevent loop: the framed Unix socket and HTTP on TCP) and
 * the services backend thread (owns all service state, one call at a time).
 * They run until af_api_stop(), whether or not any request is in flight.
 * The main thread only calls the functions below.
 */
#ifndef AF_APISERVER_H
#define AF_APISERVER_H

#include <stdbool.h>
#include <stddef.h>

/* What the API server needs to know. Strings are borrowed for the duration
 * of af_api_start() only (the server copies what it keeps). */
struct af_api_options {
    const char *host;        /* TCP HTTP listener host, e.g. "localhost" */
    int port;                /* 0: pick a free port */
    const char *socket_path; /* framed Unix socket (mode 0600); NULL: none */

    const char *app_id;         /* application id as written in app.yaml, e.g. "testapp" */
    const char *module;         /* default module name, "default" */
    const char *version;        /* default version, "1" */
    int module_instances;       /* instance count reported by modules.GetNumInstances */
    const char *server_host;    /* host:port of the main front-end port, "localhost:8080" */
    const char *storage_path;   /* private directory for service state (exists, 0700) */
    const char *datastore_path; /* SQLite file of the datastore */
    bool clear_datastore;
    long long memcache_max_bytes; /* LRU cap of memcache values + keys */
    int default_deadline_ms;      /* a call queued longer than this is not run; 60000 */
};

/* Opaque: the running server. */
struct af_api;

/*
 * Binds, starts both threads and returns once both listeners accept calls.
 * Returns 0 and sets *out, or -1 with a one-line message in err.
 */
int af_api_start(const struct af_api_options *opts, struct af_api **out, char *err,
                 size_t errlen);

/* The TCP port actually bound (useful with port 0). */
int af_api_port(const struct af_api *api);

/* Stops accepting, answers or drops in-flight calls, joins both threads,
 * removes the Unix socket and frees everything. NULL is a no-op. */
void af_api_stop(struct af_api *api);

#endif
