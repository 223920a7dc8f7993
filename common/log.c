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

/* This thread's batched lines (af_log_begin). */
#define BATCH_SIZE 16384
static __thread char batch[BATCH_SIZE];
static __thread size_t batch_len;

void af_log_flush(void)
{
    if (batch_len == 0)
        return;
    write_all(batch, batch_len);
    batch_len = 0;
}

/* "LEVEL    HH:MM:SS.mmm " at p; localtime_r runs once a second. */
#define PREFIX_LEN 22
static char *put_prefix(char *p, enum af_log_level level)
{
    static __thread time_t cached_sec = -1;
    static __thread char hms[9];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        int f[3] = {tm.tm_hour, tm.tm_min, tm.tm_sec};
        for (int i = 0; i < 3; i++) {
            hms[i * 3] = (char)('0' + f[i] / 10 % 10);
            hms[i * 3 + 1] = (char)('0' + f[i] % 10);
            if (i < 2)
                hms[i * 3 + 2] = ':';
        }
        cached_sec = tv.tv_sec;
    }
    const char *name = level_names[level];
    size_t n = strlen(name);
    memcpy(p, name, n);
    memset(p + n, ' ', 9 - n);
    p += 9;
    memcpy(p, hms, 8);
    p += 8;
    int ms = (int)(tv.tv_usec / 1000);
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = ' ';
    return p;
}

char *af_log_begin(enum af_log_level level, size_t max)
{
    if (level < min_level || max + PREFIX_LEN + 1 > BATCH_SIZE)
        return NULL;
    if (batch_len + PREFIX_LEN + max + 1 > BATCH_SIZE)
        af_log_flush();
    return put_prefix(batch + batch_len, level);
}

void af_log_commit(char *end)
{
    *end++ = '\n';
    batch_len = (size_t)(end - batch);
}

static void emit(const char *prefix, const char *fmt, va_list ap)
{
    af_log_flush(); /* this thread's earlier lines first */
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
    char prefix[PREFIX_LEN + 1];
    *put_prefix(prefix, level) = '\0';
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
