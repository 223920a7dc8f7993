/*
 * watchdog — guarantees that no instance outlives appfront, even when
 * appfront is killed with SIGKILL.
 *
 * PR_SET_PDEATHSIG only covers the direct child (/bin/sh), not what the
 * entrypoint forks. So at startup, before any thread exists, appfront forks
 * a small watchdog process that holds the read end of a pipe. appfront
 * writes "+PGID\n" for each instance process group it starts and "-PGID\n"
 * when one is reaped. When the pipe reaches EOF — appfront exited in any
 * way — the watchdog SIGKILLs every process group still listed and exits.
 */
#ifndef AF_WATCHDOG_H
#define AF_WATCHDOG_H

#include <sys/types.h>

/* Forks the watchdog. Returns 0 or -errno. Call before starting threads. */
int af_watchdog_start(void);
/* Tells the watchdog about a process group to kill if appfront dies. */
void af_watchdog_add(pid_t pgid);
/* The group was reaped: forget it. */
void af_watchdog_remove(pid_t pgid);
/* The watchdog's pid (it is appfront's child), or 0. */
pid_t af_watchdog_pid(void);

#endif
