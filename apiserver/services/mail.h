/*
 * mail — what the parts of the "mail" service share (prefix mail_):
 *
 *   mail.c       the service: Send and SendToAdmins checked on the backend
 *                thread; with an SMTP server configured, Send is deferred
 *                to the API I/O thread
 *   mail_mime.c  the RFC 5322 / MIME message built from a MailMessage
 *   mail_smtp.c  the SMTP client (RFC 5321) that runs on the I/O thread
 *
 * Internal to apiserver/services/.
 */
#ifndef AF_MAIL_H
#define AF_MAIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mail.pb-c.h"

#include "apiserver/service.h"

#define MAILERR(name) AF__MAIL__MAIL_SERVICE_ERROR__ERROR_CODE__##name

/* ---- mail_mime.c ---- */

/* The addr-spec ("user@example.com") inside an address the service
 * accepted ("Name <user@example.com>" or the bare form): a pointer into
 * addr and its length in *len. */
const char *mail_addr_spec(const char *addr, size_t *len);

/* In "Name <spec>" (n bytes, ending with '>'), the '<' that opens the spec:
 * the last one outside double quotes (a backslash escapes a quote), or
 * NULL. */
const char *mail_angle_open(const char *addr, size_t n);

/*
 * The message as it goes over SMTP's DATA (before dot-stuffing): header
 * fields (From, To, Cc, Reply-To, Subject, Date, Message-ID, MIME-Version,
 * the app's extra headers), then the content: the text and HTML bodies as
 * quoted-printable parts (multipart/alternative when both), attachments
 * with a Content-ID inline in multipart/related, the other attachments in
 * multipart/mixed, each base64. Every line ends in CRLF and, apart from
 * addr-specs with non-ASCII bytes (which only an SMTPUTF8 server takes),
 * the message is 7-bit. Bcc never appears. now is the Date; id_seed makes
 * the Message-ID and the boundaries unique. Returns a malloc'd buffer
 * (owned by the caller) of *len bytes.
 */
char *mail_mime_build(const Af__Mail__MailMessage *m, int64_t now, uint64_t id_seed, size_t *len);

/* ---- mail_smtp.c ---- */

/*
 * Where and how to deliver: immutable once made, shared by reference
 * between the service (backend thread) and the sessions in progress (I/O
 * thread), so it outlives whichever stops last.
 */
struct mail_relay {
    char *host; /* as given: a name or an address */
    int port;
    char *authority; /* host:port, for messages */
    char *user;      /* NULL: no AUTH */
    char *password;  /* "" when not given */
    bool allow_tls;  /* STARTTLS when the server offers it */
    char *helo;      /* the name this side gives in EHLO */
    struct ssl_ctx_st *ssl_ctx; /* NULL: TLS unavailable (STARTTLS is then not used) */
    /* Bytes of messages waiting in sessions, bounded by the service
     * (MAIL_SMTP_MAX_INFLIGHT) before it makes another one. */
    atomic_size_t inflight;
    atomic_int refs;
};

/* A relay with one reference, from the API options (strings copied). */
struct mail_relay *mail_relay_new(const struct af_api_options *opts);
struct mail_relay *mail_relay_ref(struct mail_relay *r);
/* Drops a reference; the last frees. NULL is fine. Thread-safe. */
void mail_relay_unref(struct mail_relay *r);

/* What one delivery needs; everything owned by the session once made. */
struct mail_delivery {
    char *from;   /* envelope sender (addr-spec) */
    char **rcpt;  /* envelope recipients (addr-specs): To, Cc and Bcc */
    size_t n_rcpt;
    char *data;   /* the message (mail_mime_build), not yet dot-stuffed */
    size_t len;
    char *what;   /* for log lines: "\"Subject\" from X" */
    double deadline_s; /* the whole session, > 0 */
};

/* Takes everything d holds (d is zeroed) and a reference to relay. */
struct mail_session *mail_session_new(struct mail_relay *relay, struct mail_delivery *d);
extern const struct af_defer_ops mail_session_ops;

/*
 * One SMTP reply (RFC 5321 section 4.2): lines "CCC-text" then "CCC text"
 * (or a bare "CCC"). Looks at the n bytes at buf: returns the length of a
 * complete reply and sets *code and, in text (textlen bytes, NUL-ended),
 * its lines joined by " / " with control bytes as '?'; 0 when the reply
 * is not complete yet; -1 when it is not SMTP (a line without a 3-digit
 * code, codes that differ between lines, a line over 2048 bytes).
 */
long mail_smtp_reply(const char *buf, size_t n, int *code, char *text, size_t textlen);

/* Whether an EHLO reply's text (as mail_smtp_reply joins it) lists the
 * extension kw (case-insensitive); *params, when given, points at its
 * parameters (up to the next " / "). */
bool mail_smtp_has_ext(const char *ehlo_text, const char *kw, const char **params);

/* The message with every line that starts with '.' given another one
 * (RFC 5321 section 4.5.2), ending in CRLF "." CRLF; malloc'd, *outlen
 * bytes. A message that does not end in CRLF gets one first. */
char *mail_smtp_dot_stuff(const char *data, size_t len, size_t *outlen);

#endif
