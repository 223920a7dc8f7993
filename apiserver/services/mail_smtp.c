/*
 * mail_smtp — the SMTP client (RFC 5321) behind mail.Send when appfront
 * is given --smtp_host. It runs on the API I/O thread (apiserver/
 * iothread.c) as deferred work, like urlfetch's fetches: each delivery is
 * a small state machine on that thread's libevent loop, so a slow or
 * silent mail server holds neither the backend nor other calls.
 *
 *   DIALING (dial.c) -> GREETING (220) -> EHLO (250; HELO when the
 *   server does not know EHLO) [-> STARTTLS (220) -> TLS -> EHLO again]
 *   [-> AUTH PLAIN (235) | AUTH LOGIN (334, 334, 235)] -> MAIL FROM (250)
 *   -> RCPT TO (250/251, one per recipient) -> DATA (354) -> the message,
 *   dot-stuffed, "." (250) -> QUIT (221) -> DONE
 *
 * One command is outstanding at a time (no PIPELINING): the messages of a
 * development server gain nothing from saving round trips, and every
 * reply is then the answer to exactly one known command, which is what
 * the error details name.
 *
 * The call's result is decided by the reply to the final ".": 250 is
 * success, anything else (or no reply) an error the app sees. A recipient
 * the server refuses fails the whole Send before DATA, so nobody gets a
 * message the app was told was not sent. QUIT is then sent and its reply
 * awaited for at most a second before the call answers, as dev_appserver
 * (smtplib) does; it changes nothing in the result.
 *
 * Deadline: the whole session, from the service (mail.c): at most
 * MAIL_SMTP_DEADLINE_S and never past the caller's own deadline. If it
 * passes after the message was sent but before the server answered, the
 * detail says the message may have been delivered (RFC 1047's problem;
 * there is no way to know).
 *
 * STARTTLS (RFC 3207) runs TLS as a libevent filter over the plain
 * connection, as urlfetch does through a proxy's tunnel. Decision: the
 * server's certificate is not verified, as dev_appserver's smtplib does
 * not and as opportunistic STARTTLS between mail servers does not: local
 * relays (Mailpit, a test server) have self-signed certificates. TLS here
 * keeps the password and the message from passive listeners, not from a
 * server that pretends to be the relay. Plaintext the server sends after
 * its 220 to STARTTLS and before the handshake is refused (CVE-2011-0411).
 *
 * DONE does not free the session at once: the answer is handed over from a
 * zero-delay event (done_ev), so no callback frees the session while
 * libevent up the stack still uses it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "apiserver/services/dial.h"
#include "apiserver/services/mail.h"
#include "common/log.h"
#include "common/xalloc.h"

/* Longest reply line read (RFC 5321 section 4.5.3.1.5 says 512 octets;
 * real servers send longer EHLO lines) and the most a reply may take. */
#define REPLY_LINE_MAX 2048
#define REPLY_MAX (64u << 10)
/* How long QUIT's reply is awaited once the message was accepted. */
#define QUIT_WAIT_S 1

/* ---- the relay -------------------------------------------------------------- */

/* The name given in EHLO (RFC 5321 section 4.1.1.1 wants this host's
 * domain name): the host name when it is a plain domain, else localhost. */
static char *helo_name(void)
{
    char name[256];
    if (gethostname(name, sizeof(name)) != 0)
        return af_xstrdup("localhost");
    name[sizeof(name) - 1] = '\0';
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            return af_xstrdup("localhost");
    return af_xstrdup(name[0] ? name : "localhost");
}

struct mail_relay *mail_relay_new(const struct af_api_options *opts)
{
    struct mail_relay *r = af_xcalloc(1, sizeof(*r));
    r->host = af_xstrdup(opts->smtp_host);
    r->port = opts->smtp_port > 0 ? opts->smtp_port : 25;
    bool v6 = strchr(r->host, ':') != NULL;
    r->authority = af_xasprintf("%s%s%s:%d", v6 ? "[" : "", r->host, v6 ? "]" : "", r->port);
    r->user = opts->smtp_user && opts->smtp_user[0] ? af_xstrdup(opts->smtp_user) : NULL;
    r->password = af_xstrdup(opts->smtp_password ? opts->smtp_password : "");
    r->allow_tls = opts->smtp_allow_tls;
    r->helo = helo_name();
    if (r->allow_tls) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* see the top of the file */
            r->ssl_ctx = ctx;
        } else {
            af_warn("mail: OpenSSL cannot make a TLS context; STARTTLS will not be used with %s",
                    r->authority);
        }
    }
    atomic_init(&r->inflight, 0);
    atomic_init(&r->refs, 1);
    return r;
}

struct mail_relay *mail_relay_ref(struct mail_relay *r)
{
    if (r)
        atomic_fetch_add(&r->refs, 1);
    return r;
}

void mail_relay_unref(struct mail_relay *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    free(r->host);
    free(r->authority);
    free(r->user);
    if (r->password) {
        /* Not left lying in freed memory. */
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->helo);
    if (r->ssl_ctx)
        SSL_CTX_free(r->ssl_ctx);
    free(r);
}

/* ---- replies and the message ---------------------------------------------- */

long mail_smtp_reply(const char *buf, size_t n, int *code, char *text, size_t textlen)
{
    size_t pos = 0, o = 0;
    int first = -1;
    if (textlen)
        text[0] = '\0';
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t linelen = nl ? (size_t)(nl - (buf + pos)) : n - pos;
        if (linelen > REPLY_LINE_MAX)
            return -1;
        if (!nl)
            return 0;
        const char *line = buf + pos;
        if (linelen > 0 && line[linelen - 1] == '\r')
            linelen--; /* a bare LF is taken too, as lenient clients do */
        if (linelen < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (linelen > 3 && line[3] != ' ' && line[3] != '-'))
            return -1;
        int c = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (first >= 0 && c != first)
            return -1;
        first = c;
        /* The text of the line, after "CCC " or "CCC-". */
        if (textlen && o + 1 < textlen) {
            if (o > 0 && o + 4 < textlen) {
                memcpy(text + o, " / ", 3);
                o += 3;
            }
            for (size_t i = 4; i < linelen && o + 1 < textlen; i++) {
                unsigned char ch = (unsigned char)line[i];
                text[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
            }
            text[o] = '\0';
        }
        pos = (size_t)(nl - buf) + 1;
        if (linelen == 3 || line[3] == ' ') {
            *code = c;
            return (long)pos;
        }
    }
}

bool mail_smtp_has_ext(const char *ehlo_text, const char *kw, const char **params)
{
    /* The first line is the greeting; each later one is "KEYWORD params". */
    size_t kwlen = strlen(kw);
    for (const char *p = strstr(ehlo_text, " / "); p; p = strstr(p, " / ")) {
        p += 3;
        if (strncasecmp(p, kw, kwlen) == 0 && (p[kwlen] == '\0' || p[kwlen] == ' ')) {
            if (params)
                *params = p + kwlen + (p[kwlen] == ' ' ? 1 : 0);
            return true;
        }
    }
    return false;
}

char *mail_smtp_dot_stuff(const char *data, size_t len, size_t *outlen)
{
    size_t dots = data[0] == '.' ? 1 : 0;
    for (size_t i = 0; i + 1 < len; i++)
        dots += data[i] == '\n' && data[i + 1] == '.';
    char *out = af_xmalloc(len + dots + 8);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '.' && (i == 0 || data[i - 1] == '\n'))
            out[o++] = '.';
        out[o++] = data[i];
    }
    if (o < 2 || out[o - 2] != '\r' || out[o - 1] != '\n') {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    *outlen = o + 3;
    return out;
}

/* ---- the session ------------------------------------------------------------- */

enum smtp_state {
    S_DIALING,
    S_GREETING,
    S_EHLO,
    S_HELO,
    S_STARTTLS,
    S_AUTH_PLAIN,
    S_AUTH_LOGIN,
    S_AUTH_LOGIN_USER,
    S_AUTH_LOGIN_PASS,
    S_MAIL,
    S_RCPT,
    S_DATA,
    S_BODY,
    S_QUIT,
    S_DONE,
};

struct mail_session {
    enum smtp_state state;
    struct af_io_call *call;
    struct event_base *base;
    struct mail_relay *relay; /* a reference */
    struct mail_delivery d;
    size_t charged; /* bytes counted in relay->inflight */
    size_t rcpt_i;  /* the recipient of the RCPT in flight */
    bool tls_on;    /* STARTTLS accepted: TLS runs (or is being set up) */
    bool tls_ready; /* its handshake finished */
    bool smtputf8; /* an envelope address needs it */
    char ext[4096]; /* the last EHLO reply's text: the extensions */
    char shown[320]; /* the command awaiting a reply, as details show it */

    struct event *deadline_ev;
    struct event *done_ev;
    struct af_result result; /* what done_ev hands over */
    bool accepted;           /* the server took the message: result is OK */
    char accepted_reply[200];

    struct af_dial *dial; /* DIALING */
    char last_addr[AF_DIAL_ADDR_LEN];
    struct bufferevent *bev;
};

static void session_setcb(struct mail_session *s);

static void conn_release(struct mail_session *s)
{
    af_dial_cancel(s->dial);
    s->dial = NULL;
    if (s->bev)
        bufferevent_free(s->bev); /* closes the socket, frees the SSL */
    s->bev = NULL;
}

static void session_free(struct mail_session *s)
{
    conn_release(s);
    if (s->deadline_ev)
        event_free(s->deadline_ev);
    if (s->done_ev)
        event_free(s->done_ev);
    free(s->result.response);
    free(s->result.detail);
    free(s->d.from);
    for (size_t i = 0; i < s->d.n_rcpt; i++)
        free(s->d.rcpt[i]);
    free(s->d.rcpt);
    free(s->d.data);
    free(s->d.what);
    atomic_fetch_sub(&s->relay->inflight, s->charged);
    mail_relay_unref(s->relay);
    free(s);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct mail_session *s = arg;
    af_io_finish(s->call, &s->result);
    session_free(s);
}

/* Enters DONE: the connection closes now, the answer leaves from done_ev. */
static void session_done(struct mail_session *s)
{
    s->state = S_DONE;
    conn_release(s);
    if (s->deadline_ev)
        event_del(s->deadline_ev);
    event_active(s->done_ev, EV_TIMEOUT, 1);
}

static void session_fail(struct mail_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The app sees INTERNAL_ERROR with "cannot deliver ... through the SMTP
 * server HOST:PORT: " and what went wrong. */
static void session_fail(struct mail_session *s, const char *fmt, ...)
{
    if (s->state == S_DONE)
        return;
    if (s->accepted) {
        /* Only QUIT is left: the message was accepted, and stays so. */
        session_done(s);
        return;
    }
    char why[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    af_warn("mail: %s was not delivered through the SMTP server %s: %s", s->d.what,
            s->relay->authority, why);
    af_result_app_error(&s->result, MAILERR(INTERNAL_ERROR),
                        "cannot deliver the message through the SMTP server %s (--smtp_host): %s",
                        s->relay->authority, why);
    session_done(s);
}

/* Sends one command line; shown is how details name it (never a secret). */
static void send_cmd(struct mail_session *s, enum smtp_state next, const char *shown,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void send_cmd(struct mail_session *s, enum smtp_state next, const char *shown,
                     const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    snprintf(s->shown, sizeof(s->shown), "%s", shown);
    s->state = next;
}

static void send_ehlo(struct mail_session *s)
{
    send_cmd(s, S_EHLO, "EHLO", "EHLO %s", s->relay->helo);
}

static void send_rcpt(struct mail_session *s)
{
    char shown[300];
    snprintf(shown, sizeof(shown), "RCPT TO:<%.256s>", s->d.rcpt[s->rcpt_i]);
    send_cmd(s, S_RCPT, shown, "RCPT TO:<%s>", s->d.rcpt[s->rcpt_i]);
}

static void send_mail_from(struct mail_session *s)
{
    const char *size = NULL;
    if (mail_smtp_has_ext(s->ext, "SIZE", &size)) {
        /* RFC 1870: a server that states a limit refuses more at once. */
        unsigned long long limit = strtoull(size, NULL, 10);
        if (limit > 0 && s->d.len > limit) {
            session_fail(s, "the message is %zu bytes and the server takes at most %llu (its EHLO "
                         "SIZE)",
                         s->d.len, limit);
            return;
        }
    }
    if (s->smtputf8 && !mail_smtp_has_ext(s->ext, "SMTPUTF8", NULL)) {
        session_fail(s, "an address has non-ASCII characters and the server does not offer "
                        "SMTPUTF8 (RFC 6531)");
        return;
    }
    /* SIZE=n (RFC 1870) when the server takes it; SMTPUTF8 (RFC 6531)
     * when an address needs it. */
    char params[64] = "";
    if (mail_smtp_has_ext(s->ext, "SIZE", NULL))
        snprintf(params, sizeof(params), " SIZE=%zu", s->d.len);
    if (s->smtputf8)
        strcat(params, " SMTPUTF8");
    char shown[300];
    snprintf(shown, sizeof(shown), "MAIL FROM:<%.256s>", s->d.from);
    send_cmd(s, S_MAIL, shown, "MAIL FROM:<%s>%s", s->d.from, params);
}

static void encode_base64(const char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
}

/* After EHLO (or HELO), and STARTTLS when it applies: log in if asked to. */
static void after_hello(struct mail_session *s)
{
    struct mail_relay *r = s->relay;
    if (!r->user) {
        send_mail_from(s);
        return;
    }
    const char *mechs = NULL;
    if (!mail_smtp_has_ext(s->ext, "AUTH", &mechs)) {
        session_fail(s, "--smtp_user is given but the server does not offer AUTH%s",
                     !s->tls_on && mail_smtp_has_ext(s->ext, "STARTTLS", NULL)
                         ? " before STARTTLS, and --smtp_allow_tls is off"
                         : "");
        return;
    }
    /* The mechanisms, up to the end of that EHLO line. */
    char list[256];
    size_t n = strcspn(mechs, "/");
    snprintf(list, sizeof(list), "%.*s", (int)n, mechs);
    bool plain = false, login = false;
    for (char *save, *tok = strtok_r(list, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        plain |= strcasecmp(tok, "PLAIN") == 0;
        login |= strcasecmp(tok, "LOGIN") == 0;
    }
    if (plain) {
        /* RFC 4616: authzid (empty) NUL authcid NUL password. */
        size_t ul = strlen(r->user), pl = strlen(r->password);
        char *raw = af_xmalloc(ul + pl + 2);
        raw[0] = '\0';
        memcpy(raw + 1, r->user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, r->password, pl);
        char *enc = af_xmalloc((ul + pl + 2) / 3 * 4 + 8);
        encode_base64(raw, ul + pl + 2, enc);
        send_cmd(s, S_AUTH_PLAIN, "AUTH PLAIN", "AUTH PLAIN %s", enc);
        explicit_bzero(raw, ul + pl + 2);
        explicit_bzero(enc, strlen(enc));
        free(raw);
        free(enc);
    } else if (login) {
        send_cmd(s, S_AUTH_LOGIN, "AUTH LOGIN", "AUTH LOGIN");
    } else {
        session_fail(s, "the server offers AUTH %.*s; appfront logs in with PLAIN or LOGIN only",
                     (int)n, mechs);
    }
}

/* Answers a STARTTLS 220: TLS over the plain connection, then EHLO again
 * (RFC 3207 section 4.2: what was learnt before is forgotten). */
static void start_tls(struct mail_session *s)
{
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        session_fail(s, "the server sent more after its answer to STARTTLS, before TLS began");
        return;
    }
    SSL *ssl = SSL_new(s->relay->ssl_ctx);
    if (!ssl) {
        session_fail(s, "OpenSSL cannot make a TLS session");
        return;
    }
    unsigned char ip[16];
    if (inet_pton(AF_INET, s->relay->host, ip) != 1 && inet_pton(AF_INET6, s->relay->host, ip) != 1)
        SSL_set_tlsext_host_name(ssl, s->relay->host); /* SNI is for names only (RFC 6066) */
    /* The filter owns the plain connection and the SSL from now on. */
    struct bufferevent *plain = s->bev;
    s->bev = af_dial_bev_made(bufferevent_openssl_filter_new(s->base, plain, ssl,
                                                             BUFFEREVENT_SSL_CONNECTING,
                                                             BEV_OPT_CLOSE_ON_FREE),
                              "the TLS connection of a mail delivery");
    s->tls_on = true;
    s->ext[0] = '\0';
    session_setcb(s);
    send_ehlo(s);
}

static void after_greeting(struct mail_session *s, int code, const char *text)
{
    send_ehlo(s);
}

static void after_ehlo(struct mail_session *s, int code, const char *text)
{
    snprintf(s->ext, sizeof(s->ext), "%s", text);
    if (s->relay->allow_tls && s->relay->ssl_ctx && !s->tls_on &&
        mail_smtp_has_ext(s->ext, "STARTTLS", NULL))
        send_cmd(s, S_STARTTLS, "STARTTLS", "STARTTLS");
    else
        after_hello(s);
}

static void after_starttls(struct mail_session *s, int code, const char *text)
{
    start_tls(s);
}

static void after_auth_login(struct mail_session *s, int code, const char *text)
{
    /* RFC 4954 section 4: the server's 334 prompts (base64 "Username:",
     * "Password:") are not read; LOGIN always asks in that order. */
    size_t n = strlen(s->relay->user);
    char *enc = af_xmalloc(n / 3 * 4 + 8);
    encode_base64(s->relay->user, n, enc);
    send_cmd(s, S_AUTH_LOGIN_USER, "AUTH LOGIN (the user name)", "%s", enc);
    free(enc);
}

static void after_auth_login_user(struct mail_session *s, int code, const char *text)
{
    size_t n = strlen(s->relay->password);
    char *enc = af_xmalloc(n / 3 * 4 + 8);
    encode_base64(s->relay->password, n, enc);
    send_cmd(s, S_AUTH_LOGIN_PASS, "AUTH LOGIN (the password)", "%s", enc);
    explicit_bzero(enc, strlen(enc));
    free(enc);
}

static void after_auth(struct mail_session *s, int code, const char *text)
{
    send_mail_from(s);
}

static void after_mail(struct mail_session *s, int code, const char *text)
{
    s->rcpt_i = 0;
    send_rcpt(s);
}

static void after_rcpt(struct mail_session *s, int code, const char *text)
{
    if (++s->rcpt_i < s->d.n_rcpt)
        send_rcpt(s);
    else
        send_cmd(s, S_DATA, "DATA", "DATA");
}

static void free_stuffed(const void *data, size_t len, void *arg)
{
    free((void *)data);
}

static void after_data(struct mail_session *s, int code, const char *text)
{
    size_t n;
    char *stuffed = mail_smtp_dot_stuff(s->d.data, s->d.len, &n);
    free(s->d.data); /* not needed again: keep one copy in memory, not two */
    s->d.data = NULL;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_reference(out, stuffed, n, free_stuffed, NULL);
    snprintf(s->shown, sizeof(s->shown), "the end of the message (\".\")");
    s->state = S_BODY;
}

static void after_body(struct mail_session *s, int code, const char *text)
{
    s->accepted = true;
    snprintf(s->accepted_reply, sizeof(s->accepted_reply), "%d %s", code, text);
    af_info("mail: %s delivered through the SMTP server %s to %zu recipient(s): %s", s->d.what,
            s->relay->authority, s->d.n_rcpt, s->accepted_reply);
    /* The response is base.VoidProto: empty. */
    af_result_ok(&s->result, NULL, 0);
    send_cmd(s, S_QUIT, "QUIT", "QUIT");
    struct timeval tv = {.tv_sec = QUIT_WAIT_S};
    evtimer_add(s->deadline_ev, &tv);
}

static void after_quit(struct mail_session *s, int code, const char *text)
{
    session_done(s);
}

/* What each state waits for: a reply of this class (2: 2xx, 3: 3xx; 0:
 * any), and what to do then. Any other reply fails the session (on_reply),
 * naming the command (s->shown). */
static const struct {
    int cls;
    void (*next)(struct mail_session *s, int code, const char *text);
} steps[] = {
    [S_GREETING] = {2, after_greeting},
    [S_EHLO] = {2, after_ehlo},
    [S_HELO] = {2, after_ehlo},
    [S_STARTTLS] = {2, after_starttls},
    [S_AUTH_PLAIN] = {2, after_auth},
    [S_AUTH_LOGIN] = {3, after_auth_login},
    [S_AUTH_LOGIN_USER] = {3, after_auth_login_user},
    [S_AUTH_LOGIN_PASS] = {2, after_auth},
    [S_MAIL] = {2, after_mail},
    [S_RCPT] = {2, after_rcpt},
    [S_DATA] = {3, after_data},
    [S_BODY] = {2, after_body},
    [S_QUIT] = {0, after_quit},
};

static void on_reply(struct mail_session *s, int code, const char *text)
{
    enum smtp_state st = s->state;
    if (st < S_GREETING || st > S_QUIT) {
        session_fail(s, "the server sent a reply nobody asked for: %d %.200s", code, text);
        return;
    }
    if (steps[st].cls == 0 || code / 100 == steps[st].cls) {
        steps[st].next(s, code, text);
        return;
    }
    if (st == S_EHLO && !s->tls_on && code / 100 == 5) {
        /* RFC 5321 section 3.2: an old server without EHLO. */
        send_cmd(s, S_HELO, "HELO", "HELO %s", s->relay->helo);
        return;
    }
    if (st == S_GREETING)
        session_fail(s, "the server refused the session: %d %.300s", code, text);
    else if (st == S_AUTH_PLAIN || st == S_AUTH_LOGIN_PASS || st == S_AUTH_LOGIN ||
             st == S_AUTH_LOGIN_USER)
        session_fail(s, "the server refused the login as \"%.100s\" (--smtp_user, "
                        "--smtp_password): %d %.300s",
                     s->relay->user, code, text);
    else if (st == S_RCPT)
        session_fail(s, "the server refused the recipient <%.256s>, so the message went to "
                        "nobody: %d %.300s",
                     s->d.rcpt[s->rcpt_i], code, text);
    else
        session_fail(s, "the server answered %s with %d %.300s", s->shown, code, text);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct mail_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (s->bev == bev && s->state != S_DONE) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        size_t look = len < REPLY_MAX ? len : REPLY_MAX;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
        int code;
        char text[1024];
        long used = mail_smtp_reply(buf, look, &code, text, sizeof(text));
        if (used < 0) {
            session_fail(s, "the server's answer to %s is not an SMTP reply: \"%.80s\"", s->shown,
                         text[0] ? text : "(a line without a 3-digit code)");
            return;
        }
        if (used == 0) {
            if (len >= REPLY_MAX)
                session_fail(s, "the server's answer to %s is over %u KiB", s->shown,
                             REPLY_MAX / 1024);
            return;
        }
        if (s->state == S_EHLO || s->state == S_HELO) {
            /* The extensions need the whole reply, not the shown text. */
            char *all = af_xmalloc(sizeof(s->ext));
            mail_smtp_reply(buf, look, &code, all, sizeof(s->ext));
            evbuffer_drain(in, (size_t)used);
            on_reply(s, code, all);
            free(all);
        } else {
            evbuffer_drain(in, (size_t)used);
            on_reply(s, code, text);
        }
    }
}

/* OpenSSL's reason for a TLS failure, or NULL when it gave none. */
static const char *tls_error(struct mail_session *s)
{
    unsigned long e, last = 0;
    while ((e = bufferevent_get_openssl_error(s->bev)) != 0)
        last = e;
    return last ? ERR_reason_error_string(last) : NULL;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct mail_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        s->tls_ready = true; /* the TLS handshake is done; EHLO is already queued */
        return;
    }
    if (s->state == S_QUIT) {
        /* The message was accepted; how the session ends does not matter. */
        session_done(s);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        session_fail(s, "the server (%s) closed the connection while appfront waited for the "
                        "answer to %s%s",
                     s->last_addr, s->state == S_GREETING ? "its greeting" : s->shown,
                     s->state == S_BODY ? " (the message may have been delivered)" : "");
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        int err = EVUTIL_SOCKET_ERROR();
        if (s->tls_on) {
            const char *why = tls_error(s);
            session_fail(s, "TLS with the server (%s) failed %s: %s", s->last_addr,
                         s->tls_ready ? "after the handshake" : "in the handshake after STARTTLS",
                         why ? why : err ? strerror(err) : "the server does not speak TLS");
        } else
            session_fail(s, "the connection to %s failed: %s", s->last_addr,
                         err ? strerror(err) : "unknown error");
    }
}

static void session_setcb(struct mail_session *s)
{
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct mail_session *s = arg;
    if (s->state == S_QUIT) {
        session_done(s); /* QUIT's reply is only waited for a second */
        return;
    }
    const char *doing = s->state == S_GREETING     ? "waiting for its greeting"
                        : s->state != S_DIALING    ? "waiting for the answer to "
                        : af_dial_resolving(s->dial) ? "resolving the host"
                                                     : "connecting";
    bool cmd = s->state > S_GREETING;
    session_fail(s, "no answer within %.3g s (%s%s)%s%s", s->d.deadline_s, doing,
                 cmd ? s->shown : "",
                 s->state == S_BODY ? "; the message may have been delivered" : "",
                 s->state == S_GREETING && s->relay->port == 465
                     ? "; port 465 expects TLS from the start, which appfront does not speak: "
                       "use the submission port 587, where STARTTLS is offered"
                     : "");
}

/* ---- connecting -------------------------------------------------------------- */

/* The dial of session_start ended. */
static void on_dialed(const struct af_dial_result *r, void *arg)
{
    struct mail_session *s = arg;
    s->dial = NULL;
    snprintf(s->last_addr, sizeof(s->last_addr), "%s", r->addr);
    switch (r->stage) {
    case AF_DIAL_CONNECTED:
        /* From here on the bufferevent owns the socket. */
        s->bev = af_dial_bev_made(bufferevent_socket_new(s->base, r->fd, BEV_OPT_CLOSE_ON_FREE),
                                  "the TCP connection of a mail delivery");
        s->state = S_GREETING;
        snprintf(s->shown, sizeof(s->shown), "the greeting");
        session_setcb(s);
        return;
    case AF_DIAL_LOOKUP:
        session_fail(s, "cannot resolve the host \"%s\": %s", s->relay->host,
                     evutil_gai_strerror(r->gai_error));
        return;
    case AF_DIAL_SOCKET:
        session_fail(s, "cannot open a socket: %s", strerror(r->err));
        return;
    case AF_DIAL_CONNECT:
        session_fail(s, "cannot connect (%s): %s; is a mail server running there?", s->last_addr,
                     strerror(r->err));
        return;
    }
}

static void session_start(void *arg, struct af_io_call *call)
{
    struct mail_session *s = arg;
    s->call = call;
    s->base = af_io_base(call);
    s->done_ev = evtimer_new(s->base, on_done, s);
    s->deadline_ev = evtimer_new(s->base, on_deadline, s);
    double whole;
    double frac = modf(s->d.deadline_s, &whole);
    struct timeval tv = {.tv_sec = (time_t)whole, .tv_usec = (suseconds_t)(frac * 1e6)};
    evtimer_add(s->deadline_ev, &tv);

    s->state = S_DIALING;
    s->dial = af_dial_start(s->base, af_io_dns(call), s->relay->host, s->relay->port, 0,
                            on_dialed, s);
}

static void session_cancel(void *arg)
{
    session_free(arg);
}

const struct af_defer_ops mail_session_ops = {
    .what = "mail.Send",
    .start = session_start,
    .cancel = session_cancel,
};

struct mail_session *mail_session_new(struct mail_relay *relay, struct mail_delivery *d)
{
    struct mail_session *s = af_xcalloc(1, sizeof(*s));
    s->relay = mail_relay_ref(relay);
    s->d = *d;
    memset(d, 0, sizeof(*d));
    s->charged = s->d.len;
    atomic_fetch_add(&relay->inflight, s->charged);
    for (size_t i = 0; i <= s->d.n_rcpt && !s->smtputf8; i++) {
        const char *a = i < s->d.n_rcpt ? s->d.rcpt[i] : s->d.from;
        for (const unsigned char *p = (const unsigned char *)a; *p; p++)
            s->smtputf8 |= *p >= 0x80;
    }
    return s;
}
