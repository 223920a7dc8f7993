/*
 * readfile — reading a small configuration file (app.yaml, dispatch.yaml,
 * queue.yaml) whole, with a bound.
 */
#ifndef AF_READFILE_H
#define AF_READFILE_H

#include <stddef.h>

/*
 * Reads fd to its end, or until more than max bytes are in (then *len >
 * max and the caller refuses the file): a file that grows while it is read
 * cannot make us allocate without bound (at most twice max, or 4 KiB). The
 * text is NUL-terminated (not counted in *len) and owned by the caller.
 * NULL with errno on a read error.
 */
char *af_read_bounded(int fd, size_t max, size_t *len);

#endif
