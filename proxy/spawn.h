/*
 * spawn — starting a child command the way every child of appfront starts:
 * `/bin/sh -c COMMAND` in a directory, in a process group of its own (so a
 * stop reaches whatever the command forks), dying with appfront
 * (PR_SET_PDEATHSIG, plus the watchdog for the rest of the group), stdin on
 * /dev/null, default signal dispositions and an empty signal mask.
 */
#ifndef AF_SPAWN_H
#define AF_SPAWN_H

#include <sys/types.h>

/*
 * Runs `/bin/sh -c command [arg0]` in dir (arg0, when not NULL, is the
 * command's $0: a way to pass a path without quoting it into the command)
 * with environment envp (NULL: appfront's own), stdout on out_fd and stderr
 * on err_fd (both stay the caller's to close). The new process group is
 * registered with the watchdog. Returns the pid (= the group id), or -errno
 * when fork fails. All arguments are borrowed.
 */
pid_t af_spawn_shell(const char *dir, const char *command, const char *arg0, char *const envp[],
                     int out_fd, int err_fd);

#endif
