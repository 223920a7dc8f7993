/*
 * readfile — reading a small configuration file (app.yaml, dispatch.yaml,
 * queue.yaml) whole, with a bound.
 */
#ifndef AF_READFILE_H
#define AF_READFILE_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Reads fd to its end, or until more than max bytes are in (then *len >
 * max and the caller refuses the file): a file that grows while it is read
 * cannot make us allocate without bound (at most twice max, or 4 KiB). The
 * text is NUL-terminated (not counted in *len) and owned by the caller.
 * NULL with errno on a read error.
 */
char *af_read_bounded(int fd, size_t max, size_t *len);

/*
 * The same for a file that must be a regular file of at most max bytes:
 * NULL with errno EINVAL (not a regular file), EFBIG (longer), or the
 * error of fstat or read. *mode, unless mode is NULL, gets the file's
 * permission bits.
 */
char *af_read_regular(int fd, size_t max, size_t *len, mode_t *mode);

#endif
