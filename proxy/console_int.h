/*
 * console_int — what the admin console's page files share (console.c,
 * console_cron.c, console_mail.c): the console's state, the page frame, error pages, forms,
 * and the requests that wait for a request appfront sent its own app.
 * Main thread only.
 */
#ifndef AF_CONSOLE_INT_H
#define AF_CONSOLE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "proxy/console.h"
#include "proxy/selfreq.h"

struct af_server;
struct af_api;
struct pending;
struct af_console_wait;

struct af_console {
    struct af_server *srv;
    struct af_api *api;
    int consumer; /* with the API server's dispatcher; -1: none */
    uint64_t seq;
    struct pending *pending;
    int n_pending;
    char token[33];
    struct af_selfreq *selfreq;      /* sends the app cron jobs, inbound mail */
    struct af_console_wait *waiting; /* requests waiting for what it sent */
    int n_waiting;
};

/* A page: its head, the bar of links, the title as <h1>. */
struct evbuffer *af_console_page_begin(const char *title);

/* Sends b (freed) as an HTML page; the headers keep it from being framed,
 * cached or read as another type, and allow no script. */
void af_console_page_send(struct evhttp_request *req, struct evbuffer *b, int status,
                          const char *reason);

/* An error page whose message (formatted, then escaped) says what was
 * wrong. */
void af_console_error_page(struct evhttp_request *req, int status, const char *reason,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The hidden token field every state-changing form carries. */
void af_console_form_token(const struct af_console *c, struct evbuffer *b);

/* The parameter name of qs (a query or form) into *out (owned); false after
 * answering 400 when it is missing (or empty, unless may_be_empty) or
 * malformed. */
bool af_console_need(struct evhttp_request *req, const char *qs, const char *name, char **out,
                     bool may_be_empty);

/* A request waiting for what appfront sent its app (a cron job, a mail). */
struct af_console_wait {
    struct af_console_wait *next;
    struct af_console *c;
    struct evhttp_request *req;
    struct af_selfreq_run *run;
    char *what;            /* "GET /url": shown with the result */
    const char *back_href; /* the page to go back to, and its link's text */
    const char *back_text;
};

/* A wait for req, or NULL after answering 503 (too many wait). */
struct af_console_wait *af_console_wait_new(struct af_console *c, struct evhttp_request *req,
                                            const char *what, const char *back_href,
                                            const char *back_text);

/* With af_selfreq_start's run: parks w until af_console_wait_done (the
 * run's callback, arg w) answers the page; with NULL, answers 500 with err
 * and frees w. */
void af_console_wait_park(struct af_console_wait *w, struct af_selfreq_run *run, const char *err);
void af_console_wait_done(void *arg, int status, long elapsed_ms);

/* console_cron.c: the cron pages, and the startup check of cron.yaml. */
void af_console_cron_page(struct af_console *c, struct evhttp_request *req, const char *qs);
void af_console_cron_run(struct af_console *c, struct evhttp_request *req, const char *form);
void af_console_cron_check(struct af_console *c);

/* console_mail.c: the inbound mail page, and sending its message. */
void af_console_mail_page(struct af_console *c, struct evhttp_request *req, const char *qs);
void af_console_mail_send(struct af_console *c, struct evhttp_request *req, const char *form);

#endif
