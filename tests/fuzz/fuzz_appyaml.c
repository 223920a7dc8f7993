/*
 * fuzz_appyaml — the app.yaml loader (af_appyaml_parse, proxy/appyaml.c)
 * under libFuzzer: libyaml events → the node tree → the typed walk →
 * struct af_app_yaml, including the PCRE2 compile checks of url, upload and
 * skip_files.
 *
 * Invariants: no memory error, leak or undefined behaviour; the function
 * either succeeds with a runtime set, or fails with a one-line message
 * (non-empty, no newline, NUL-terminated inside the buffer) that names the
 * file; and a file that loaded loads again to the same result, so the
 * loader keeps no state between calls.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/appyaml.h"

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_appyaml: invariant violated: %s [%s]\n", what, err ? err : "");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* Unknown keys are warnings on stderr: silence them, they are expected. */
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    memset(err, 'x', sizeof(err)); /* a missing terminator shows up as a check failure */
    err[sizeof(err) - 1] = '\0';
    struct af_app_yaml *app = NULL;
    int rc = af_appyaml_parse("app.yaml", (const char *)data, size, "/nonexistent/app", &app, err,
                              sizeof(err));
    if (rc != 0) {
        if (app)
            die("a failed parse returned an app", err);
        if (!memchr(err, '\0', sizeof(err)))
            die("error message not terminated", NULL);
        if (err[0] == '\0' || strchr(err, '\n'))
            die("error message is empty or spans lines", err);
        if (strncmp(err, "app.yaml", 8) != 0)
            die("error message does not name the file", err);
        return 0;
    }
    if (!app || !app->runtime)
        die("a successful parse without a runtime", NULL);

    /* Deterministic: the same text again gives the same app. */
    struct af_app_yaml *again = NULL;
    if (af_appyaml_parse("app.yaml", (const char *)data, size, "/nonexistent/app", &again, err,
                         sizeof(err)) != 0)
        die("the second parse of the same text failed", err);
    if (!same_str(app->runtime, again->runtime) || !same_str(app->entrypoint, again->entrypoint) ||
        app->n_handlers != again->n_handlers || app->threadsafe != again->threadsafe ||
        app->scaling != again->scaling ||
        app->max_concurrent_requests != again->max_concurrent_requests)
        die("two parses of the same text differ", NULL);
    for (size_t i = 0; i < app->n_handlers; i++)
        if (!same_str(app->handlers[i].url, again->handlers[i].url))
            die("two parses of the same text differ in a handler", NULL);
    af_appyaml_free(again);
    af_appyaml_free(app);
    return 0;
}
