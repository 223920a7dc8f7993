#include "cfgerr.h"

#include <stdio.h>

#include "log.h"

void af_cfg_oneline(char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
    }
}

int af_cfg_errorv(char *err, size_t errlen, const char *name, int line, int col, const char *fmt,
                  va_list ap)
{
    if (!err || errlen == 0)
        return -1;
    int off = line > 0 ? snprintf(err, errlen, "%s:%d:%d: ", name, line, col)
                       : snprintf(err, errlen, "%s: ", name);
    if (off < 0) {
        err[0] = '\0';
        return -1;
    }
    if ((size_t)off < errlen)
        vsnprintf(err + off, errlen - (size_t)off, fmt, ap);
    af_cfg_oneline(err);
    return -1;
}

void af_cfg_warn(const char *name, int line, int col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    af_cfg_errorv(msg, sizeof(msg), name, line, col, fmt, ap);
    va_end(ap);
    af_warn("%s", msg);
}
