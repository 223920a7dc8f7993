/*
 * cfgerr — the one-line errors and warnings of the configuration loaders
 * (app.yaml, dispatch.yaml, queue.yaml, index.yaml): "FILE:LINE:COL: message".
 *
 * A message quotes what the file says, and a YAML value may hold any
 * character: a quoted scalar can spell out a newline, a plain one folds
 * blank lines into newlines. Every control character of the message is
 * shown as '?', so the message stays on one line of the log or the
 * terminal whatever the file holds.
 */
#ifndef AF_CFGERR_H
#define AF_CFGERR_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Writes "name:line:col: message" into err (errlen bytes, always
 * terminated; cut when longer), or "name: message" when line is 0.
 * Does nothing when err is NULL or errlen 0. Returns -1, the loaders'
 * failure code, so a caller can return it directly.
 */
int af_cfg_errorv(char *err, size_t errlen, const char *name, int line, int col, const char *fmt,
                  va_list ap) __attribute__((format(printf, 6, 0)));

/* The same line as a warning through af_warn. */
void af_cfg_warn(const char *name, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Replaces every control character (below 0x20, and 0x7f) of s with '?'. */
void af_cfg_oneline(char *s);

#endif
