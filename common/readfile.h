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

/*
 * A configuration file found by name in a directory: the first of names
 * (n of them, e.g. "queue.yaml", "queue.yml") that exists in dir, read
 * whole as af_read_regular does. Returns 1 with *path ("DIR/NAME") and
 * *text (NUL-terminated, *len bytes), both owned by the caller; 0 when
 * none exists; -1 with "PATH: reason" in err ("larger than 1 MiB; is this
 * really queue.yaml?" when over max, which is in whole MiB).
 */
int af_read_config_in(const char *dir, const char *const *names, size_t n, size_t max,
                      char **path, char **text, size_t *len, char *err, size_t errlen);

#endif
