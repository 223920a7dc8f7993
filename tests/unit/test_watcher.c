/* Unit tests of proxy/watcher.c on a real directory tree, with the real
 * inotify and the real event loop. The .c is included to reach the hash
 * table and the test-only watch limit. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/watcher.c"

/* ---- fixture: a temporary tree and a loop ------------------------------------ */

struct fx {
    char root[256];
    struct event_base *base;
    struct af_watcher *w;
    int batches;
    char seen[8192]; /* every path delivered, "|"-separated */
    bool overflow;
};

static void on_batch(void *arg, const struct af_watch_batch *b)
{
    struct fx *f = arg;
    f->batches++;
    f->overflow |= b->overflow;
    for (size_t i = 0; i < b->n_paths; i++) {
        size_t n = strlen(f->seen);
        snprintf(f->seen + n, sizeof(f->seen) - n, "|%s", b->paths[i]);
    }
}

static void put(struct fx *f, const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", f->root, rel);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void mk(struct fx *f, const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", f->root, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

/* Runs the loop for ms milliseconds. */
static void run_for(struct fx *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

static bool saw(const struct fx *f, const char *rel)
{
    char needle[300];
    snprintf(needle, sizeof(needle), "|%s|", rel);
    char hay[8300];
    snprintf(hay, sizeof(hay), "%s|", f->seen);
    return strstr(hay, needle) != NULL;
}

static void reset(struct fx *f)
{
    f->batches = 0;
    f->seen[0] = '\0';
    f->overflow = false;
}

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    snprintf(f->root, sizeof(f->root), "%s/af-watch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->root));
    f->base = event_base_new();
    return f;
}

static void fx_start(struct fx *f, char *const *skip, size_t n_skip, const char *ignore,
                     bool mtime, int poll_ms)
{
    struct af_watcher_options o = {
        .root = f->root,
        .skip_files = skip,
        .n_skip_files = n_skip,
        .ignore_re = ignore,
        .use_mtime = mtime,
        .poll_ms = poll_ms,
        .cb = on_batch,
        .arg = f,
    };
    char err[256];
    f->w = af_watcher_new(f->base, &o, err, sizeof(err));
    assert_non_null(f->w);
}

static void fx_free(struct fx *f)
{
    af_watcher_free(f->w);
    event_base_free(f->base);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_ignore_rules(void **state)
{
    struct fx *f = fx_new();
    char *skip[] = {"^skipped/.*$", "^(.*/)?.*\\.log$"};
    fx_start(f, skip, 2, "^scratch/", false, 0);
    struct af_watcher *w = f->w;
    assert_true(af_watcher_ignored(w, ".git", true));
    assert_true(af_watcher_ignored(w, "src/.main.c.swp", false));
    assert_true(af_watcher_ignored(w, "main.c~", false));
    assert_true(af_watcher_ignored(w, "#main.c#", false));
    assert_true(af_watcher_ignored(w, "sub/x.swp", false));
    assert_true(af_watcher_ignored(w, "4913", false));
    assert_true(af_watcher_ignored(w, "skipped/a/b.c", false));
    assert_true(af_watcher_ignored(w, "skipped", true)); /* as "skipped/" */
    assert_true(af_watcher_ignored(w, "a/b/debug.log", false));
    assert_true(af_watcher_ignored(w, "scratch/x", false));
    assert_false(af_watcher_ignored(w, "", true));
    assert_false(af_watcher_ignored(w, "main.c", false));
    assert_false(af_watcher_ignored(w, "src/skipped/a.c", false)); /* skip_files are anchored */
    assert_false(af_watcher_ignored(w, "debug.log.c", false));
    assert_false(af_watcher_ignored(w, "#main.c", false));
    fx_free(f);
}

static void test_bad_expression_is_refused(void **state)
{
    struct fx *f = fx_new();
    char *skip[] = {"(unclosed"};
    struct af_watcher_options o = {.root = f->root, .skip_files = skip, .n_skip_files = 1,
                                   .cb = on_batch, .arg = f};
    char err[256] = "";
    assert_null(af_watcher_new(f->base, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "(unclosed"));
    fx_free(f);
}

static void test_changes_coalesce_into_one_batch(void **state)
{
    struct fx *f = fx_new();
    mk(f, "src");
    fx_start(f, NULL, 0, NULL, false, 0);
    put(f, "src/a.c", "1");
    put(f, "src/b.c", "1");
    put(f, "src/a.c", "2");
    put(f, ".hidden", "x");
    run_for(f, 250);
    assert_int_equal(f->batches, 1);
    assert_true(saw(f, "src/a.c"));
    assert_true(saw(f, "src/b.c"));
    assert_false(saw(f, ".hidden"));
    /* Nothing more happens while nothing changes. */
    reset(f);
    run_for(f, 200);
    assert_int_equal(f->batches, 0);
    fx_free(f);
}

static void test_new_directories_are_followed(void **state)
{
    struct fx *f = fx_new();
    fx_start(f, NULL, 0, NULL, false, 0);
    mk(f, "a");
    mk(f, "a/b");
    run_for(f, 150);
    assert_true(saw(f, "a"));
    reset(f);
    put(f, "a/b/deep.c", "x");
    run_for(f, 150);
    assert_true(saw(f, "a/b/deep.c"));
    /* A directory moved within the tree is watched under its new name. */
    char from[512], to[512];
    snprintf(from, sizeof(from), "%s/a", f->root);
    snprintf(to, sizeof(to), "%s/z", f->root);
    assert_int_equal(rename(from, to), 0);
    run_for(f, 150);
    reset(f);
    put(f, "z/b/moved.c", "x");
    run_for(f, 150);
    assert_true(saw(f, "z/b/moved.c"));
    fx_free(f);
}

static void test_skipped_directories_get_no_watch(void **state)
{
    struct fx *f = fx_new();
    mk(f, "node_modules");
    mk(f, "node_modules/pkg");
    mk(f, "src");
    char *skip[] = {"^(.*/)?node_modules/.*$"};
    fx_start(f, skip, 1, NULL, false, 0);
    struct af_watcher_stats st;
    af_watcher_stats(f->w, &st);
    assert_true(st.inotify);
    assert_int_equal(st.watched_dirs, 2); /* the root and src */
    put(f, "node_modules/pkg/x.js", "x");
    run_for(f, 150);
    assert_int_equal(f->batches, 0);
    fx_free(f);
}

static void test_mtime_fallback(void **state)
{
    struct fx *f = fx_new();
    mk(f, "src");
    put(f, "src/a.c", "1");
    put(f, "gone.c", "1");
    fx_start(f, NULL, 0, NULL, true, 50);
    struct af_watcher_stats st;
    af_watcher_stats(f->w, &st);
    assert_false(st.inotify);
    assert_int_equal(st.polled_files, 3); /* src, src/a.c, gone.c */
    run_for(f, 150);
    assert_int_equal(f->batches, 0);
    put(f, "src/a.c", "22"); /* size changes, whatever the clock's resolution */
    char p[512];
    snprintf(p, sizeof(p), "%s/gone.c", f->root);
    unlink(p);
    mk(f, "new");
    put(f, ".hidden", "x");
    run_for(f, 300);
    assert_true(saw(f, "src/a.c"));
    assert_true(saw(f, "gone.c"));
    assert_true(saw(f, "new"));
    assert_false(saw(f, ".hidden"));
    fx_free(f);
}

/* Out of watches: reported once, the rest polled, changes still seen. */
static void test_out_of_watches_falls_back_to_polling(void **state)
{
    struct fx *f = fx_new();
    mk(f, "a");
    mk(f, "b");
    mk(f, "c");
    struct af_watcher_options o = {.root = f->root, .poll_ms = 50, .cb = on_batch, .arg = f};
    char err[256];
    test_watch_limit = 2;
    f->w = af_watcher_new(f->base, &o, err, sizeof(err));
    test_watch_limit = 0;
    assert_non_null(f->w);
    struct af_watcher_stats st;
    af_watcher_stats(f->w, &st);
    assert_int_equal(st.watched_dirs, 2);
    assert_int_equal(st.polled_roots, 2);
    assert_true(f->w->warned_limit);
    /* Every directory still reports, watched or polled. */
    put(f, "a/x", "1");
    put(f, "b/x", "1");
    put(f, "c/x", "1");
    run_for(f, 300);
    assert_true(saw(f, "a/x"));
    assert_true(saw(f, "b/x"));
    assert_true(saw(f, "c/x"));
    fx_free(f);
}

static bool eq_ptr(const void *item, const void *key)
{
    return item == key;
}

/* The hash table's deletion keeps every other entry reachable. */
static void test_htab_backward_shift(void **state)
{
    struct htab t = {0};
    enum { N = 3000 };
    static int items[N];
    for (int i = 0; i < N; i++)
        htab_insert(&t, hash_int(i) & 0xff, &items[i]); /* many collisions */
    for (int i = 0; i < N; i += 2)
        htab_remove(&t, hash_int(i) & 0xff, &items[i]);
    assert_int_equal(t.n, N / 2);
    for (int i = 0; i < N; i++) {
        void *found = htab_find(&t, hash_int(i) & 0xff, eq_ptr, &items[i]);
        if (i % 2)
            assert_ptr_equal(found, &items[i]);
        else
            assert_null(found);
    }
    htab_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ignore_rules),
        cmocka_unit_test(test_bad_expression_is_refused),
        cmocka_unit_test(test_changes_coalesce_into_one_batch),
        cmocka_unit_test(test_new_directories_are_followed),
        cmocka_unit_test(test_skipped_directories_get_no_watch),
        cmocka_unit_test(test_mtime_fallback),
        cmocka_unit_test(test_out_of_watches_falls_back_to_polling),
        cmocka_unit_test(test_htab_backward_shift),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
