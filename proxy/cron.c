/* cron — see cron.h. */
#include "proxy/cron.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "proxy/cronyaml.h"
#include "proxy/module.h"
#include "proxy/server.h"

/* The module a target names ("MODULE" or "VERSION.MODULE"; NULL: the
 * default one), or -1. */
static int target_module(const struct af_server *srv, const char *target)
{
    if (!target)
        return (int)srv->default_index;
    const char *dot = strrchr(target, '.');
    const char *name = dot ? dot + 1 : target;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (strcasecmp(srv->modules[i]->name, name) == 0)
            return (int)i;
    return -1;
}

struct af_selfreq_run *af_cron_start(struct af_selfreq *sr, struct af_server *srv,
                                     const struct af_cron_job *job, af_selfreq_done_fn done,
                                     void *arg, char *err, size_t errlen)
{
    int mi = target_module(srv, job->target);
    if (mi < 0) {
        snprintf(err, errlen, "the job's target \"%s\" names no module appfront serves",
                 job->target);
        return NULL;
    }
    static const struct af_selfreq_header cron_header[] = {{"X-AppEngine-Cron", "true"}};
    struct af_selfreq_run *run = af_selfreq_start(sr, (size_t)mi, "GET", job->url, cron_header, 1,
                                                  NULL, 0, done, arg, err, errlen);
    if (run)
        af_info("cron: running %s on module %s (from the admin console)", job->url,
                srv->modules[mi]->name);
    return run;
}
