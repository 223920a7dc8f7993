/*
 * sysinfo — what the front end (main thread, proxy/background.c) tells the
 * system service (backend thread, apiserver/services/system.c) about the
 * app's instances, and the /proc arithmetic the service does with it
 * (docs/services.md, "system").
 *
 * The table is posted (af_api_post, one-way) to system.Instances whenever
 * an instance becomes ready or dies: an array of struct af_sys_instance in
 * the native layout (both ends are the same process). Each post replaces
 * the last one whole.
 */
#ifndef AF_SYSINFO_H
#define AF_SYSINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One running instance: its process group is its pid (proxy/spawn.c). */
struct af_sys_instance {
    int32_t pid;
    int32_t id;      /* the instance's number in its module */
    uint16_t module; /* index in af_api_options.modules */
    uint16_t flags;  /* 0 */
};

/* At most this many instances in a post (AF_API_POST_MAX_BYTES / 12). */
#define AF_SYS_MAX_INSTANCES 1024

/* The production accounting unit: a megacycle is a millionth of a second
 * of a 1.2 GHz x86 CPU, so a CPU-second is 1200 megacycles whatever this
 * machine's clock (docs/services.md, "system"). */
#define AF_SYS_MCYCLES_PER_CPU_SECOND 1200.0

/* What /proc/PID/stat says of one process. */
struct af_proc_stat {
    int pid;
    int pgrp;
    uint64_t cpu_ticks; /* utime + stime + cutime + cstime, in clock ticks */
    uint64_t rss_pages;
    uint64_t start_ticks; /* when it started, in clock ticks since boot */
};

/* Parses the text of /proc/PID/stat (len bytes, not terminated). The
 * command name may hold spaces and parentheses: the fields are counted
 * from the last ')'. Returns false when the text is not such a line. */
bool af_proc_stat_parse(const char *text, size_t len, struct af_proc_stat *out);

#endif
