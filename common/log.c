#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Written once at startup (before threads exist), read everywhere after. */
static enum af_log_level min_level = AF_LOG_INFO;

static const char *const level_names[] = {
    [AF_LOG_DEBUG] = "DEBUG",
    [AF_LOG_INFO] = "INFO",
    [AF_LOG_WARNING] = "WARNING",
    [AF_LOG_ERROR] = "ERROR",
    [AF_LOG_CRITICAL] = "CRITICAL",
};

void af_log_set_level(enum af_log_level level)
{
    min_level = level;
}

int af_log_parse_level(const char *name, enum af_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum af_log_level)i;
            return 0;
        }
    }
    return -1;
}

bool af_log_enabled(enum af_log_level level)
{
    return level >= min_level;
}

/* Writes the whole buffer, retrying on short writes; stderr errors are
 * ignored because there is nowhere left to report them. */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void emit(const char *prefix, const char *fmt, va_list ap)
{
    char line[8192];
    size_t off = 0;
    if (prefix)
        off = (size_t)snprintf(line, sizeof(line), "%s", prefix);
    int n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
    if (n < 0)
        return;
    off += (size_t)n;
    if (off > sizeof(line) - 2)
        off = sizeof(line) - 2; /* truncated: keep the newline */
    line[off++] = '\n';
    write_all(line, off);
}

void af_log(enum af_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    struct timeval tv;
    struct tm tm;
    char prefix[48];
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    snprintf(prefix, sizeof(prefix), "%-8s %02d:%02d:%02d.%03d ", level_names[level], tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    va_list ap;
    va_start(ap, fmt);
    emit(prefix, fmt, ap);
    va_end(ap);
}

void af_log_raw(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(NULL, fmt, ap);
    va_end(ap);
}
