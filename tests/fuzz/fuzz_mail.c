/*
 * fuzz_mail — the parsers and builders of mail delivery under libFuzzer:
 * Send and SendToAdmins on a service with an SMTP server configured
 * (apiserver/services/mail.c: decoding, validation, the envelope, the
 * message of mail_mime.c), and the SMTP reply parser, the EHLO extension
 * lookup and dot-stuffing of mail_smtp.c, fed with the same bytes.
 *
 * Input: an encoded MailMessage, which is also read as what an SMTP server
 * sent.
 *
 * Invariants: no memory error, leak or undefined behaviour; Send either
 * refuses with a detail or defers a session, whose message has CRLF line
 * ends only and a header section where every line is one of the fields
 * the service writes or a folded continuation (an app's bytes never add a
 * header), and which is cancelled without leaking; a reply is refused,
 * incomplete, or a length within the input with a code from 200 to 599
 * and a text without control bytes; dot-stuffed data ends in CRLF "." CRLF
 * and, unstuffed, gives the data back.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/mail.c"
#include "apiserver/services/mail_smtp.c"
#include "common/log.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_mail: invariant violated: %s [%.300s]\n", what, detail ? detail : "");
    abort();
}

static struct mail_state *state;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    struct af_api_options o = {.smtp_host = "127.0.0.1", .smtp_port = 2525,
                               .smtp_user = "user", .smtp_password = "pw",
                               .smtp_allow_tls = true, .show_mail_body = true};
    state = af_service_mail.create(&o);
    return 0;
}

/* The header fields the service writes (mail_mime.c), and those apps may. */
static bool known_field(const char *line, size_t n)
{
    static const char *const names[] = {
        "From",        "To",          "Cc",         "Reply-To",         "Subject",
        "Date",        "Message-ID",  "MIME-Version", "Content-Type",   "Auto-Submitted",
        "In-Reply-To", "List-Id",     "List-Unsubscribe", "On-Behalf-Of", "References",
        "Resent-Date", "Resent-From", "Resent-To",  "Content-Transfer-Encoding",
    };
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return false;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == (size_t)(colon - line) &&
            strncasecmp(names[i], line, (size_t)(colon - line)) == 0)
            return true;
    return false;
}

static void check_built(const char *msg, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r'))
            die("a bare LF in the message", msg);
        if (msg[i] == '\r' && (i + 1 >= len || msg[i + 1] != '\n'))
            die("a bare CR in the message", msg);
    }
    const char *end = strstr(msg, "\r\n\r\n");
    if (!end)
        die("no end of the header section", msg);
    for (const char *line = msg; line < end + 2;) {
        const char *eol = strstr(line, "\r\n");
        size_t n = (size_t)(eol - line);
        if (!(n > 0 && (line[0] == ' ' || line[0] == '\t')) && !known_field(line, n))
            die("a header line the service does not write", line);
        line = eol + 2;
    }
}

static void fuzz_send(const uint8_t *data, size_t size, const char *method)
{
    struct af_call c = {.service = "mail", .method = method, .request = data,
                        .request_len = size, .request_id = ""};
    struct af_result res = {0};
    const struct af_method *m = af_service_mail.methods;
    while (strcmp(m->name, method) != 0)
        m++;
    m->fn(state, &c, &res);
    if (res.kind == AF_RESULT_DEFER) {
        struct mail_session *s = res.defer_arg;
        if (s->d.n_rcpt == 0)
            die("a delivery to nobody", s->d.what);
        check_built(s->d.data, s->d.len);
        res.defer_ops->cancel(res.defer_arg);
    } else if (res.kind == AF_RESULT_APP_ERROR && (!res.detail || !res.detail[0])) {
        die("a refusal without a detail", method);
    }
    free(res.detail);
    free(res.response);
}

static void fuzz_reply(const uint8_t *data, size_t size)
{
    int code = 0;
    char text[256];
    long n = mail_smtp_reply((const char *)data, size, &code, text, sizeof(text));
    if (n < -1 || n > (long)size)
        die("a reply length outside the input", NULL);
    if (n > 0) {
        if (code < 200 || code > 599)
            die("a reply code out of range", text);
        for (const char *p = text; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                die("a control byte in a reply's text", text);
        mail_smtp_has_ext(text, "AUTH", NULL);
    }
}

static void fuzz_dot_stuff(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    size_t n;
    char *out = mail_smtp_dot_stuff((const char *)data, size, &n);
    if (n < 5 || memcmp(out + n - 5, "\r\n.\r\n", 5) != 0)
        die("dot-stuffed data does not end in CRLF . CRLF", NULL);
    /* Undo it: a line's first '.' goes. */
    char *back = malloc(n);
    size_t o = 0;
    for (size_t i = 0; i < n - 3; i++) {
        if (out[i] == '.' && (i == 0 || out[i - 1] == '\n'))
            i++;
        back[o++] = out[i];
    }
    bool crlf_added = !(size >= 2 && data[size - 2] == '\r' && data[size - 1] == '\n');
    if (o != size + (crlf_added ? 2 : 0) || memcmp(back, data, size) != 0)
        die("unstuffing does not give the data back", NULL);
    free(back);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_send(data, size, "Send");
    fuzz_send(data, size, "SendToAdmins");
    mail_clear(state);
    fuzz_reply(data, size);
    fuzz_dot_stuff(data, size);
    return 0;
}
