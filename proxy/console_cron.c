/*
 * console_cron — the admin console's cron pages (docs/admin.md, "Cron
 * jobs"): cron.yaml's jobs, and running one now.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/console_int.h"
#include "proxy/cron.h"
#include "proxy/cronyaml.h"
#include "proxy/html.h"
#include "proxy/server.h"

/* The default module's cron.yaml, read again for every page (a developer
 * edits it while appfront runs): 0 with *out (NULL when there is none), or
 * -1 after answering with the file's error. */
static int cron_load(struct af_console *c, struct evhttp_request *req, struct af_cron_yaml **out)
{
    *out = NULL;
    if (c->srv->n_modules == 0) {
        af_console_error_page(req, 404, "Not Found",
                              "appfront serves no app, so there are no cron jobs");
        return -1;
    }
    char err[512];
    if (af_cron_yaml_load_dir(c->srv->apps[c->srv->default_index]->dir, out, err, sizeof(err)) <
        0) {
        af_console_error_page(req, 500, "Internal Server Error", "%s", err);
        return -1;
    }
    return 0;
}

void af_console_cron_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    struct af_cron_yaml *cy;
    if (cron_load(c, req, &cy) < 0)
        return;
    struct evbuffer *b = af_console_page_begin("Cron jobs");
    if (!cy || cy->n == 0) {
        evbuffer_add_printf(b, "<p>%s</p>\n",
                            cy ? "cron.yaml lists no jobs." : "The app has no cron.yaml.");
        af_cron_yaml_free(cy);
        af_console_page_send(req, b, 200, "OK");
        return;
    }
    evbuffer_add_printf(b, "<p>From <code>");
    af_html_text(b, cy->path);
    evbuffer_add_printf(b, "</code>. appfront does not run jobs on their schedule (nor did "
                           "dev_appserver): run one here to try it. It is sent as App "
                           "Engine sends it, <code>GET</code> with "
                           "<code>X-AppEngine-Cron: true</code>, allowed through "
                           "<code>login: admin</code>.</p>\n<table><tr><th>URL</th>"
                           "<th>Schedule</th><th>Target</th><th>Description</th><th></th></tr>\n");
    for (size_t i = 0; i < cy->n; i++) {
        const struct af_cron_job *j = &cy->jobs[i];
        evbuffer_add_printf(b, "<tr><td><code>");
        af_html_text(b, j->url);
        evbuffer_add_printf(b, "</code></td><td>");
        af_html_text(b, j->schedule);
        if (j->timezone) {
            evbuffer_add_printf(b, " <span class=\"t\">(");
            af_html_text(b, j->timezone);
            evbuffer_add_printf(b, ")</span>");
        }
        evbuffer_add_printf(b, "</td><td>");
        af_html_text(b, j->target ? j->target : "default");
        evbuffer_add_printf(b, "</td><td>");
        af_html_text(b, j->description ? j->description : "");
        evbuffer_add_printf(b, "</td><td><form class=\"inline\" method=\"post\" "
                               "action=\"/cron/run\">");
        af_console_form_token(c, b);
        evbuffer_add_printf(b,
                            "<input type=\"hidden\" name=\"job\" value=\"%zu\">"
                            "<input type=\"hidden\" name=\"url\" value=\"",
                            i);
        af_html_text(b, j->url);
        evbuffer_add_printf(b, "\"><button>Run now</button></form></td></tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
    af_cron_yaml_free(cy);
    af_console_page_send(req, b, 200, "OK");
}

void af_console_cron_run(struct af_console *c, struct evhttp_request *req, const char *form)
{
    char *job = NULL, *url = NULL;
    if (!af_console_need(req, form, "job", &job, false) ||
        !af_console_need(req, form, "url", &url, false)) {
        free(job);
        return;
    }
    struct af_cron_yaml *cy = NULL;
    char *end = NULL;
    unsigned long i = strtoul(job, &end, 10);
    if (!*job || *end || job[0] == '-') {
        af_console_error_page(req, 400, "Bad Request", "job '%s' is not a job's number", job);
    } else if (cron_load(c, req, &cy) == 0) {
        if (!cy || i >= cy->n || strcmp(cy->jobs[i].url, url) != 0) {
            af_console_error_page(
                req, 409, "Conflict",
                "cron.yaml has no job %lu with the URL %s any more (the file changed): "
                "reload the cron page",
                i, url);
        } else {
            char what[512], err[256];
            snprintf(what, sizeof(what), "GET %s", url);
            struct af_console_wait *w =
                af_console_wait_new(c, req, what, "/cron", "Back to the cron jobs");
            if (w) {
                struct af_selfreq_run *run =
                    c->selfreq ? af_cron_start(c->selfreq, c->srv, &cy->jobs[i],
                                               af_console_wait_done, w, err, sizeof(err))
                               : NULL;
                af_console_wait_park(w, run, c->selfreq ? err : "the console cannot run cron jobs");
            }
        }
    }
    af_cron_yaml_free(cy);
    free(job);
    free(url);
}

void af_console_cron_check(struct af_console *c)
{
    /* Said once at startup; the cron page reads the file again. */
    struct af_cron_yaml *cy = NULL;
    char err[512];
    if (af_cron_yaml_load_dir(c->srv->apps[c->srv->default_index]->dir, &cy, err, sizeof(err)) < 0)
        af_warn("%s (the app runs; its cron jobs are listed in the admin console)", err);
    af_cron_yaml_free(cy);
}
