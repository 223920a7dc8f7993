/*
 * log — appfront's log lines on stderr.
 *
 * Every line is formatted in full and written with a single write(2) (or
 * several whole lines in one, see af_log_begin), so lines from the main
 * thread, the API threads and instance output never interleave mid-line. Format: "LEVEL HH:MM:SS.mmm message".
 *
 * The four startup lines of DESIGN.md are not log lines: they are printed
 * bare with af_log_raw() so harnesses can match their exact prefix.
 */
#ifndef AF_LOG_H
#define AF_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum af_log_level {
    AF_LOG_DEBUG,
    AF_LOG_INFO,
    AF_LOG_WARNING,
    AF_LOG_ERROR,
    AF_LOG_CRITICAL,
};

/* Lines below this level are dropped. Default: AF_LOG_INFO. */
void af_log_set_level(enum af_log_level level);
/* Parses "debug", "info", "warning", "error", "critical" (any case).
 * Returns 0 and sets *out, or -1 for an unknown name. */
int af_log_parse_level(const char *name, enum af_log_level *out);
bool af_log_enabled(enum af_log_level level);

void af_log(enum af_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One line, no prefix; a newline is appended. */
void af_log_raw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Batched lines, for the front end's one line per request. af_log_begin()
 * returns where the caller writes at most max bytes of message (after the
 * level and time prefix), or NULL when the level is off or the message is
 * too long for a batch (use af_log then); af_log_commit() ends the line at
 * `end`. Lines wait in this thread's batch until af_log_flush() (the main
 * loop calls it after every turn), a full batch, or any other line logged
 * by the same thread, which flushes first so the order of lines holds.
 */
char *af_log_begin(enum af_log_level level, size_t max);
void af_log_commit(char *end);
void af_log_flush(void);

#define af_debug(...) af_log(AF_LOG_DEBUG, __VA_ARGS__)
#define af_info(...) af_log(AF_LOG_INFO, __VA_ARGS__)
#define af_warn(...) af_log(AF_LOG_WARNING, __VA_ARGS__)
#define af_error(...) af_log(AF_LOG_ERROR, __VA_ARGS__)

#endif
