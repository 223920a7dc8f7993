/* cronyaml — see cronyaml.h. */
#include "proxy/cronyaml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "common/readfile.h"
#include "common/xalloc.h"
#include "common/yamlwalk.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define CRON_MAX_FILE_BYTES (1024 * 1024)
/* A schedule is a short phrase; production's own limit is 500 bytes. */
#define CRON_MAX_SCHEDULE 500

/* ---- schedules ----------------------------------------------------------- */

static const char *const weekdays[] = {"monday", "tuesday",  "wednesday", "thursday",
                                       "friday", "saturday", "sunday"};
static const char *const months[] = {"january",   "february", "march",    "april",
                                     "may",       "june",     "july",     "august",
                                     "september", "october",  "november", "december"};
static const char *const ordinals[] = {"first", "second", "third", "fourth", "fifth"};
static const char *const ordinal_nums[] = {"1st", "2nd", "3rd", "4th", "5th"};

/* A word of a list: the full name, or its first three letters. */
static bool named(const char *w, size_t n, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if ((n == strlen(names[i]) || n == 3) && strncasecmp(w, names[i], n) == 0)
            return true;
    return false;
}

static bool exact(const char *w, size_t n, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (n == strlen(names[i]) && strncasecmp(w, names[i], n) == 0)
            return true;
    return false;
}

/* A number of at most 4 digits from lo to hi. */
static bool number(const char *w, size_t n, long lo, long hi)
{
    if (n == 0 || n > 4 || strspn(w, "0123456789") < n)
        return false;
    long v = strtol(w, NULL, 10);
    return v >= lo && v <= hi;
}

enum list_kind { L_WEEKDAYS, L_MONTHS, L_ORDINALS, L_MONTHDAYS };

/* Every comma-separated item of the token is of the kind. */
static bool list_of(const char *tok, size_t len, enum list_kind kind)
{
    const char *p = tok, *end = tok + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = (size_t)((comma ? comma : end) - p);
        bool ok = false;
        switch (kind) {
        case L_WEEKDAYS:
            ok = named(p, n, weekdays, N_OF(weekdays));
            break;
        case L_MONTHS:
            ok = named(p, n, months, N_OF(months));
            break;
        case L_ORDINALS:
            ok = exact(p, n, ordinals, N_OF(ordinals)) ||
                 exact(p, n, ordinal_nums, N_OF(ordinal_nums));
            break;
        case L_MONTHDAYS:
            ok = number(p, n, 1, 31);
            break;
        }
        if (!ok)
            return false;
        if (!comma)
            break;
        p = comma + 1;
    }
    return true;
}

/* HH:MM, 00:00 to 23:59. */
static bool clock_time(const char *w, size_t n)
{
    return n == 5 && w[2] == ':' && number(w, 2, 0, 23) && number(w + 3, 2, 0, 59);
}

static bool word_is(const char *w, size_t n, const char *s)
{
    return n == strlen(s) && strncasecmp(w, s, n) == 0;
}

#define MAX_WORDS 8

bool af_cron_schedule_ok(const char *s, char *why, size_t whylen)
{
    const char *w[MAX_WORDS];
    size_t n[MAX_WORDS];
    size_t count = 0;
    if (strlen(s) > CRON_MAX_SCHEDULE) {
        snprintf(why, whylen, "longer than %d bytes", CRON_MAX_SCHEDULE);
        return false;
    }
    for (const char *p = s; *p;) {
        p += strspn(p, " \t");
        if (!*p)
            break;
        size_t len = strcspn(p, " \t");
        if (count == MAX_WORDS) {
            snprintf(why, whylen, "too many words for a schedule");
            return false;
        }
        w[count] = p;
        n[count++] = len;
        p += len;
    }
    if (count == 0) {
        snprintf(why, whylen, "empty");
        return false;
    }
    /* every N hours|minutes|mins [synchronized | from HH:MM to HH:MM] */
    if (count >= 3 && word_is(w[0], n[0], "every") && number(w[1], n[1], 1, 9999) &&
        (word_is(w[2], n[2], "hours") || word_is(w[2], n[2], "hour") ||
         word_is(w[2], n[2], "minutes") || word_is(w[2], n[2], "mins") ||
         word_is(w[2], n[2], "minute") || word_is(w[2], n[2], "min"))) {
        if (count == 3)
            return true;
        if (count == 4 && word_is(w[3], n[3], "synchronized"))
            return true;
        if (count == 7 && word_is(w[3], n[3], "from") && clock_time(w[4], n[4]) &&
            word_is(w[5], n[5], "to") && clock_time(w[6], n[6]))
            return true;
        snprintf(why, whylen,
                 "after \"every N %.*s\" only \"synchronized\" or \"from HH:MM to HH:MM\" may "
                 "follow",
                 (int)n[2], w[2]);
        return false;
    }
    /* (every | ORDINALS) (day | WEEKDAYS) [of (month | MONTHS)] HH:MM
     * MONTHDAYS of (month | MONTHS) HH:MM */
    if (!clock_time(w[count - 1], n[count - 1])) {
        snprintf(why, whylen,
                 "a schedule is \"every N hours|minutes [...]\" or ends with a time of day "
                 "HH:MM (24-hour)");
        return false;
    }
    size_t i = 0;
    if (count >= 4 && list_of(w[0], n[0], L_MONTHDAYS) && word_is(w[1], n[1], "of")) {
        i = 1; /* days of the month, then "of" */
    } else if (count == 3 || count == 5) {
        if (!word_is(w[0], n[0], "every") && !list_of(w[0], n[0], L_ORDINALS)) {
            snprintf(why, whylen,
                     "'%.*s' is not \"every\", ordinals (1st,2nd,... or first,second,...) or "
                     "days of the month",
                     (int)n[0], w[0]);
            return false;
        }
        if (!word_is(w[1], n[1], "day") && !list_of(w[1], n[1], L_WEEKDAYS)) {
            snprintf(why, whylen, "'%.*s' is not \"day\" or weekdays (monday,tue,...)", (int)n[1],
                     w[1]);
            return false;
        }
        if (count == 3)
            return true;
        i = 2;
        if (!word_is(w[i], n[i], "of")) {
            snprintf(why, whylen, "expected \"of\", got '%.*s'", (int)n[i], w[i]);
            return false;
        }
    } else if (count == 4 && word_is(w[1], n[1], "of")) {
        snprintf(why, whylen, "'%.*s' is not days of the month (1,15,...: 1 to 31)", (int)n[0],
                 w[0]);
        return false;
    } else {
        snprintf(why, whylen, "not a schedule production accepts (see the cron.yaml reference)");
        return false;
    }
    /* w[i] is "of"; then the months and the time. */
    if (i + 3 != count) {
        snprintf(why, whylen, "expected \"of MONTHS HH:MM\" at the end");
        return false;
    }
    if (!word_is(w[i + 1], n[i + 1], "month") && !list_of(w[i + 1], n[i + 1], L_MONTHS)) {
        snprintf(why, whylen, "'%.*s' is not \"month\" or months (january,feb,...)", (int)n[i + 1],
                 w[i + 1]);
        return false;
    }
    return true;
}

/* ---- the file ------------------------------------------------------------ */

struct job_parse {
    struct af_cron_job job;
    const yaml_node_t *node;
    const yaml_node_t *schedule_node;
};

static int string_value(struct af_yw *c, const yaml_node_t *v, const char *key, char **slot)
{
    const char *s = af_yw_scalar(v);
    if (!s)
        return af_yw_failf(c, v, "%s: expected a single value, not a list or mapping", key);
    if (strlen(s) != v->data.scalar.length)
        return af_yw_failf(c, v, "%s: a NUL character is not allowed in a value", key);
    free(*slot);
    *slot = af_xstrdup(s);
    return 0;
}

static int p_url(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct job_parse *j = obj;
    if (string_value(c, v, "url", &j->job.url) < 0)
        return -1;
    if (j->job.url[0] != '/' || strpbrk(j->job.url, " \t\r\n"))
        return af_yw_failf(c, v, "url: '%.*s' is not a path starting with '/'", AF_YW_MAX_QUOTE,
                           j->job.url);
    return 0;
}

static int p_schedule(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct job_parse *j = obj;
    j->schedule_node = v;
    if (string_value(c, v, "schedule", &j->job.schedule) < 0)
        return -1;
    char why[160];
    if (!af_cron_schedule_ok(j->job.schedule, why, sizeof(why)))
        return af_yw_failf(c, v, "schedule: '%.*s': %s", AF_YW_MAX_QUOTE, j->job.schedule, why);
    return 0;
}

static int p_description(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return string_value(c, v, "description", &((struct job_parse *)obj)->job.description);
}

static int p_timezone(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return string_value(c, v, "timezone", &((struct job_parse *)obj)->job.timezone);
}

static int p_target(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct job_parse *j = obj;
    if (string_value(c, v, "target", &j->job.target) < 0)
        return -1;
    const char *t = j->job.target;
    if (!t[0] ||
        strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != strlen(t))
        return af_yw_failf(c, v, "target: '%.*s' is not MODULE or VERSION.MODULE", AF_YW_MAX_QUOTE,
                           t);
    return 0;
}

static const struct af_yw_key job_keys[] = {
    {"url", p_url},
    {"schedule", p_schedule},
    {"description", p_description},
    {"timezone", p_timezone},
    {"target", p_target},
    {"retry_parameters", NULL}, /* production's retries; a job run here runs once */
};

static void job_release(struct af_cron_job *j)
{
    free(j->url);
    free(j->schedule);
    free(j->description);
    free(j->timezone);
    free(j->target);
}

static int p_cron(struct af_yw *c, const yaml_node_t *seq, void *obj)
{
    struct af_cron_yaml *cy = obj;
    if (seq->type == YAML_SCALAR_NODE && seq->data.scalar.length == 0)
        return 0; /* "cron:" with nothing */
    if (seq->type != YAML_SEQUENCE_NODE)
        return af_yw_failf(c, seq, "cron: expected a list of jobs ('- url: ...')");
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (cy->n == AF_CRON_MAX_JOBS)
            return af_yw_failf(c, item, "more than %d jobs", AF_CRON_MAX_JOBS);
        struct job_parse j = {.node = item};
        if (af_yw_walk_map(c, item, "a job", job_keys, N_OF(job_keys), &j) < 0) {
            job_release(&j.job);
            return -1;
        }
        if (!j.job.url || !j.job.schedule) {
            job_release(&j.job);
            return af_yw_failf(c, item, "a job needs a url and a schedule");
        }
        cy->jobs = af_xrealloc(cy->jobs, (cy->n + 1) * sizeof(*cy->jobs));
        cy->jobs[cy->n++] = j.job;
    }
    return 0;
}

static const struct af_yw_key top_keys[] = {
    {"cron", p_cron},
};

int af_cron_yaml_parse(const char *name, const char *text, size_t len, struct af_cron_yaml **out,
                       char *err, size_t errlen)
{
    struct af_yw c = {.name = name, .warn = true, .err = err, .errlen = errlen};
    struct af_cron_yaml *cy = af_xcalloc(1, sizeof(*cy));
    yaml_document_t doc;
    int rc = -1;
    err[0] = '\0';
    *out = NULL;
    if (af_yw_load(&c, text, len, &doc) == 0) {
        const yaml_node_t *root = yaml_document_get_root_node(&doc);
        bool empty = !root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0);
        if (empty || af_yw_walk_map(&c, root, "cron.yaml", top_keys, N_OF(top_keys), cy) == 0)
            rc = 0;
        yaml_document_delete(&doc);
    }
    if (rc == 0)
        *out = cy;
    else
        af_cron_yaml_free(cy);
    return rc;
}

int af_cron_yaml_load_dir(const char *dir, struct af_cron_yaml **out, char *err, size_t errlen)
{
    static const char *const names[] = {"cron.yaml", "cron.yml"};
    char *path, *text;
    size_t len;
    *out = NULL;
    int found = af_read_config_in(dir, names, N_OF(names), CRON_MAX_FILE_BYTES, &path, &text,
                                  &len, err, errlen);
    if (found <= 0)
        return found;
    int rc = af_cron_yaml_parse(path, text, len, out, err, errlen);
    free(text);
    if (rc == 0)
        (*out)->path = path;
    else
        free(path);
    return rc;
}

void af_cron_yaml_free(struct af_cron_yaml *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        job_release(&c->jobs[i]);
    free(c->jobs);
    free(c->path);
    free(c);
}
