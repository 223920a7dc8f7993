/*
 * Unit tests of mail delivery's pure parts: SMTP replies, EHLO extensions,
 * dot-stuffing (mail_smtp.c), the message built from a MailMessage
 * (mail_mime.c), and the relay's accounting of bytes in flight. The SMTP
 * conversation itself is tested end to end (tests/e2e/test_mail_smtp.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/mail_mime.c"
#include "apiserver/services/mail_smtp.c"

static void test_reply(void **state)
{
    int code = 0;
    char text[256];
    const char *one = "220 smtp.test ESMTP ready\r\n";
    assert_int_equal(mail_smtp_reply(one, strlen(one), &code, text, sizeof(text)), strlen(one));
    assert_int_equal(code, 220);
    assert_string_equal(text, "smtp.test ESMTP ready");

    const char *multi = "250-smtp.test\r\n250-SIZE 1000\r\n250 AUTH PLAIN LOGIN\r\n221 next";
    long n = mail_smtp_reply(multi, strlen(multi), &code, text, sizeof(text));
    assert_int_equal(n, strlen(multi) - strlen("221 next"));
    assert_int_equal(code, 250);
    assert_string_equal(text, "smtp.test / SIZE 1000 / AUTH PLAIN LOGIN");

    /* Incomplete: no line end yet, or only continuation lines. */
    assert_int_equal(mail_smtp_reply("250-a\r\n250 b", 12, &code, text, sizeof(text)), 0);
    assert_int_equal(mail_smtp_reply("25", 2, &code, text, sizeof(text)), 0);
    assert_int_equal(mail_smtp_reply("", 0, &code, text, sizeof(text)), 0);

    /* A bare code, a bare LF, control bytes shown as '?'. */
    assert_int_equal(mail_smtp_reply("354\r\n", 5, &code, text, sizeof(text)), 5);
    assert_int_equal(code, 354);
    assert_string_equal(text, "");
    assert_int_equal(mail_smtp_reply("550 no\x01way\n", 11, &code, text, sizeof(text)), 11);
    assert_string_equal(text, "no?way");

    /* Not SMTP. */
    const char *bad[] = {"HTTP/1.1 200 OK\r\n", "2500 x\r\n", "25x ok\r\n", "250_x\r\n",
                         "250-a\r\n251 b\r\n", "650 x\r\n", "\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (mail_smtp_reply(bad[i], strlen(bad[i]), &code, text, sizeof(text)) != -1)
            fail_msg("\"%s\" taken as a reply", bad[i]);

    /* A line over the limit is refused before it ends. */
    size_t big = REPLY_LINE_MAX + 10;
    char *longline = malloc(big);
    memcpy(longline, "250 ", 4);
    memset(longline + 4, 'x', big - 4);
    assert_int_equal(mail_smtp_reply(longline, big, &code, text, sizeof(text)), -1);
    free(longline);

    /* A small text buffer cuts the text, not the reply. */
    char tiny[8];
    assert_int_equal(mail_smtp_reply(one, strlen(one), &code, tiny, sizeof(tiny)), strlen(one));
    assert_string_equal(tiny, "smtp.te");
}

static void test_extensions(void **state)
{
    const char *ehlo = "smtp.test greets SIZE host / SIZE 1000 / 8BITMIME / auth LOGIN PLAIN / "
                       "STARTTLS";
    const char *params = NULL;
    assert_true(mail_smtp_has_ext(ehlo, "SIZE", &params));
    assert_int_equal(strtoull(params, NULL, 10), 1000);
    assert_true(mail_smtp_has_ext(ehlo, "AUTH", &params));
    assert_memory_equal(params, "LOGIN PLAIN / ", 14);
    assert_true(mail_smtp_has_ext(ehlo, "starttls", NULL));
    assert_true(mail_smtp_has_ext(ehlo, "8BITMIME", NULL));
    assert_false(mail_smtp_has_ext(ehlo, "8BIT", NULL)); /* a prefix is not the keyword */
    assert_false(mail_smtp_has_ext(ehlo, "SMTPUTF8", NULL));
    /* The greeting line is not an extension. */
    assert_false(mail_smtp_has_ext("smtp.test STARTTLS", "STARTTLS", NULL));
}

static void test_dot_stuff(void **state)
{
    const char *in = ".first\r\nmiddle\r\n..two\r\nlast.\r\n.";
    size_t n;
    char *out = mail_smtp_dot_stuff(in, strlen(in), &n);
    const char *want = "..first\r\nmiddle\r\n...two\r\nlast.\r\n..\r\n.\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    free(out);
    out = mail_smtp_dot_stuff("a\r\n", 3, &n);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "a\r\n.\r\n", 6);
    free(out);
}

static void test_addr_spec(void **state)
{
    const struct {
        const char *addr, *spec;
    } cases[] = {
        {"a@b.c", "a@b.c"},
        {"  padded@example.com  ", "padded@example.com"},
        {"Juliet <juliet@capulet.org>", "juliet@capulet.org"},
        {"\"Capulet <J>\" <juliet@capulet.org>", "juliet@capulet.org"},
        {"\"odd local\"@example.com", "\"odd local\"@example.com"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n;
        const char *s = mail_addr_spec(cases[i].addr, &n);
        if (n != strlen(cases[i].spec) || memcmp(s, cases[i].spec, n) != 0)
            fail_msg("%s: got %.*s", cases[i].addr, (int)n, s);
    }
}

static char *qp(const char *s)
{
    struct mbuf b = {0};
    put_qp(&b, s);
    return b.p ? b.p : strdup("");
}

static void test_quoted_printable(void **state)
{
    char *out = qp("a=b \nline\twith trailing space \r\nCR only\rend");
    assert_string_equal(out, "a=3Db=20\r\nline\twith trailing space=20\r\nCR only\r\nend\r\n");
    free(out);
    out = qp("caf\xc3\xa9");
    assert_string_equal(out, "caf=C3=A9\r\n");
    free(out);
    /* Long lines are broken softly within 76 characters. */
    char longtext[400];
    memset(longtext, 'y', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    longtext[100] = '\xff';
    out = qp(longtext);
    size_t ys = 0;
    for (char *line = out, *end; *line; line = end + 2) {
        end = strstr(line, "\r\n");
        assert_non_null(end);
        assert_true(end - line <= 76);
        for (char *p = line; p < end; p++)
            ys += *p == 'y';
    }
    assert_int_equal(ys, sizeof(longtext) - 2);
    free(out);
}

/* Every encoded-word of a header value decodes to whole UTF-8 characters. */
static void test_encoded_words(void **state)
{
    struct mbuf b = {0};
    /* 40 two-byte characters: the 45-byte cut falls inside one. */
    char s[81];
    for (int i = 0; i < 40; i++)
        memcpy(s + 2 * i, "\xc3\xa9", 2);
    s[80] = '\0';
    put_text(&b, s);
    assert_null(strchr(b.p, '\xc3'));
    size_t words = 0;
    for (char *w = strstr(b.p, "=?utf-8?b?"); w; w = strstr(w + 1, "=?utf-8?b?")) {
        char *end = strstr(w, "?=");
        assert_non_null(end);
        assert_true(end + 2 - w <= 75);
        unsigned char dec[80];
        int n = EVP_DecodeBlock(dec, (unsigned char *)w + 10, (int)(end - w - 10));
        assert_true(n > 0);
        int pad = end[-1] == '=' ? (end[-2] == '=' ? 2 : 1) : 0;
        n -= pad;
        assert_int_equal(n % 2, 0); /* whole characters */
        words++;
    }
    assert_int_equal(words, 2);
    free(b.p);

    /* Plain ASCII stays as it is; "=?" does not. */
    b = (struct mbuf){0};
    put_text(&b, "Hello there");
    assert_string_equal(b.p, "Hello there");
    free(b.p);
    b = (struct mbuf){0};
    put_text(&b, "=?utf-8?q?fake?=");
    assert_memory_equal(b.p, "=?utf-8?b?", 10);
    free(b.p);
}

static char *to_one[] = {"Juliet <juliet@capulet.org>"};
static char *bcc_one[] = {"friar@verona.example"};

static void test_message(void **state)
{
    Af__Mail__MailMessage m = AF__MAIL__MAIL_MESSAGE__INIT;
    m.sender = "romeo@montague.com";
    m.n_to = 1;
    m.to = to_one;
    m.n_bcc = 1;
    m.bcc = bcc_one;
    /* An attempt to add a header through the subject or a header value. */
    m.subject = "hi\r\nBcc: spy@example.com";
    m.textbody = "text";
    m.htmlbody = "<p>html</p>";
    Af__Mail__MailHeader h = AF__MAIL__MAIL_HEADER__INIT, *hp = &h;
    h.name = "References";
    h.value = "<a@b>\r\nX-Injected: yes";
    m.n_header = 1;
    m.header = &hp;
    Af__Mail__MailAttachment a = AF__MAIL__MAIL_ATTACHMENT__INIT, *ap = &a;
    a.filename = "data.bin";
    a.data.data = (uint8_t *)"\0\1\2";
    a.data.len = 3;
    m.n_attachment = 1;
    m.attachment = &ap;

    size_t len;
    char *msg = mail_mime_build(&m, 1700000000, 0x1234, &len);
    assert_int_equal(strlen(msg), len);
    assert_non_null(strstr(msg, "From: romeo@montague.com\r\n"));
    assert_non_null(strstr(msg, "To: Juliet <juliet@capulet.org>\r\n"));
    assert_non_null(strstr(msg, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    assert_non_null(strstr(msg, "Message-ID: <0000000000001234.1700000000@montague.com>\r\n"));
    assert_null(strstr(msg, "friar"));
    assert_null(strstr(msg, "\nBcc:"));
    assert_null(strstr(msg, "\nX-Injected:"));
    assert_non_null(strstr(msg, "Content-Type: multipart/mixed; boundary=\"=_af_0000000000001234_0\""));
    assert_non_null(strstr(msg, "Content-Type: multipart/alternative; boundary="));
    assert_null(strstr(msg, "multipart/related"));
    assert_non_null(strstr(msg, "Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
                                "Content-Disposition: attachment; filename=\"data.bin\"\r\n"
                                "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"));
    assert_non_null(strstr(msg, "\r\n--=_af_0000000000001234_0--\r\n"));
    /* Every line ends in CRLF, none is bare. */
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\n')
            assert_true(i > 0 && msg[i - 1] == '\r');
        if (msg[i] == '\r')
            assert_true(i + 1 < len && msg[i + 1] == '\n');
    }
    free(msg);

    /* A text body alone is a single part; a name needing RFC 2231. */
    m.htmlbody = NULL;
    a.filename = "r\xc3\xa9sum\xc3\xa9 \"1\".pdf";
    a.contentid = "<cv>";
    msg = mail_mime_build(&m, 0, 1, &len);
    assert_non_null(strstr(msg, "multipart/related"));
    assert_null(strstr(msg, "multipart/mixed"));
    assert_null(strstr(msg, "multipart/alternative"));
    assert_non_null(strstr(msg, "Content-Type: application/pdf;\r\n name*=utf-8''r%C3%A9sum%C3%A9%20%221%22.pdf"));
    assert_non_null(strstr(msg, "Content-Disposition: inline;\r\n filename*=utf-8''"));
    assert_non_null(strstr(msg, "Content-ID: <cv>\r\n"));
    free(msg);
}

/* Bytes waiting in sessions are counted while a session lives. */
static void test_relay_accounting(void **state)
{
    struct af_api_options o = {.smtp_host = "::1", .smtp_port = 2525, .smtp_user = "u",
                               .smtp_password = "p", .smtp_allow_tls = true};
    struct mail_relay *r = mail_relay_new(&o);
    assert_string_equal(r->authority, "[::1]:2525");
    assert_non_null(r->ssl_ctx);
    struct mail_delivery d = {.from = strdup("a@b"), .rcpt = calloc(1, sizeof(char *)),
                              .n_rcpt = 1, .data = strdup("12345"), .len = 5,
                              .what = strdup("x"), .deadline_s = 1};
    d.rcpt[0] = strdup("c@d");
    struct mail_session *s = mail_session_new(r, &d);
    assert_null(d.data); /* taken */
    assert_int_equal(atomic_load(&r->inflight), 5);
    assert_int_equal(atomic_load(&r->refs), 2);
    assert_false(s->smtputf8);
    mail_session_ops.cancel(s);
    assert_int_equal(atomic_load(&r->inflight), 0);
    assert_int_equal(atomic_load(&r->refs), 1);
    mail_relay_unref(r);

    o = (struct af_api_options){.smtp_host = "localhost", .smtp_allow_tls = false};
    r = mail_relay_new(&o);
    assert_int_equal(r->port, 25);
    assert_null(r->ssl_ctx);
    assert_null(r->user);
    mail_relay_unref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply),          cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_dot_stuff),      cmocka_unit_test(test_addr_spec),
        cmocka_unit_test(test_quoted_printable), cmocka_unit_test(test_encoded_words),
        cmocka_unit_test(test_message),        cmocka_unit_test(test_relay_accounting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
