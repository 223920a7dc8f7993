/*
 * system — the "system" service: runtime.Stats and runtime.RunInBackground
 * of the Go library (docs/services.md, "system").
 *
 * GetSystemStats reads /proc for the processes of the app's instances. The
 * backend cannot tell which instance made a call: the call carries the API
 * ticket, which names a request, and only the front end (another thread)
 * knows which instance runs it. So the figures cover every instance of the
 * app, from the table the front end posts whenever an instance becomes ready
 * or dies (apiserver/sysinfo.h); with one instance, the usual case in
 * development, they are the caller's. Rates and averages come from the
 * samples this service takes at each call (there is no timer on the
 * backend thread): over the last minute (ten minutes) since the newest
 * sample at least that old, else the oldest one, else since the oldest
 * instance process started.
 *
 * StartBackgroundRequest draws an id, keeps {id, ticket} and asks the main
 * thread to look (af_result.notify_main); the front end takes the list with
 * the internal call BackgroundTake, finds the instance that runs the ticket's
 * request, and sends it GET /_ah/background (proxy/background.c). As in
 * dev_appserver, only modules with manual or basic scaling may: when no
 * module served has either, the call fails with BACKEND_REQUIRED.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "system.pb-c.h"

#include "apiserver/service.h"
#include "apiserver/sysinfo.h"
#include "common/log.h"
#include "common/xalloc.h"

/* Background requests asked for and not yet taken by the front end; more
 * is LIMIT_REACHED (the front end takes them within a loop turn or two). */
#define SYS_MAX_PENDING 256
/* Samples kept for rates and averages: one per call, at most one a second
 * (a burst of calls replaces the newest), so 700 cover ten minutes. */
#define SYS_MAX_SAMPLES 700

struct sample {
    uint64_t t_ns;  /* CLOCK_MONOTONIC */
    double mcycles; /* CPU consumed by the instances then alive */
    double mb;      /* their resident memory */
};

struct pending {
    char id[17];
    char *ticket;
};

struct sys_state {
    bool background_ok; /* some module has manual or basic scaling */
    struct af_sys_instance *inst;
    size_t n_inst;
    struct pending pending[SYS_MAX_PENDING];
    size_t n_pending;
    struct sample samples[SYS_MAX_SAMPLES]; /* ring */
    size_t n_samples, next_sample;
    uint64_t start_ns; /* the oldest instance process's start; 0: not known */
};

/* ---- /proc ------------------------------------------------------------------ */

bool af_proc_stat_parse(const char *text, size_t len, struct af_proc_stat *out)
{
    const char *close = NULL;
    for (size_t i = 0; i < len; i++)
        if (text[i] == ')')
            close = text + i;
    if (!close || len > 4096)
        return false;
    char buf[4200];
    size_t head = (size_t)(close - text);
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    if (end == buf || pid <= 0)
        return false;
    /* Fields after the name, numbered as in proc(5): 3 state, 4 ppid,
     * 5 pgrp, 14 utime, 15 stime, 16 cutime, 17 cstime, 22 starttime,
     * 24 rss. */
    char *p = buf + head + 1;
    unsigned long long f[25] = {0};
    int field = 3;
    while (field <= 24) {
        while (*p == ' ')
            p++;
        if (!*p)
            return false;
        if (field == 3) {
            p++; /* the state letter */
        } else {
            errno = 0;
            long long v = strtoll(p, &end, 10);
            if (end == p)
                return false;
            f[field] = v < 0 ? 0 : (unsigned long long)v;
            p = end;
        }
        field++;
    }
    out->pid = (int)pid;
    out->pgrp = (int)f[5];
    out->cpu_ticks = f[14] + f[15] + f[16] + f[17];
    out->rss_pages = f[24];
    out->start_ticks = f[22];
    return true;
}

static bool in_groups(const struct sys_state *s, int pgrp)
{
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i].pid == pgrp)
            return true;
    return false;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sums CPU and resident memory over every process in the instances'
 * process groups (what the entrypoint's shell forked included), and
 * notes when the oldest of them started (CLOCK_MONOTONIC ns). */
static void measure(struct sys_state *s, double *mcycles, double *mb)
{
    *mcycles = *mb = 0;
    if (s->n_inst == 0)
        return;
    DIR *d = opendir("/proc");
    if (!d) {
        af_warn("system: cannot read /proc: %s", strerror(errno));
        return;
    }
    long hz = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    uint64_t ticks = 0, pages = 0, first = UINT64_MAX;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[64], text[4096];
        snprintf(path, sizeof(path), "/proc/%.20s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* exited meanwhile */
        ssize_t n = read(fd, text, sizeof(text));
        close(fd);
        struct af_proc_stat st;
        if (n <= 0 || !af_proc_stat_parse(text, (size_t)n, &st) || !in_groups(s, st.pgrp))
            continue;
        ticks += st.cpu_ticks;
        pages += st.rss_pages;
        if (st.start_ticks < first)
            first = st.start_ticks;
    }
    closedir(d);
    /* starttime counts from boot: CLOCK_BOOTTIME's origin. */
    struct timespec boot;
    if (first != UINT64_MAX && clock_gettime(CLOCK_BOOTTIME, &boot) == 0) {
        uint64_t boot_ns = (uint64_t)boot.tv_sec * 1000000000u + (uint64_t)boot.tv_nsec;
        uint64_t start_boot_ns = first * (1000000000u / (uint64_t)(hz > 0 ? hz : 100));
        uint64_t age = boot_ns > start_boot_ns ? boot_ns - start_boot_ns : 0;
        uint64_t mono = now_ns();
        s->start_ns = mono > age ? mono - age : 0;
    }
    *mcycles = (double)ticks / (double)(hz > 0 ? hz : 100) * AF_SYS_MCYCLES_PER_CPU_SECOND;
    *mb = (double)pages * (double)(page > 0 ? page : 4096) / (1024.0 * 1024.0);
}

/* ---- samples ------------------------------------------------------------------ */

static const struct sample *sample_at(const struct sys_state *s, size_t age)
{
    /* age 0: the newest */
    return &s->samples[(s->next_sample + SYS_MAX_SAMPLES - 1 - age) % SYS_MAX_SAMPLES];
}

static void sample_add(struct sys_state *s, const struct sample *x)
{
    /* The oldest sample stays: it is the base of the rates until one is a
     * window old. Calls less than a second apart replace the newest. */
    if (s->n_samples > 1 && x->t_ns - sample_at(s, 0)->t_ns < 1000000000u) {
        s->samples[(s->next_sample + SYS_MAX_SAMPLES - 1) % SYS_MAX_SAMPLES] = *x;
        return;
    }
    s->samples[s->next_sample] = *x;
    s->next_sample = (s->next_sample + 1) % SYS_MAX_SAMPLES;
    if (s->n_samples < SYS_MAX_SAMPLES)
        s->n_samples++;
}

/* The rate of CPU use (megacycles a second) and the average memory over the
 * window ending at the newest sample: since the newest sample at least a
 * window old; else since the oldest sample; else, with one sample, since
 * the oldest instance process started (its CPU was 0 then). */
static void window(const struct sys_state *s, uint64_t window_ns, double *rate, double *avg)
{
    const struct sample *now = sample_at(s, 0);
    struct sample start = {.t_ns = s->start_ns, .mcycles = 0};
    const struct sample *base = s->start_ns ? &start : NULL;
    double sum = 0;
    size_t n = 0;
    for (size_t age = 0; age < s->n_samples; age++) {
        const struct sample *x = sample_at(s, age);
        if (age > 0 && (now->t_ns - x->t_ns >= window_ns || age == s->n_samples - 1)) {
            base = x;
            break;
        }
        sum += x->mb;
        n++;
    }
    *avg = n ? sum / (double)n : now->mb;
    *rate = 0;
    if (base && now->t_ns > base->t_ns && now->mcycles > base->mcycles)
        *rate = (now->mcycles - base->mcycles) / ((double)(now->t_ns - base->t_ns) / 1e9);
}

/* ---- methods ------------------------------------------------------------------ */

static void get_system_stats(void *state, const struct af_call *call, struct af_result *res)
{
    struct sys_state *s = state;
    Af__System__GetSystemStatsRequest *req =
        af__system__get_system_stats_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "system: cannot decode GetSystemStatsRequest");
        return;
    }
    af__system__get_system_stats_request__free_unpacked(req, NULL);

    struct sample x = {.t_ns = now_ns()};
    measure(s, &x.mcycles, &x.mb);
    sample_add(s, &x);
    Af__System__SystemStat cpu = AF__SYSTEM__SYSTEM_STAT__INIT;
    Af__System__SystemStat mem = AF__SYSTEM__SYSTEM_STAT__INIT;
    cpu.has_total = true;
    cpu.total = x.mcycles;
    cpu.has_rate1m = cpu.has_rate10m = true;
    mem.has_current = true;
    mem.current = x.mb;
    mem.has_average1m = mem.has_average10m = true;
    window(s, 60ull * 1000000000u, &cpu.rate1m, &mem.average1m);
    window(s, 600ull * 1000000000u, &cpu.rate10m, &mem.average10m);
    Af__System__GetSystemStatsResponse out = AF__SYSTEM__GET_SYSTEM_STATS_RESPONSE__INIT;
    out.cpu = &cpu;
    out.memory = &mem;
    af_result_pack(res, &out.base);
}

static void start_background_request(void *state, const struct af_call *call, struct af_result *res)
{
    struct sys_state *s = state;
    Af__System__StartBackgroundRequestRequest *req =
        af__system__start_background_request_request__unpack(NULL, call->request_len,
                                                             call->request);
    if (!req) {
        af_result_rpc_error(res, AF_RPC_BAD_REQUEST,
                            "system: cannot decode StartBackgroundRequestRequest");
        return;
    }
    af__system__start_background_request_request__free_unpacked(req, NULL);
    if (!s->background_ok) {
        af_result_app_error(res, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__BACKEND_REQUIRED,
                            "system.StartBackgroundRequest: background requests need a module "
                            "with manual_scaling or basic_scaling in app.yaml (no module "
                            "served has either)");
        return;
    }
    if (!call->request_id[0]) {
        af_result_app_error(res, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__BACKEND_REQUIRED,
                            "system.StartBackgroundRequest: the call carries no request id "
                            "(API ticket), so no instance can be chosen; call it while "
                            "handling a request");
        return;
    }
    if (s->n_pending == SYS_MAX_PENDING) {
        af_result_app_error(res, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__LIMIT_REACHED,
                            "system.StartBackgroundRequest: %d background requests wait to be "
                            "sent; try again",
                            SYS_MAX_PENDING);
        return;
    }
    uint64_t r;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = now_ns() ^ ((uint64_t)getpid() << 40);
    struct pending *p = &s->pending[s->n_pending++];
    snprintf(p->id, sizeof(p->id), "%016" PRIx64, r);
    p->ticket = af_xstrdup(call->request_id);

    Af__System__StartBackgroundRequestResponse out =
        AF__SYSTEM__START_BACKGROUND_REQUEST_RESPONSE__INIT;
    out.request_id = p->id;
    af_result_pack(res, &out.base);
    res->notify_main = true; /* the front end takes it (proxy/background.c) */
}

/* Internal: the front end takes every background request asked for. */
static void background_take(void *state, const struct af_call *call, struct af_result *res)
{
    struct sys_state *s = state;
    Af__System__BackgroundStart starts[SYS_MAX_PENDING];
    Af__System__BackgroundStart *ptrs[SYS_MAX_PENDING];
    for (size_t i = 0; i < s->n_pending; i++) {
        af__system__background_start__init(&starts[i]);
        starts[i].background_id = s->pending[i].id;
        starts[i].ticket = s->pending[i].ticket;
        ptrs[i] = &starts[i];
    }
    Af__System__BackgroundTakeResponse out = AF__SYSTEM__BACKGROUND_TAKE_RESPONSE__INIT;
    out.n_start = s->n_pending;
    out.start = ptrs;
    af_result_pack(res, &out.base);
    for (size_t i = 0; i < s->n_pending; i++)
        free(s->pending[i].ticket);
    s->n_pending = 0;
}

/* Internal post: the table of running instances (apiserver/sysinfo.h). */
static void instances(void *state, const struct af_call *call, struct af_result *res)
{
    struct sys_state *s = state;
    size_t n = call->request_len / sizeof(struct af_sys_instance);
    free(s->inst);
    s->inst = n ? af_xmalloc(n * sizeof(*s->inst)) : NULL;
    if (n)
        memcpy(s->inst, call->request, n * sizeof(*s->inst));
    s->n_inst = n;
    /* CPU totals fall when an instance leaves: rates restart. Nothing is
     * measured here (the next call does): this runs at every instance
     * start, when descriptors and time are better left to the app. */
    s->n_samples = s->next_sample = 0;
    s->start_ns = 0;
    af_result_ok(res, NULL, 0);
}

static void *sys_create(const struct af_api_options *opts)
{
    struct sys_state *s = af_xcalloc(1, sizeof(*s));
    for (size_t i = 0; i < opts->n_modules; i++)
        s->background_ok = s->background_ok || opts->modules[i].background;
    return s;
}

static void sys_destroy(void *state)
{
    struct sys_state *s = state;
    for (size_t i = 0; i < s->n_pending; i++)
        free(s->pending[i].ticket);
    free(s->inst);
    free(s);
}

static const struct af_method system_methods[] = {
    {.name = "GetSystemStats", .fn = get_system_stats},
    {.name = "StartBackgroundRequest", .fn = start_background_request},
    {.name = NULL},
};

static const struct af_method system_internal[] = {
    {.name = "BackgroundTake", .fn = background_take},
    {.name = "Instances", .fn = instances},
    {.name = NULL},
};

const struct af_service af_service_system = {
    .name = "system",
    .methods = system_methods,
    .create = sys_create,
    .destroy = sys_destroy,
    .internal = system_internal,
};
