/*
 * starttime — time from exec to a startup line on stderr.
 *
 *   starttime RUNS PREFIX -- COMMAND [ARGS...]
 *
 * RUNS times: spawns COMMAND (posix_spawn, stderr on a pipe), reads its
 * stderr until a line starts with PREFIX, notes the time since the instant
 * just before the spawn, then sends SIGTERM and waits for the exit (SIGKILL
 * after 10 s). Each run is bounded by 10 s. Prints one JSON object with the
 * samples in milliseconds and min/median/max.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Returns ms to the line, or -1. */
static double one_run(const char *prefix, char **cmd)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    pid_t pid;
    double t0 = now_ms();
    int rc = posix_spawn(&pid, cmd[0], &fa, NULL, cmd, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "starttime: cannot run %s: %s\n", cmd[0], strerror(rc));
        close(fds[0]);
        return -1;
    }
    char buf[8192];
    size_t len = 0, plen = strlen(prefix);
    double found = -1;
    while (found < 0 && now_ms() - t0 < 10000) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(fds[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        double t = now_ms();
        len += (size_t)n;
        buf[len] = '\0';
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            if (strncmp(line, prefix, plen) == 0) {
                found = t - t0;
                break;
            }
            line = nl + 1;
        }
        memmove(buf, line, len - (size_t)(line - buf) + 1);
        len -= (size_t)(line - buf);
        if (len == sizeof(buf) - 1)
            len = 0;
    }
    kill(pid, SIGTERM);
    double t_kill = now_ms();
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR))
            break;
        if (now_ms() - t_kill > 10000)
            kill(pid, SIGKILL);
        /* Keep draining stderr so the child never blocks on a full pipe. */
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (poll(&p, 1, 5) > 0 && read(fds[0], buf, sizeof(buf)) <= 0)
            usleep(1000);
    }
    close(fds[0]);
    if (found < 0)
        fprintf(stderr, "starttime: no line starting with \"%s\" within 10 s\n", prefix);
    return found;
}

int main(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: starttime RUNS PREFIX -- COMMAND [ARGS...]\n");
        return 2;
    }
    int runs = atoi(argv[1]);
    if (runs < 1 || runs > 1000)
        return 2;
    double *ms = calloc((size_t)runs, sizeof(double));
    int ok = 0;
    for (int i = 0; i < runs; i++) {
        double t = one_run(argv[2], argv + 4);
        if (t >= 0)
            ms[ok++] = t;
    }
    if (!ok)
        return 1;
    printf("{\"runs\": %d, \"failed\": %d, \"samples_ms\": [", ok, runs - ok);
    for (int i = 0; i < ok; i++)
        printf("%s%.3f", i ? ", " : "", ms[i]);
    qsort(ms, (size_t)ok, sizeof(double), cmp_d);
    printf("], \"min_ms\": %.3f, \"median_ms\": %.3f, \"max_ms\": %.3f}\n", ms[0], ms[ok / 2],
           ms[ok - 1]);
    return 0;
}
