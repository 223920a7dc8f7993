/*
 * watcher — tells the module which files of the app directory changed.
 *
 * inotify by default: one watch per directory, added recursively at start
 * and for every directory that appears later. With use_mtime (the
 * --use_mtime_file_watcher fallback) the tree is walked every poll_ms
 * instead and each file's (mtime, size, inode) compared with the last walk.
 * When the kernel runs out of inotify watches, the directories left without
 * a watch are polled that way, so the whole tree is still covered; the
 * shortage is logged once with the fix.
 *
 * Paths are relative to the root, '/'-separated, without "./". A path is
 * ignored when it is editor noise (a dot-file or dot-directory, name~,
 * #name#, *.swp, *.swx, vim's "4913" probe), when one of skip_files matches
 * it in full, or when ignore_re matches anywhere in it. A directory is also
 * tested as "dir/": a skip_files entry for everything under node_modules
 * (as in docs/devloop.md) keeps that whole tree from being watched at all.
 *
 * Changes are coalesced: the first one opens a window of coalesce_ms and
 * everything seen in it is delivered in one batch when it closes.
 *
 * Everything runs on the event loop of `base` (the main thread); the
 * callback is called from it, never from inside af_watcher_* calls.
 */
#ifndef AF_WATCHER_H
#define AF_WATCHER_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct af_watcher;

/* At most this many paths are listed in a batch; the rest are counted. */
#define AF_WATCH_BATCH_MAX 1024

struct af_watch_batch {
    const char *const *paths; /* distinct changed paths, relative; borrowed for the call */
    size_t n_paths;
    size_t n_more;  /* changed paths beyond AF_WATCH_BATCH_MAX, not listed */
    bool overflow;  /* the kernel dropped events: anything may have changed */
};

typedef void (*af_watcher_cb)(void *arg, const struct af_watch_batch *batch);

struct af_watcher_options {
    const char *root;              /* directory to watch; copied */
    char *const *skip_files;       /* app.yaml skip_files sources; compiled, not kept */
    size_t n_skip_files;
    const char *ignore_re;         /* --watcher_ignore_re or NULL; compiled */
    bool use_mtime;                /* poll instead of inotify */
    int poll_ms;                   /* period of the mtime walk; 0 means 1000 */
    int coalesce_ms;               /* batch window; 0 means 100 */
    af_watcher_cb cb;
    void *arg;
};

/* What the watcher holds, for logs and the benchmark. */
struct af_watcher_stats {
    bool inotify;        /* false: polling everything */
    size_t watched_dirs; /* directories with an inotify watch */
    size_t polled_roots; /* subtrees polled for want of watches (or 1 in mtime mode) */
    size_t polled_files; /* entries whose stamps the poller keeps */
};

/*
 * Starts watching. The initial walk happens here, on the caller's thread.
 * Returns the watcher, or NULL with a message in err (a regular expression
 * that does not compile, a root that is not a directory).
 */
struct af_watcher *af_watcher_new(struct event_base *base, const struct af_watcher_options *opts,
                                  char *err, size_t errlen);

/* Replaces skip_files (app.yaml was reloaded) and walks the tree again so
 * that directories no longer skipped get watched. Returns 0, or -1 with a
 * message in err and the old expressions kept. */
int af_watcher_set_skip_files(struct af_watcher *w, char *const *skip_files, size_t n,
                              char *err, size_t errlen);

/* True when a change to `rel` (relative path) is ignored. */
bool af_watcher_ignored(struct af_watcher *w, const char *rel, bool is_dir);

void af_watcher_stats(const struct af_watcher *w, struct af_watcher_stats *st);

/* Stops watching and frees. NULL is a no-op. */
void af_watcher_free(struct af_watcher *w);

#endif
