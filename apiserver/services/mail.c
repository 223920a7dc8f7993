/*
 * mail — the "mail" service: Send and SendToAdmins (docs/services.md).
 *
 * A message is validated the way production validates it, logged as one
 * summary line (and its body with --show_mail_body), and kept in memory
 * (the newest MAIL_MAX_KEPT messages, at most MAIL_MAX_BYTES of them in
 * all) for tests and a future admin page. A development server must not
 * mail real people unless told to, so by default nothing leaves the
 * machine. With --smtp_host, Send delivers: the message is built here
 * (mail_mime.c) and the SMTP session is deferred to the API I/O thread
 * (mail_smtp.c; DESIGN.md: slow I/O must not stall the backend), and the
 * app's call is answered when the server has accepted the message, or
 * with INTERNAL_ERROR saying why it did not. SendToAdmins is never
 * delivered: there are no admins locally (dev_appserver only logs it).
 *
 * What production refuses, and how (MailServiceError):
 *  - a sender or recipient that is not an RFC 5322 address → BAD_REQUEST;
 *  - Send with no To, Cc or Bcc, or a message with neither a text nor an
 *    HTML body → BAD_REQUEST;
 *  - an attachment whose file name has a blocked extension (executables,
 *    scripts) → INVALID_ATTACHMENT_TYPE;
 *  - a header outside the short list apps may set → INVALID_HEADER_NAME;
 *  - a Content-ID not of the form "<...>" → INVALID_CONTENT_ID.
 * Whether the sender is allowed to send (an admin, the signed-in user) is
 * not checked: the development server does not know the app's admins.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sys/random.h>

#include "mail.pb-c.h"

#include "apiserver/backend.h"
#include "apiserver/service.h"
#include "apiserver/services/mail.h"
#include "common/log.h"
#include "common/xalloc.h"

#define MAIL_MAX_KEPT 100
#define MAIL_MAX_BYTES (32u << 20)
/* RFC 5321 section 4.5.3.1: a path (address) is at most 256 octets; a
 * display name on top of that is allowed some room. */
#define MAIL_MAX_ADDRESS 1024
/* Longest subject echoed in the summary line. */
#define MAIL_LOG_SUBJECT 120
/* Most of a body --show_mail_body logs. */
#define MAIL_LOG_BODY 4096
/* An SMTP session takes at most this long, and never longer than the
 * caller waits (its API deadline). */
#define MAIL_SMTP_DEADLINE_S 30.0
/* Messages waiting in SMTP sessions take at most this much memory; a Send
 * beyond it fails at once (32 MiB messages grow by a third in base64). */
#define MAIL_SMTP_MAX_INFLIGHT ((size_t)256 << 20)

/* One kept message: the request exactly as sent, plus what the summary
 * needs without decoding it again. */
struct kept_mail {
    uint8_t *data; /* encoded MailMessage */
    size_t len;
    bool to_admins;
    time_t when;
};

struct mail_state {
    struct kept_mail kept[MAIL_MAX_KEPT];
    size_t head, count;
    size_t bytes;
    unsigned long long sent; /* total accepted, including dropped ones */
    struct mail_relay *relay; /* --smtp_host, or NULL: nothing is delivered */
    bool show_body;           /* --show_mail_body */
    uint64_t id_seed;         /* Message-IDs and boundaries: random, then counted */
};

static void *mail_create(const struct af_api_options *opts)
{
    struct mail_state *st = af_xcalloc(1, sizeof(struct mail_state));
    if (opts && opts->smtp_host && opts->smtp_host[0])
        st->relay = mail_relay_new(opts);
    st->show_body = opts && opts->show_mail_body;
    if (getrandom(&st->id_seed, sizeof(st->id_seed), GRND_NONBLOCK) != sizeof(st->id_seed))
        st->id_seed = (uint64_t)time(NULL) * 2654435761u;
    return st;
}

static void drop_oldest(struct mail_state *st)
{
    struct kept_mail *k = &st->kept[st->head];
    st->bytes -= k->len;
    free(k->data);
    memset(k, 0, sizeof(*k));
    st->head = (st->head + 1) % MAIL_MAX_KEPT;
    st->count--;
}

static void mail_clear(void *state)
{
    struct mail_state *st = state;
    while (st->count > 0)
        drop_oldest(st);
    st->head = 0;
}

static void mail_destroy(void *state)
{
    if (!state)
        return;
    mail_clear(state);
    /* Sessions still delivering hold their own references. */
    mail_relay_unref(((struct mail_state *)state)->relay);
    free(state);
}

/* ---- address syntax (RFC 5322 section 3.4, simplified) ------------------ */

/* atext of RFC 5322 section 3.2.3. */
static bool is_atext(unsigned char c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* local-part as dot-atom or quoted-string. */
static bool valid_local(const char *s, size_t n)
{
    if (n == 0)
        return false;
    if (s[0] == '"') {
        if (n < 2 || s[n - 1] != '"')
            return false;
        for (size_t i = 1; i < n - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\' && i + 1 < n - 1)
                i++;
            else if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
                return false;
        }
        return true;
    }
    if (s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.' ? s[i + 1] == '.' : !is_atext(c))
            return false;
    }
    return true;
}

/* A host name of letters, digits and hyphens in dot-separated labels
 * (RFC 1035 section 2.3.1), or a bracketed address literal. Dotless names
 * ("localhost") are accepted: they are common in development. */
static bool valid_domain(const char *s, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    if (s[0] == '[')
        return n > 2 && s[n - 1] == ']' && memchr(s, ']', n - 1) == NULL;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-' || c >= 0x80) {
            /* Bytes >= 0x80: internationalized names are passed through. */
            if (label == 0 && c == '-')
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && s[n - 1] != '-';
}

static bool valid_addr_spec(const char *s, size_t n)
{
    /* The last '@' splits: a quoted local part may itself contain '@'. */
    const char *at = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '@')
            at = s + i;
    if (!at)
        return false;
    return valid_local(s, (size_t)(at - s)) && valid_domain(at + 1, n - (size_t)(at - s) - 1);
}

/*
 * True for "user@example.com" and "Display Name <user@example.com>" (the
 * name-addr form; the display name may be quoted). Group syntax and
 * comments are not accepted, as production does not accept them either.
 */
static bool valid_address(const char *addr)
{
    size_t n = strnlen(addr, MAIL_MAX_ADDRESS + 1);
    if (n > MAIL_MAX_ADDRESS)
        return false;
    /* Spaces and tabs around it only: a CR or LF would end a header
     * field of the delivered message early (found by fuzz_mail). */
    while (n > 0 && (addr[n - 1] == ' ' || addr[n - 1] == '\t'))
        n--;
    while (n > 0 && (*addr == ' ' || *addr == '\t')) {
        addr++;
        n--;
    }
    if (n == 0)
        return false;
    if (addr[n - 1] != '>')
        return valid_addr_spec(addr, n);
    const char *lt = mail_angle_open(addr, n);
    if (!lt)
        return false;
    for (const char *p = addr; p < lt; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return false;
    return valid_addr_spec(lt + 1, (size_t)(addr + n - 1 - (lt + 1)));
}

/* ---- attachments and headers ------------------------------------------- */

/* File extensions production refuses as attachments: things a mail client
 * might run. */
static const char *const blocked_extensions[] = {
    "ade", "adp", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "ins",
    "isp", "jse", "lib", "mde", "msc", "msp", "mst", "pif", "scr", "sct",
    "shb", "sys", "vb",  "vbe", "vbs", "vxd", "wsc", "wsf", "wsh", NULL,
};

/* Headers an app may add; the rest (From, To, Date, ...) the service
 * writes itself. */
static const char *const allowed_headers[] = {
    "Auto-Submitted", "In-Reply-To", "List-Id",     "List-Unsubscribe", "On-Behalf-Of",
    "References",     "Resent-Date", "Resent-From", "Resent-To",        NULL,
};

static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++)
        if (strcasecmp(list[i], s) == 0)
            return true;
    return false;
}

/* Returns false with the error in res. */
static bool check_attachment(const Af__Mail__MailAttachment *a, struct af_result *res)
{
    const char *dot = strrchr(a->filename, '.');
    if (!a->filename[0] || strchr(a->filename, '/') ||
        (dot && in_list(blocked_extensions, dot + 1))) {
        af_result_app_error(res, MAILERR(INVALID_ATTACHMENT_TYPE),
                            "attachment file name \"%.200s\" is not allowed", a->filename);
        return false;
    }
    if (a->contentid) {
        size_t n = strlen(a->contentid);
        /* RFC 5322 section 3.6.4's msg-id: visible characters between the
         * brackets, none of them brackets (a CR or LF here would end the
         * part's header field early: found by fuzz_mail). */
        bool ok = n >= 3 && a->contentid[0] == '<' && a->contentid[n - 1] == '>';
        for (size_t i = 1; ok && i + 1 < n; i++) {
            unsigned char c = (unsigned char)a->contentid[i];
            ok = c > 0x20 && c < 0x7f && c != '<' && c != '>';
        }
        if (!ok) {
            af_result_app_error(res, MAILERR(INVALID_CONTENT_ID),
                                "attachment Content-ID \"%.200s\" must look like <id> "
                                "(visible characters, no brackets inside)",
                                a->contentid);
            return false;
        }
    }
    return true;
}

/* Returns false with the error in res. */
static bool check_message(const Af__Mail__MailMessage *m, bool to_admins, struct af_result *res)
{
    if (!valid_address(m->sender)) {
        af_result_app_error(res, MAILERR(BAD_REQUEST), "invalid sender address \"%.200s\"",
                            m->sender);
        return false;
    }
    if (m->replyto && m->replyto[0] && !valid_address(m->replyto)) {
        af_result_app_error(res, MAILERR(BAD_REQUEST), "invalid reply-to address \"%.200s\"",
                            m->replyto);
        return false;
    }
    struct {
        const char *field;
        size_t n;
        char **list;
    } rcpt[] = {{"to", m->n_to, m->to}, {"cc", m->n_cc, m->cc}, {"bcc", m->n_bcc, m->bcc}};
    size_t total = 0;
    for (size_t r = 0; r < sizeof(rcpt) / sizeof(rcpt[0]); r++) {
        for (size_t i = 0; i < rcpt[r].n; i++) {
            if (!valid_address(rcpt[r].list[i])) {
                af_result_app_error(res, MAILERR(BAD_REQUEST), "invalid %s address \"%.200s\"",
                                    rcpt[r].field, rcpt[r].list[i]);
                return false;
            }
        }
        total += rcpt[r].n;
    }
    /* SendToAdmins goes to the app's administrators; it needs no list. */
    if (total == 0 && !to_admins) {
        af_result_app_error(res, MAILERR(BAD_REQUEST), "no recipients (To, Cc or Bcc) given");
        return false;
    }
    if (!(m->textbody && m->textbody[0]) && !(m->htmlbody && m->htmlbody[0])) {
        af_result_app_error(res, MAILERR(BAD_REQUEST), "the message has no body (text or HTML)");
        return false;
    }
    for (size_t i = 0; i < m->n_attachment; i++)
        if (!check_attachment(m->attachment[i], res))
            return false;
    for (size_t i = 0; i < m->n_header; i++) {
        if (!in_list(allowed_headers, m->header[i]->name)) {
            af_result_app_error(res, MAILERR(INVALID_HEADER_NAME),
                                "header \"%.200s\" may not be set by an app", m->header[i]->name);
            return false;
        }
    }
    return true;
}

/* The subject as it goes into a log line: control bytes replaced, cut to
 * MAIL_LOG_SUBJECT bytes. */
static void summary_subject(const char *subject, char *out, size_t outlen)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)subject; *p && o + 1 < outlen; p++)
        out[o++] = (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p;
    out[o] = '\0';
}

/* --show_mail_body: the body as log lines, indented, control bytes but
 * newlines and tabs as '?', cut at MAIL_LOG_BODY bytes. */
static void log_body(const char *kind, const char *body)
{
    size_t n = strlen(body);
    size_t shown = n < MAIL_LOG_BODY ? n : MAIL_LOG_BODY;
    char *out = af_xmalloc(shown * 5 + 64);
    size_t o = 0;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c == '\r' && i + 1 < shown && body[i + 1] == '\n')
            continue;
        if (c == '\n' || c == '\r') {
            memcpy(out + o, "\n    ", 5);
            o += 5;
        } else {
            out[o++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
        }
    }
    out[o] = '\0';
    af_info("mail: %s body (%zu bytes%s):\n    %s", kind, n, shown < n ? ", the first shown" : "",
            out);
    free(out);
}

/* The message as the SMTP server gets it, deferred to the I/O thread.
 * Returns false with res set when it cannot be. */
static bool defer_delivery(struct mail_state *st, const Af__Mail__MailMessage *m,
                           const struct af_call *call, const char *subject, struct af_result *res)
{
    size_t waiting = atomic_load(&st->relay->inflight);
    if (waiting > MAIL_SMTP_MAX_INFLIGHT) {
        af_result_app_error(res, MAILERR(INTERNAL_ERROR),
                            "%zu bytes of messages are still being delivered to %s; retry later",
                            waiting, st->relay->authority);
        return false;
    }
    double deadline = MAIL_SMTP_DEADLINE_S;
    if (call->deadline_ns) {
        uint64_t now = af_api_now_ns();
        double left = call->deadline_ns > now ? (double)(call->deadline_ns - now) / 1e9 : 0;
        if (left < deadline)
            deadline = left;
    }
    if (deadline < 0.001) {
        af_result_app_error(res, MAILERR(INTERNAL_ERROR),
                            "the call's deadline passed before the message could be delivered");
        return false;
    }
    struct mail_delivery d = {.deadline_s = deadline};
    size_t n;
    const char *spec = mail_addr_spec(m->sender, &n);
    d.from = af_xstrndup(spec, n);
    d.rcpt = af_xcalloc(m->n_to + m->n_cc + m->n_bcc + 1, sizeof(char *));
    char **lists[] = {m->to, m->cc, m->bcc};
    size_t counts[] = {m->n_to, m->n_cc, m->n_bcc};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            spec = mail_addr_spec(lists[l][i], &n);
            /* One RCPT per mailbox, however often the app named it. */
            bool dup = false;
            for (size_t j = 0; j < d.n_rcpt && !dup; j++)
                dup = strlen(d.rcpt[j]) == n && strncasecmp(d.rcpt[j], spec, n) == 0;
            if (!dup)
                d.rcpt[d.n_rcpt++] = af_xstrndup(spec, n);
        }
    }
    d.data = mail_mime_build(m, (int64_t)time(NULL), st->id_seed++, &d.len);
    d.what = af_xasprintf("\"%s\" from %s", subject, d.from);
    af_result_defer(res, &mail_session_ops, mail_session_new(st->relay, &d));
    return true;
}

static void send_common(struct mail_state *st, const struct af_call *call, bool to_admins,
                        struct af_result *res)
{
    if (call->request_len > MAIL_MAX_BYTES) {
        af_result_app_error(res, MAILERR(BAD_REQUEST),
                            "the message is %zu bytes; appfront keeps messages up to %u bytes",
                            call->request_len, MAIL_MAX_BYTES);
        return;
    }
    Af__Mail__MailMessage *m =
        af__mail__mail_message__unpack(NULL, call->request_len, call->request);
    if (!m) {
        af_result_app_error(res, MAILERR(BAD_REQUEST), "mail: cannot decode MailMessage");
        return;
    }
    if (!check_message(m, to_admins, res))
        goto done;

    char subject[MAIL_LOG_SUBJECT + 1];
    summary_subject(m->subject, subject, sizeof(subject));
    char from[MAIL_LOG_SUBJECT + 1];
    summary_subject(m->sender, from, sizeof(from));
    bool deliver = st->relay && !to_admins;
    char how[300];
    if (deliver)
        snprintf(how, sizeof(how), "delivering through the SMTP server %s",
                 st->relay->authority);
    else if (to_admins)
        snprintf(how, sizeof(how), "not delivered: there are no admins locally; kept in memory");
    else
        snprintf(how, sizeof(how), "not delivered without --smtp_host; kept in memory");
    if (to_admins)
        af_info("mail: to admins from %s: \"%s\" (%zu attachment(s); %s)", from, subject,
                m->n_attachment, how);
    else
        af_info("mail: from %s to %zu recipient(s): \"%s\" (%zu attachment(s); %s)", from,
                m->n_to + m->n_cc + m->n_bcc, subject, m->n_attachment, how);
    if (st->show_body) {
        if (m->textbody && m->textbody[0])
            log_body("text", m->textbody);
        if (m->htmlbody && m->htmlbody[0])
            log_body("HTML", m->htmlbody);
    }
    if (deliver && !defer_delivery(st, m, call, subject, res))
        goto done;

    while (st->count > 0 &&
           (st->count == MAIL_MAX_KEPT || st->bytes + call->request_len > MAIL_MAX_BYTES))
        drop_oldest(st);
    struct kept_mail *k = &st->kept[(st->head + st->count) % MAIL_MAX_KEPT];
    k->data = af_xmalloc(call->request_len);
    memcpy(k->data, call->request, call->request_len);
    k->len = call->request_len;
    k->to_admins = to_admins;
    k->when = time(NULL);
    st->count++;
    st->bytes += k->len;
    st->sent++;
    /* The response is base.VoidProto: empty. A delivery answers later. */
    if (!deliver)
        af_result_ok(res, NULL, 0);
done:
    af__mail__mail_message__free_unpacked(m, NULL);
}

static void mail_send(void *state, const struct af_call *call, struct af_result *res)
{
    send_common(state, call, false, res);
}

static void mail_send_to_admins(void *state, const struct af_call *call, struct af_result *res)
{
    send_common(state, call, true, res);
}

static const struct af_method mail_methods[] = {
    {.name = "Send", .fn = mail_send},
    {.name = "SendToAdmins", .fn = mail_send_to_admins},
    {.name = NULL},
};

const struct af_service af_service_mail = {
    .name = "mail",
    .methods = mail_methods,
    .create = mail_create,
    .clear = mail_clear,
    .destroy = mail_destroy,
};
