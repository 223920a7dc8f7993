/*
 * console_mail — the admin console's inbound mail page (docs/admin.md,
 * "Inbound mail"): a developer writes a message, and appfront delivers it
 * to the app as App Engine delivers mail to APP@APPID.appspotmail.com:
 * `POST /_ah/mail/TO` with the message in RFC 5322 form as the body
 * (`Content-Type: message/rfc822`), to the default module, trusted like a
 * task (so `login: admin` handlers, which protect /_ah/mail/ in most apps,
 * let it through).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/log.h"
#include "common/mimeword.h"
#include "common/xalloc.h"
#include "proxy/appyaml.h"
#include "proxy/console_int.h"
#include "proxy/html.h"
#include "proxy/server.h"

/* A message's text is at most this (a test message, not an archive). */
#define MAIL_BODY_MAX 4096
/* An address field: a few addresses. */
#define MAIL_ADDR_MAX 500

void af_console_mail_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    const struct af_server *srv = c->srv;
    if (srv->n_modules == 0) {
        af_console_error_page(req, 404, "Not Found", "appfront serves no app to send mail to");
        return;
    }
    struct evbuffer *b = af_console_page_begin("Inbound mail");
    if (!srv->apps[srv->default_index]->inbound_mail)
        evbuffer_add_printf(b, "<p class=\"err\">app.yaml does not list <code>mail</code> in "
                               "<code>inbound_services</code>: App Engine would deliver no "
                               "mail to this app. The form below sends it anyway.</p>\n");
    evbuffer_add_printf(b, "<p>The message is delivered as App Engine delivers mail: "
                           "<code>POST /_ah/mail/TO</code> to the default module, the message "
                           "as the body (<code>message/rfc822</code>), allowed through "
                           "<code>login: admin</code>.</p>\n"
                           "<form method=\"post\" action=\"/mail/send\"><table>"
                           "<tr><th>From</th><td><input name=\"from\" size=\"50\" "
                           "value=\"sender@example.com\"></td></tr>"
                           "<tr><th>To</th><td><input name=\"to\" size=\"50\" value=\"");
    /* The app's own address, as production names it. */
    const char *app = srv->app_id ? srv->app_id : "app";
    evbuffer_add_printf(b, "test@");
    af_html_text(b, app);
    evbuffer_add_printf(b, ".appspotmail.com\"></td></tr>"
                           "<tr><th>Cc</th><td><input name=\"cc\" size=\"50\"></td></tr>"
                           "<tr><th>Subject</th><td><input name=\"subject\" size=\"50\">"
                           "</td></tr><tr><th>Body</th><td><textarea name=\"body\" rows=\"8\" "
                           "cols=\"60\"></textarea></td></tr></table>");
    af_console_form_token(c, b);
    evbuffer_add_printf(b, "<button>Send</button></form>\n");
    af_console_page_send(req, b, 200, "OK");
}

/* From and Cc: printable ASCII, nothing that could end the header line
 * (the message's fields are written as given). */
static bool address_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return false;
    return strlen(s) <= MAIL_ADDR_MAX;
}

/* The subject as a header value (common/mimeword.h); false for one with
 * a line break or a control character, which the form cannot mean. */
static bool put_subject(struct evbuffer *m, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == 0x7f || (*p < 0x20 && *p != '\t'))
            return false;
    char *t = af_mime_header_text(s);
    evbuffer_add(m, t, strlen(t));
    free(t);
    return true;
}

/* The message as App Engine hands it over: header fields, a blank line,
 * the text with CRLF line ends. NULL after answering 400. */
static struct evbuffer *build_message(struct evhttp_request *req, const char *from, const char *to,
                                      const char *cc, const char *subject, const char *body)
{
    struct evbuffer *m = evbuffer_new();
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    unsigned char raw[8] = {0};
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        memset(raw, 0, sizeof(raw));
    evbuffer_add_printf(m, "From: %s\r\nTo: %s\r\n", from, to);
    if (*cc)
        evbuffer_add_printf(m, "Cc: %s\r\n", cc);
    evbuffer_add_printf(m, "Subject: ");
    if (!put_subject(m, subject)) {
        evbuffer_free(m);
        af_console_error_page(req, 400, "Bad Request",
                              "the subject has a line break or a control character");
        return NULL;
    }
    evbuffer_add_printf(m,
                        "\r\nDate: %s\r\nMessage-ID: "
                        "<%02x%02x%02x%02x%02x%02x%02x%02x.%lld@appfront.local>\r\n"
                        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n\r\n",
                        date, raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                        (long long)now);
    /* Any line end (a browser sends CRLF) becomes CRLF. */
    for (const char *p = body; *p; p++) {
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\r' || *p == '\n')
            evbuffer_add(m, "\r\n", 2);
        else
            evbuffer_add(m, p, 1);
    }
    if (*body && body[strlen(body) - 1] != '\n' && body[strlen(body) - 1] != '\r')
        evbuffer_add(m, "\r\n", 2);
    return m;
}

void af_console_mail_send(struct af_console *c, struct evhttp_request *req, const char *form)
{
    char *from = NULL, *to = NULL, *cc = NULL, *subject = NULL, *body = NULL;
    if (c->srv->n_modules == 0) {
        af_console_error_page(req, 404, "Not Found", "appfront serves no app to send mail to");
        return;
    }
    if (!af_console_need(req, form, "from", &from, false) ||
        !af_console_need(req, form, "to", &to, false) ||
        !af_console_need(req, form, "cc", &cc, true) ||
        !af_console_need(req, form, "subject", &subject, true) ||
        !af_console_need(req, form, "body", &body, true))
        goto out;
    /* One recipient: the address is the URL's last segment. */
    if (!strchr(to, '@') || strspn(to, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789-._~@+") != strlen(to) ||
        strlen(to) > MAIL_ADDR_MAX) {
        af_console_error_page(req, 400, "Bad Request",
                              "to must be one address (local@domain: letters, digits and "
                              "-._~+), not '%.100s'",
                              to);
        goto out;
    }
    const char *bad = !address_ok(from) ? "from" : !address_ok(cc) ? "cc" : NULL;
    if (bad) {
        af_console_error_page(req, 400, "Bad Request",
                              "%s must be printable ASCII addresses of at most %d bytes", bad,
                              MAIL_ADDR_MAX);
        goto out;
    }
    if (strlen(body) > MAIL_BODY_MAX) {
        af_console_error_page(req, 413, "Payload Too Large",
                              "the body is %zu bytes; this form sends at most %d", strlen(body),
                              MAIL_BODY_MAX);
        goto out;
    }
    struct evbuffer *m = build_message(req, from, to, cc, subject, body);
    if (!m)
        goto out;
    char url[MAIL_ADDR_MAX + 16], what[MAIL_ADDR_MAX + 32], err[256];
    snprintf(url, sizeof(url), "/_ah/mail/%s", to); /* only path-safe bytes, checked above */
    snprintf(what, sizeof(what), "POST %s", url);
    struct af_console_wait *w = af_console_wait_new(c, req, what, "/mail", "Send another");
    if (w) {
        static const struct af_selfreq_header ctype[] = {{"Content-Type", "message/rfc822"}};
        size_t len = evbuffer_get_length(m);
        struct af_selfreq_run *run =
            c->selfreq ? af_selfreq_start(c->selfreq, c->srv->default_index, "POST", url, ctype, 1,
                                          evbuffer_pullup(m, -1), len, af_console_wait_done, w,
                                          err, sizeof(err))
                       : NULL;
        if (run)
            af_info("mail: delivering a message to %s from the admin console", to);
        af_console_wait_park(w, run, c->selfreq ? err : "the console cannot send to the app");
    }
    evbuffer_free(m);
out:
    free(from);
    free(to);
    free(cc);
    free(subject);
    free(body);
}
