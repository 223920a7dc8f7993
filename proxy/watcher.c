/*
 * watcher — see watcher.h.
 *
 * Why inotify needs so little: one watch per directory (never per file),
 * and the kernel only wakes us when something in a watched directory
 * changes, so an idle tree of any size costs no CPU at all. The mtime
 * fallback, by contrast, does one fstatat(2) per file per poll_ms: its cost
 * grows with the tree (docs/devloop.md has the figures).
 *
 * The events asked for are those that mean "a file's content or its place
 * changed, and the writer is done": IN_CLOSE_WRITE rather than IN_MODIFY,
 * so that copying a large file is one change when it is complete, not a
 * stream of them while it is half written. A writer that keeps a file open
 * forever (or writes through mmap) is therefore not seen until it closes;
 * docs/devloop.md says so.
 *
 * Symbolic links to directories are not followed: a link is an entry like
 * any other, and following would need cycle detection and could pull a
 * whole system directory into the watch set.
 */
#include "proxy/watcher.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/appyaml.h"

#define DEFAULT_POLL_MS 1000
#define DEFAULT_COALESCE_MS 100
/* Deeper trees than this are not followed: a directory loop made of bind
 * mounts would otherwise recurse until the stack ends. */
#define MAX_DEPTH 64

#define WATCH_MASK                                                                              \
    (IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |         \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* Tests set this to run out of watches without touching the system limit. */
static size_t test_watch_limit;

/* ---- a small hash table: open addressing, linear probing ----------------- */

struct hslot {
    uint64_t h;
    void *item; /* NULL: empty */
};

struct htab {
    struct hslot *v;
    size_t cap; /* a power of two, or 0 */
    size_t n;
};

typedef bool (*heq_fn)(const void *item, const void *key);

static uint64_t hash_str(const char *s)
{
    /* FNV-1a: paths are short and the table is private, so a keyed hash
     * buys nothing here. */
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t hash_int(int k)
{
    uint64_t h = (uint64_t)(unsigned)k * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static void *htab_find(const struct htab *t, uint64_t h, heq_fn eq, const void *key)
{
    if (!t->cap)
        return NULL;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (!t->v[i].item)
            return NULL;
        if (t->v[i].h == h && eq(t->v[i].item, key))
            return t->v[i].item;
    }
}

static void htab_put_slot(struct hslot *v, size_t cap, uint64_t h, void *item)
{
    size_t i = h & (cap - 1);
    while (v[i].item)
        i = (i + 1) & (cap - 1);
    v[i].h = h;
    v[i].item = item;
}

/* The caller knows the key is not in the table. */
static void htab_insert(struct htab *t, uint64_t h, void *item)
{
    if ((t->n + 1) * 4 > t->cap * 3) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct hslot *v = af_xcalloc(cap, sizeof(*v));
        for (size_t i = 0; i < t->cap; i++)
            if (t->v[i].item)
                htab_put_slot(v, cap, t->v[i].h, t->v[i].item);
        free(t->v);
        t->v = v;
        t->cap = cap;
    }
    htab_put_slot(t->v, t->cap, h, item);
    t->n++;
}

/* Removes `item` (by identity). Backward-shift deletion: no tombstones, so
 * lookups stay short however many directories come and go. */
static void htab_remove(struct htab *t, uint64_t h, const void *item)
{
    if (!t->cap)
        return;
    size_t mask = t->cap - 1, i = h & mask;
    while (t->v[i].item && t->v[i].item != item)
        i = (i + 1) & mask;
    if (!t->v[i].item)
        return;
    t->v[i].item = NULL;
    t->n--;
    for (size_t j = (i + 1) & mask; t->v[j].item; j = (j + 1) & mask) {
        size_t home = t->v[j].h & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        t->v[i] = t->v[j];
        t->v[j].item = NULL;
        i = j;
    }
}

static void htab_release(struct htab *t)
{
    free(t->v);
    t->v = NULL;
    t->cap = t->n = 0;
}

/* ---- the watcher ------------------------------------------------------------ */

/* A directory under an inotify watch. */
struct wdir {
    int wd;
    char *rel; /* "" for the root */
};

/* What the poller knows of one entry. */
struct stamp {
    char *rel;
    int64_t mtime_ns;
    int64_t size;
    uint64_t ino;
    unsigned mode;
    unsigned gen; /* the walk that last saw it */
    bool ignored; /* decided once: the rules only change with app.yaml */
};

struct af_watcher {
    struct event_base *base;
    char *root;
    af_watcher_cb cb;
    void *arg;
    int poll_ms;
    int coalesce_ms;

    pcre2_code **skip;
    size_t n_skip;
    pcre2_code *ignore_re;
    pcre2_match_data *md;

    /* inotify */
    int ifd; /* -1 in mtime mode */
    struct event *iev;
    struct htab dirs; /* wd -> struct wdir */
    bool warned_limit;
    size_t watch_limit; /* 0: as many as the kernel allows; tests set it */

    /* polling: the whole tree in mtime mode, else what lacks a watch */
    char **poll_roots;
    size_t n_poll_roots;
    struct htab files; /* rel -> struct stamp */
    unsigned walk_gen;
    bool walk_report; /* report differences (false on a root's first walk) */
    struct event *poll_ev;

    /* the batch being collected */
    char *pending[AF_WATCH_BATCH_MAX];
    size_t n_pending;
    size_t n_more;
    bool overflow;
    struct event *batch_ev;
};

/* ---- ignore rules ------------------------------------------------------------ */

static bool editor_noise(const char *name)
{
    size_t n = strlen(name);
    if (n == 0)
        return false;
    if (name[0] == '.')
        return true; /* dot-files: .git, .#lock, .swp of vim, ... */
    if (name[n - 1] == '~')
        return true; /* backups */
    if (n >= 2 && name[0] == '#' && name[n - 1] == '#')
        return true; /* Emacs autosave */
    if (n > 4 && (strcmp(name + n - 4, ".swp") == 0 || strcmp(name + n - 4, ".swx") == 0))
        return true;
    /* vim creates and deletes "4913" to test that it may write in a
     * directory before saving. */
    return strcmp(name, "4913") == 0;
}

static bool re_matches(struct af_watcher *w, const pcre2_code *re, const char *s)
{
    return pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, w->md, NULL) >= 0;
}

bool af_watcher_ignored(struct af_watcher *w, const char *rel, bool is_dir)
{
    if (!*rel)
        return false; /* the root itself */
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    if (editor_noise(base))
        return true;
    char *slashed = is_dir ? af_xasprintf("%s/", rel) : NULL;
    bool hit = false;
    for (size_t i = 0; i < w->n_skip && !hit; i++)
        hit = re_matches(w, w->skip[i], rel) || (slashed && re_matches(w, w->skip[i], slashed));
    if (!hit && w->ignore_re)
        hit = re_matches(w, w->ignore_re, rel) || (slashed && re_matches(w, w->ignore_re, slashed));
    free(slashed);
    return hit;
}

static pcre2_code *compile(const char *src, uint32_t extra, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                                   AF_APPYAML_PCRE2_OPTIONS | extra, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "bad regular expression '%s': %s at offset %zu", src,
                 (const char *)msg, (size_t)off);
    }
    return re;
}

static void free_skip(pcre2_code **skip, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pcre2_code_free(skip[i]);
    free(skip);
}

/* skip_files match whole paths, as app.yaml's regular expressions do in
 * dev_appserver (which wraps them in ^(?:...)$). */
static pcre2_code **compile_skip(char *const *src, size_t n, char *err, size_t errlen)
{
    pcre2_code **v = af_xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = compile(src[i], PCRE2_ANCHORED | PCRE2_ENDANCHORED, err, errlen);
        if (!v[i]) {
            free_skip(v, i);
            return NULL;
        }
    }
    return v;
}

/* ---- batching ---------------------------------------------------------------- */

static void batch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_watcher *w = arg;
    /* Taken out before calling: the callback may well cause new changes,
     * which open the next batch. */
    size_t n = w->n_pending;
    char *paths[AF_WATCH_BATCH_MAX];
    memcpy(paths, w->pending, n * sizeof(char *));
    struct af_watch_batch b = {
        .paths = (const char *const *)paths,
        .n_paths = n,
        .n_more = w->n_more,
        .overflow = w->overflow,
    };
    w->n_pending = 0;
    w->n_more = 0;
    w->overflow = false;
    w->cb(w->arg, &b);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
}

static void batch_open(struct af_watcher *w)
{
    if (evtimer_pending(w->batch_ev, NULL))
        return;
    struct timeval tv = {w->coalesce_ms / 1000, (w->coalesce_ms % 1000) * 1000};
    evtimer_add(w->batch_ev, &tv);
}

static void changed(struct af_watcher *w, const char *rel)
{
    af_debug("watcher: %s changed", *rel ? rel : ".");
    batch_open(w);
    for (size_t i = 0; i < w->n_pending; i++)
        if (strcmp(w->pending[i], rel) == 0)
            return;
    if (w->n_pending < AF_WATCH_BATCH_MAX)
        w->pending[w->n_pending++] = af_xstrdup(rel);
    else
        w->n_more++;
}

static void changed_all(struct af_watcher *w)
{
    batch_open(w);
    w->overflow = true;
}

/* ---- walking ---------------------------------------------------------------------- */

static char *join(const char *rel, const char *name)
{
    return *rel ? af_xasprintf("%s/%s", rel, name) : af_xstrdup(name);
}

static char *abs_path(const struct af_watcher *w, const char *rel)
{
    return *rel ? af_xasprintf("%s/%s", w->root, rel) : af_xstrdup(w->root);
}

static bool entry_is_dir(int dfd, const struct dirent *e)
{
    if (e->d_type == DT_DIR)
        return true;
    if (e->d_type != DT_UNKNOWN)
        return false;
    struct stat st;
    return fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* ---- polling ---------------------------------------------------------------------- */

static bool stamp_eq(const void *item, const void *key)
{
    return strcmp(((const struct stamp *)item)->rel, key) == 0;
}

/* Notes what the walk found at `rel`: a change when it is new or its stamp
 * moved. The stamp table also remembers ignored entries, so that each walk
 * costs one hash lookup per entry instead of a regular expression match per
 * skip_files entry. */
static void poll_note(struct af_watcher *w, struct stamp *s, const char *rel,
                      const struct stat *st)
{
    int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    bool is_dir = S_ISDIR(st->st_mode);
    if (!s) {
        s = af_xcalloc(1, sizeof(*s));
        s->rel = af_xstrdup(rel);
        htab_insert(&w->files, hash_str(rel), s);
        if (w->walk_report)
            changed(w, rel);
    } else if (w->walk_report &&
               ((!is_dir && (s->mtime_ns != mt || s->size != (int64_t)st->st_size)) ||
                s->ino != (uint64_t)st->st_ino || s->mode != (unsigned)st->st_mode)) {
        /* A directory's own mtime moves with every entry added or removed,
         * and those entries are reported themselves. */
        changed(w, rel);
    }
    s->mtime_ns = mt;
    s->size = (int64_t)st->st_size;
    s->ino = (uint64_t)st->st_ino;
    s->mode = (unsigned)st->st_mode;
    s->gen = w->walk_gen;
}

/* Walks one directory of a polled subtree. `path` holds its relative path
 * (PATH_MAX bytes, restored on return). Returns -1 when it is gone. */
static int poll_dir(struct af_watcher *w, char *path, int depth)
{
    size_t len = strlen(path);
    char *abs = abs_path(w, path);
    DIR *d = opendir(abs);
    free(abs);
    if (!d)
        return -1;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t nl = strlen(e->d_name);
        if (len + nl + 2 > PATH_MAX)
            continue;
        if (len) {
            path[len] = '/';
            memcpy(path + len + 1, e->d_name, nl + 1);
        } else {
            memcpy(path, e->d_name, nl + 1);
        }
        struct stamp *s = htab_find(&w->files, hash_str(path), stamp_eq, path);
        if (s && s->ignored) {
            s->gen = w->walk_gen;
            continue;
        }
        struct stat st;
        if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            bool is_dir = S_ISDIR(st.st_mode);
            if (!s && af_watcher_ignored(w, path, is_dir)) {
                s = af_xcalloc(1, sizeof(*s));
                s->rel = af_xstrdup(path);
                s->ignored = true;
                s->mode = (unsigned)st.st_mode;
                s->gen = w->walk_gen;
                htab_insert(&w->files, hash_str(path), s);
            } else {
                poll_note(w, s, path, &st);
                if (is_dir && depth < MAX_DEPTH)
                    poll_dir(w, path, depth + 1);
            }
        }
        /* else: gone between readdir and stat; the sweep says so */
        path[len] = '\0';
    }
    closedir(d);
    return 0;
}

static int poll_subtree(struct af_watcher *w, const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", rel);
    return poll_dir(w, path, 0);
}

static void poll_add_root(struct af_watcher *w, const char *rel)
{
    for (size_t i = 0; i < w->n_poll_roots; i++)
        if (strcmp(w->poll_roots[i], rel) == 0)
            return;
    w->poll_roots = af_xrealloc(w->poll_roots, (w->n_poll_roots + 1) * sizeof(char *));
    w->poll_roots[w->n_poll_roots++] = af_xstrdup(rel);
    /* Its first walk only learns the stamps: the directory's appearance was
     * reported by whoever found it. */
    bool report = w->walk_report;
    w->walk_report = false;
    poll_subtree(w, rel);
    w->walk_report = report;
    if (!evtimer_pending(w->poll_ev, NULL)) {
        struct timeval tv = {w->poll_ms / 1000, (w->poll_ms % 1000) * 1000};
        evtimer_add(w->poll_ev, &tv);
    }
}

/* One walk of every polled subtree; what was not seen was deleted. */
static void poll_walk(struct af_watcher *w)
{
    w->walk_gen++;
    w->walk_report = true;
    for (size_t i = 0; i < w->n_poll_roots;) {
        if (poll_subtree(w, w->poll_roots[i]) < 0 && *w->poll_roots[i]) {
            /* A polled subtree was removed: forget it. */
            free(w->poll_roots[i]);
            w->poll_roots[i] = w->poll_roots[--w->n_poll_roots];
            continue;
        }
        i++;
    }
    /* Sweep. Collect first: removing while scanning would shift entries
     * under the cursor. */
    size_t n_gone = 0;
    struct stamp **gone = NULL;
    for (size_t i = 0; i < w->files.cap; i++) {
        struct stamp *s = w->files.v[i].item;
        if (s && s->gen != w->walk_gen) {
            gone = af_xrealloc(gone, (n_gone + 1) * sizeof(*gone));
            gone[n_gone++] = s;
        }
    }
    for (size_t i = 0; i < n_gone; i++) {
        if (!gone[i]->ignored)
            changed(w, gone[i]->rel);
        htab_remove(&w->files, hash_str(gone[i]->rel), gone[i]);
        free(gone[i]->rel);
        free(gone[i]);
    }
    free(gone);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_watcher *w = arg;
    poll_walk(w);
    if (w->n_poll_roots) {
        struct timeval tv = {w->poll_ms / 1000, (w->poll_ms % 1000) * 1000};
        evtimer_add(w->poll_ev, &tv);
    }
}

/* ---- inotify --------------------------------------------------------------------------- */

static bool wdir_eq(const void *item, const void *key)
{
    return ((const struct wdir *)item)->wd == *(const int *)key;
}

static struct wdir *wdir_find(const struct af_watcher *w, int wd)
{
    return htab_find(&w->dirs, hash_int(wd), wdir_eq, &wd);
}

static void wdir_drop(struct af_watcher *w, struct wdir *d)
{
    htab_remove(&w->dirs, hash_int(d->wd), d);
    free(d->rel);
    free(d);
}

static void out_of_watches(struct af_watcher *w, const char *rel)
{
    if (!w->warned_limit) {
        w->warned_limit = true;
        char limit[32] = "?";
        FILE *f = fopen("/proc/sys/fs/inotify/max_user_watches", "r");
        if (f) {
            if (!fgets(limit, sizeof(limit), f))
                snprintf(limit, sizeof(limit), "?");
            limit[strcspn(limit, "\n")] = '\0';
            fclose(f);
        }
        af_warn("Out of inotify watches after %zu directories (fs.inotify.max_user_watches = "
                "%s, shared by every program of this user): the directories left over, from "
                "%s/%s on, are polled every %d ms instead, which costs CPU. To watch them all "
                "natively: sudo sysctl fs.inotify.max_user_watches=524288 (and put "
                "fs.inotify.max_user_watches=524288 in /etc/sysctl.d/ to keep it), or add "
                "big directories to skip_files.",
                w->dirs.n, limit, w->root, rel, w->poll_ms);
    }
    poll_add_root(w, rel);
}

/* Watches `rel` and every directory below it that is not ignored. */
static void watch_tree(struct af_watcher *w, const char *rel, int depth)
{
    char *path = abs_path(w, rel);
    int wd = -1;
    if (w->watch_limit && w->dirs.n >= w->watch_limit) {
        errno = ENOSPC;
    } else {
        wd = inotify_add_watch(w->ifd, path, WATCH_MASK);
    }
    if (wd < 0) {
        if (errno == ENOSPC)
            out_of_watches(w, rel);
        else if (errno != ENOENT && errno != ENOTDIR)
            af_warn("Cannot watch %s: %s; changes there are not seen", path, strerror(errno));
        free(path);
        return;
    }
    struct wdir *d = wdir_find(w, wd);
    if (d) {
        /* Watched already (a rescan, or a directory moved back): the kernel
         * gave the same descriptor; keep the path up to date. */
        free(d->rel);
        d->rel = af_xstrdup(rel);
    } else {
        d = af_xcalloc(1, sizeof(*d));
        d->wd = wd;
        d->rel = af_xstrdup(rel);
        htab_insert(&w->dirs, hash_int(wd), d);
    }
    DIR *dir = depth < MAX_DEPTH ? opendir(path) : NULL;
    free(path);
    if (!dir)
        return;
    int dfd = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        /* Editor noise is filtered before the (rare) stat of DT_UNKNOWN. */
        if (editor_noise(e->d_name) || !entry_is_dir(dfd, e))
            continue;
        char *child = join(rel, e->d_name);
        if (!af_watcher_ignored(w, child, true))
            watch_tree(w, child, depth + 1);
        free(child);
    }
    closedir(dir);
}

/* A directory moved away: its watches and those below would report under a
 * stale path, so they go; if it reappears inside the tree, MOVED_TO watches
 * it again under its new name. */
static void unwatch_tree(struct af_watcher *w, const char *rel)
{
    size_t len = strlen(rel);
    size_t n = 0;
    struct wdir **v = NULL;
    for (size_t i = 0; i < w->dirs.cap; i++) {
        struct wdir *d = w->dirs.v[i].item;
        if (d && strncmp(d->rel, rel, len) == 0 && (d->rel[len] == '\0' || d->rel[len] == '/')) {
            v = af_xrealloc(v, (n + 1) * sizeof(*v));
            v[n++] = d;
        }
    }
    for (size_t i = 0; i < n; i++) {
        inotify_rm_watch(w->ifd, v[i]->wd);
        wdir_drop(w, v[i]);
    }
    free(v);
}

static void handle_event(struct af_watcher *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        af_warn("The inotify queue overflowed; looking for new directories and restarting");
        watch_tree(w, "", 0);
        changed_all(w);
        return;
    }
    struct wdir *d = wdir_find(w, ev->wd);
    if (!d)
        return;
    if (ev->mask & IN_IGNORED) {
        /* The kernel removed the watch (its directory is gone). */
        wdir_drop(w, d);
        return;
    }
    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        if (!*d->rel)
            af_warn("The app directory %s was %s; changes are no longer seen", w->root,
                    ev->mask & IN_DELETE_SELF ? "deleted" : "moved");
        return; /* the parent reports the entry itself */
    }
    if (!ev->len)
        return;
    bool is_dir = ev->mask & IN_ISDIR;
    char *rel = join(d->rel, ev->name);
    if (af_watcher_ignored(w, rel, is_dir)) {
        free(rel);
        return;
    }
    if (is_dir && (ev->mask & IN_MOVED_FROM))
        unwatch_tree(w, rel);
    if (is_dir && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
        watch_tree(w, rel, 0);
    changed(w, rel);
    free(rel);
}

static void inotify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_watcher *w = arg;
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    /* A bounded number of reads per wakeup: the rest waits for the next
     * turn of the loop, so a storm of events cannot starve requests. */
    for (int round = 0; round < 16; round++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            handle_event(w, ev);
            p += sizeof(*ev) + ev->len;
        }
    }
}

/* ---- lifecycle -------------------------------------------------------------------------- */

struct af_watcher *af_watcher_new(struct event_base *base, const struct af_watcher_options *opts,
                                  char *err, size_t errlen)
{
    struct stat st;
    if (stat(opts->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cannot watch %s: not a directory", opts->root);
        return NULL;
    }
    struct af_watcher *w = af_xcalloc(1, sizeof(*w));
    w->base = base;
    w->root = af_xstrdup(opts->root);
    size_t rl = strlen(w->root);
    while (rl > 1 && w->root[rl - 1] == '/')
        w->root[--rl] = '\0';
    w->cb = opts->cb;
    w->arg = opts->arg;
    w->poll_ms = opts->poll_ms > 0 ? opts->poll_ms : DEFAULT_POLL_MS;
    w->coalesce_ms = opts->coalesce_ms > 0 ? opts->coalesce_ms : DEFAULT_COALESCE_MS;
    w->ifd = -1;
    w->watch_limit = test_watch_limit;
    w->md = pcre2_match_data_create(1, NULL);
    w->skip = compile_skip(opts->skip_files, opts->n_skip_files, err, errlen);
    if (!w->skip)
        goto fail;
    w->n_skip = opts->n_skip_files;
    if (opts->ignore_re && !(w->ignore_re = compile(opts->ignore_re, 0, err, errlen)))
        goto fail;
    w->batch_ev = evtimer_new(base, batch_cb, w);
    w->poll_ev = evtimer_new(base, poll_cb, w);

    if (!opts->use_mtime) {
        w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->ifd < 0)
            af_warn("inotify is not available (%s): polling %s every %d ms instead",
                    strerror(errno), w->root, w->poll_ms);
    }
    if (w->ifd >= 0) {
        w->iev = event_new(base, w->ifd, EV_READ | EV_PERSIST, inotify_cb, w);
        event_add(w->iev, NULL);
        watch_tree(w, "", 0);
    } else {
        poll_add_root(w, "");
    }
    return w;
fail:
    af_watcher_free(w);
    return NULL;
}

int af_watcher_set_skip_files(struct af_watcher *w, char *const *skip_files, size_t n, char *err,
                              size_t errlen)
{
    pcre2_code **v = compile_skip(skip_files, n, err, errlen);
    if (!v)
        return -1;
    free_skip(w->skip, w->n_skip);
    w->skip = v;
    w->n_skip = n;
    /* The poller's remembered decisions are stale: decide again. */
    for (size_t i = 0; i < w->files.cap; i++) {
        struct stamp *s = w->files.v[i].item;
        if (s)
            s->ignored = af_watcher_ignored(w, s->rel, S_ISDIR(s->mode));
    }
    if (w->ifd >= 0)
        watch_tree(w, "", 0);
    return 0;
}

void af_watcher_stats(const struct af_watcher *w, struct af_watcher_stats *st)
{
    st->inotify = w->ifd >= 0;
    st->watched_dirs = w->dirs.n;
    st->polled_roots = w->n_poll_roots;
    st->polled_files = w->files.n;
}

void af_watcher_free(struct af_watcher *w)
{
    if (!w)
        return;
    if (w->iev)
        event_free(w->iev);
    if (w->ifd >= 0)
        close(w->ifd);
    if (w->batch_ev)
        event_free(w->batch_ev);
    if (w->poll_ev)
        event_free(w->poll_ev);
    for (size_t i = 0; i < w->dirs.cap; i++) {
        struct wdir *d = w->dirs.v[i].item;
        if (d) {
            free(d->rel);
            free(d);
        }
    }
    htab_release(&w->dirs);
    for (size_t i = 0; i < w->files.cap; i++) {
        struct stamp *s = w->files.v[i].item;
        if (s) {
            free(s->rel);
            free(s);
        }
    }
    htab_release(&w->files);
    for (size_t i = 0; i < w->n_poll_roots; i++)
        free(w->poll_roots[i]);
    free(w->poll_roots);
    for (size_t i = 0; i < w->n_pending; i++)
        free(w->pending[i]);
    if (w->skip)
        free_skip(w->skip, w->n_skip);
    if (w->ignore_re)
        pcre2_code_free(w->ignore_re);
    if (w->md)
        pcre2_match_data_free(w->md);
    free(w->root);
    free(w);
}
