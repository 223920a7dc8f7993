#include "proxy/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/watchdog.h"

extern char **environ;

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child_exec(pid_t parent, int out_fd, int err_fd, const char *dir, char *const argv[],
                       char *const envp[]) __attribute__((noreturn));
static void child_exec(pid_t parent, int out_fd, int err_fd, const char *dir, char *const argv[],
                       char *const envp[])
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1); /* appfront died before the line above */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    /* Ignored signals (appfront ignores SIGPIPE) would stay ignored across
     * exec, and the mask is inherited: give the command a clean slate. */
    struct sigaction sa = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (chdir(dir) < 0) {
        static const char m[] = "appfront: cannot enter the app directory\n";
        (void)!write(2, m, sizeof(m) - 1);
        _exit(126);
    }
    execve("/bin/sh", argv, envp);
    static const char m[] = "appfront: cannot run /bin/sh\n";
    (void)!write(2, m, sizeof(m) - 1);
    _exit(127);
}

pid_t af_spawn_shell(const char *dir, const char *command, const char *arg0, char *const envp[],
                     int out_fd, int err_fd)
{
    char *argv[] = {"sh", "-c", (char *)command, (char *)arg0, NULL};
    pid_t parent = getpid();
    af_log_flush(); /* a child must not inherit, and repeat, batched lines */
    pid_t pid = fork();
    if (pid == 0)
        child_exec(parent, out_fd, err_fd, dir, argv, envp ? envp : environ);
    if (pid < 0)
        return -errno;
    setpgid(pid, pid); /* also here, so the group exists before any kill */
    af_watchdog_add(pid);
    return pid;
}
