#include "proxy/watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"

static int watchdog_fd = -1;
static pid_t watchdog_pid;

/* The watchdog's whole life: a set of process groups, updated from the
 * pipe, killed on EOF. It uses only read/kill/_exit. */
static void watchdog_main(int fd) __attribute__((noreturn));
static void watchdog_main(int fd)
{
    enum { MAX_GROUPS = 4096 };
    static pid_t groups[MAX_GROUPS];
    int n = 0;
    char line[32];
    size_t len = 0;
    /* Not interrupted by the terminal's ^C meant for appfront: appfront
     * stops its instances itself; this process only covers its death. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (c != '\n') {
            if (len < sizeof(line) - 1)
                line[len++] = c;
            continue;
        }
        line[len] = '\0';
        len = 0;
        pid_t pg = (pid_t)atol(line + 1);
        if (pg <= 1)
            continue;
        if (line[0] == '+' && n < MAX_GROUPS) {
            groups[n++] = pg;
        } else if (line[0] == '-') {
            for (int i = 0; i < n; i++)
                if (groups[i] == pg) {
                    groups[i] = groups[--n];
                    break;
                }
        }
    }
    for (int i = 0; i < n; i++)
        kill(-groups[i], SIGKILL);
    _exit(0);
}

int af_watchdog_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    af_log_flush(); /* a child must not inherit, and repeat, batched lines */
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return -e;
    }
    if (pid == 0) {
        close(p[1]);
        /* Keep no other descriptor of appfront's open (listeners, logs). */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != p[0])
                close(fd);
        setsid(); /* out of the terminal's process group */
        watchdog_main(p[0]);
    }
    close(p[0]);
    watchdog_fd = p[1];
    watchdog_pid = pid;
    return 0;
}

static void send_line(char op, pid_t pgid)
{
    if (watchdog_fd < 0)
        return;
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%c%d\n", op, (int)pgid);
    /* A short pipe write of < PIPE_BUF bytes is atomic; the watchdog reads
     * constantly, so this never blocks for long. */
    if (write(watchdog_fd, buf, (size_t)n) != n)
        af_warn("watchdog: could not record process group %d: %s", (int)pgid, strerror(errno));
}

void af_watchdog_add(pid_t pgid)
{
    send_line('+', pgid);
}

void af_watchdog_remove(pid_t pgid)
{
    send_line('-', pgid);
}

pid_t af_watchdog_pid(void)
{
    return watchdog_pid;
}
