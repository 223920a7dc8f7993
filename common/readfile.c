#include "common/readfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/xalloc.h"

char *af_read_bounded(int fd, size_t max, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = af_xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap > max)
                break;
            cap *= 2;
            buf = af_xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *af_read_regular(int fd, size_t max, size_t *len, mode_t *mode)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        return NULL;
    }
    if (mode)
        *mode = st.st_mode & 07777;
    char *text = af_read_bounded(fd, max, len);
    if (text && *len > max) {
        free(text);
        errno = EFBIG;
        return NULL;
    }
    return text;
}

int af_read_config_in(const char *dir, const char *const *names, size_t n, size_t max,
                      char **path, char **text, size_t *len, char *err, size_t errlen)
{
    *path = NULL;
    *text = NULL;
    for (size_t i = 0; i < n; i++) {
        char *p = af_xasprintf("%s/%s", dir, names[i]);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            free(p);
            continue;
        }
        char *t = fd < 0 ? NULL : af_read_regular(fd, max, len, NULL);
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (!t) {
            if (e == EFBIG)
                snprintf(err, errlen, "%s: larger than %zu MiB; is this really %s?", p,
                         max >> 20, names[i]);
            else
                snprintf(err, errlen, "%s: %s", p, strerror(e));
            free(p);
            return -1;
        }
        *path = p;
        *text = t;
        return 1;
    }
    return 0;
}
