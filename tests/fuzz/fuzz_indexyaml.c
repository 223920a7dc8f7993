/*
 * fuzz_indexyaml — index.yaml (af_index_yaml_parse,
 * apiserver/services/datastore_index_yaml.c) and the YAML appfront writes
 * into it, under libFuzzer.
 *
 * Invariants: no memory error, leak or undefined behaviour; a parse either
 * succeeds or fails with a one-line message that names the file; a file
 * that loaded has a kind and named properties in every index, and its
 * manual indexes come first; every index, written back as YAML
 * (af_ds_index_yaml), parses to the same index whatever its names hold;
 * rendering the input with a generated section (af_index_yaml_render) is
 * refused exactly when the input has no marker line, holds that line, and
 * when it reads back with as many indexes below the line as were given,
 * they are those indexes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/datastore_index_yaml.h"
#include "common/log.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_indexyaml: invariant violated: %s [%s]\n", what, detail ? detail : "");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    return 0;
}

/* The index written as YAML reads back as itself. */
static void check_round_trip(const struct af_ds_index *ix)
{
    char *item = af_ds_index_yaml(ix);
    size_t n = strlen(item) + 16;
    char *doc = malloc(n);
    snprintf(doc, n, "indexes:\n%s", item);
    struct af_index_yaml *y = NULL;
    char err[512];
    if (af_index_yaml_parse("gen.yaml", doc, strlen(doc), &y, err, sizeof(err)) != 0)
        die("a written index does not parse", err);
    if (y->n != 1 || !af_ds_index_equal(&y->indexes[0], ix))
        die("a written index reads back as another", item);
    af_index_yaml_free(y);
    free(doc);
    free(item);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[512];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    struct af_index_yaml *y = NULL;
    int rc = af_index_yaml_parse("index.yaml", text, size, &y, err, sizeof(err));
    if (rc != 0) {
        if (y)
            die("a failed parse returned indexes", err);
        if (err[0] == '\0' || strchr(err, '\n'))
            die("error message is empty or spans lines", err);
        if (strncmp(err, "index.yaml", 10) != 0)
            die("error message does not name the file", err);
        return 0;
    }
    if (!y)
        die("a successful parse without a result", NULL);
    if (y->n_manual > y->n)
        die("more manual indexes than indexes", NULL);
    for (size_t i = 0; i < y->n; i++) {
        const struct af_ds_index *ix = &y->indexes[i];
        if (!ix->kind || !ix->kind[0])
            die("an index without a kind", NULL);
        for (size_t k = 0; k < ix->n_props; k++)
            if (!ix->props[k].name || !ix->props[k].name[0])
                die("a property without a name", ix->kind);
        check_round_trip(ix);
    }
    /* The input's own indexes as the generated section. */
    char *out = af_index_yaml_render(text, size, y->indexes, y->n);
    if (!out != !y->marker)
        die("render refused a file with a marker, or took one without", NULL);
    if (out) {
        if (!strstr(out, AF_INDEX_YAML_MARKER "\n"))
            die("a rendering without the marker line", NULL);
        /* Whether the text above the marker lets the items continue the
         * list is af_index_yaml_write's check; when they do, they are the
         * indexes given, in order. */
        struct af_index_yaml *r = NULL;
        if (af_index_yaml_parse("index.yaml", out, strlen(out), &r, err, sizeof(err)) == 0) {
            if (r->marker && r->n - r->n_manual == y->n)
                for (size_t i = 0; i < y->n; i++)
                    if (!af_ds_index_equal(&r->indexes[r->n_manual + i], &y->indexes[i]))
                        die("a generated index reads back as another", y->indexes[i].kind);
            af_index_yaml_free(r);
        }
        free(out);
    }
    af_index_yaml_free(y);
    return 0;
}
