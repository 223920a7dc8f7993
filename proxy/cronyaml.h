/*
 * cronyaml — the app's cron.yaml (docs/admin.md, "Cron jobs").
 *
 * A development server does not run cron jobs on their schedule (neither
 * did dev_appserver): a developer runs one from the admin console when she
 * wants to see it work. So the file is only read: at startup, and a bad
 * file is a warning naming FILE:LINE:COLUMN (the app still runs, the
 * console's cron page shows the error), since nothing here depends on it.
 * Schedules are checked against production's grammar, so a schedule that
 * deploying would refuse is found on the developer's machine.
 */
#ifndef AF_CRONYAML_H
#define AF_CRONYAML_H

#include <stdbool.h>
#include <stddef.h>

/* Production refuses more jobs than this per app (cron.yaml reference is
 * 250 on paid apps); a file far beyond is not a cron file. */
#define AF_CRON_MAX_JOBS 1000

struct af_cron_job {
    char *url;         /* starts with '/' */
    char *schedule;    /* as written */
    char *description; /* NULL when absent */
    char *timezone;    /* NULL when absent (UTC) */
    char *target;      /* "MODULE" or "VERSION.MODULE"; NULL: the default module */
};

struct af_cron_yaml {
    struct af_cron_job *jobs;
    size_t n;
    char *path; /* the file read; NULL when there was none */
};

/* Parses cron.yaml text; name is used in messages. Returns 0 with *out set
 * (free with af_cron_yaml_free), or -1 with one line
 * "NAME:LINE:COLUMN: what is wrong" in err. An empty file has no jobs. */
int af_cron_yaml_parse(const char *name, const char *text, size_t len, struct af_cron_yaml **out,
                       char *err, size_t errlen);

/* Loads DIR/cron.yaml (or cron.yml). No file: 0 with *out NULL. */
int af_cron_yaml_load_dir(const char *dir, struct af_cron_yaml **out, char *err, size_t errlen);

void af_cron_yaml_free(struct af_cron_yaml *c);

/* Whether s is a schedule production accepts ("every 5 minutes", "every
 * monday 09:00", "1st,3rd tue of jan,jul 17:30", "every 2 hours from 08:00
 * to 18:00", "every 30 mins synchronized"). On false, why says what is
 * wrong. */
bool af_cron_schedule_ok(const char *s, char *why, size_t whylen);

#endif
