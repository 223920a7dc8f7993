/*
 * Unit tests of the "mail" service: validation as production does it,
 * messages kept in memory within bounds, and Send deferred to the SMTP
 * session with --smtp_host.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/mail.c"
#include "apiserver/services/mail_smtp.c" /* struct mail_session */
#include "tests/unit/svc_call.h"

static struct af_result call_raw(void *state, const char *method, const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_mail, state, method, "req-1", req, len);
}

static struct af_result call(void *state, const char *method, const Af__Mail__MailMessage *msg)
{
    return svc_call(&af_service_mail, state, method, &msg->base);
}


static int setup(void **state)
{
    *state = af_service_mail.create(NULL);
    return 0;
}

static int teardown(void **state)
{
    af_service_mail.destroy(*state);
    return 0;
}

static char *to_one[] = {"Juliet <juliet@capulet.org>"};

static Af__Mail__MailMessage good_message(void)
{
    Af__Mail__MailMessage m = AF__MAIL__MAIL_MESSAGE__INIT;
    m.sender = "romeo@montague.com";
    m.n_to = 1;
    m.to = to_one;
    m.subject = "See you tonight";
    m.textbody = "Don't forget our plans.";
    return m;
}

static void test_send_kept(void **state)
{
    struct mail_state *st = *state;
    Af__Mail__MailMessage m = good_message();
    struct af_result res = call(st, "Send", &m);
    assert_int_equal(res.kind, AF_RESULT_OK);
    assert_int_equal(res.response_len, 0);
    svc_result_free(&res);
    assert_int_equal(st->count, 1);
    assert_false(st->kept[st->head].to_admins);

    /* What is kept decodes back to what was sent. */
    Af__Mail__MailMessage *back =
        af__mail__mail_message__unpack(NULL, st->kept[st->head].len, st->kept[st->head].data);
    assert_non_null(back);
    assert_string_equal(back->subject, "See you tonight");
    assert_string_equal(back->to[0], to_one[0]);
    af__mail__mail_message__free_unpacked(back, NULL);

    /* SendToAdmins needs no recipients. */
    m.n_to = 0;
    m.textbody = NULL;
    m.htmlbody = "<p>hi</p>";
    res = call(st, "SendToAdmins", &m);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    assert_int_equal(st->count, 2);
    assert_true(st->kept[(st->head + 1) % MAIL_MAX_KEPT].to_admins);

    mail_clear(st);
    assert_int_equal(st->count, 0);
    assert_int_equal(st->bytes, 0);
}

static void test_addresses(void **state)
{
    const char *good[] = {
        "a@b.c",
        "user.name+tag@example.co.uk",
        "Juliet <juliet@capulet.org>",
        "\"Capulet, Juliet\" <juliet@capulet.org>",
        "  padded@example.com  ",
        "\"odd local\"@example.com",
        "me@localhost",
        "x@[127.0.0.1]",
    };
    const char *bad[] = {
        "",
        "plain",
        "@example.com",
        "user@",
        "user@@example.com",
        "user@exa mple.com",
        ".user@example.com",
        "us..er@example.com",
        "user@-example.com",
        "user@example..com",
        "Juliet <juliet@capulet.org",
        "Juliet juliet@capulet.org>",
        "<>",
        "a\r\nBcc: x@y.z <a@b.c>",
        "user@example.com, other@example.com",
        "user@example.com\r\n",
        "\n user@example.com",
        "Juliet <juliet@capulet.org>\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!valid_address(good[i]))
            fail_msg("should accept \"%s\"", good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid_address(bad[i]))
            fail_msg("should refuse \"%s\"", bad[i]);
    }
    char longaddr[MAIL_MAX_ADDRESS + 16];
    memset(longaddr, 'a', sizeof(longaddr));
    memcpy(longaddr + sizeof(longaddr) - 8, "@b.test", 8);
    assert_false(valid_address(longaddr));
}

static void expect_error(void *st, const char *method, const Af__Mail__MailMessage *m, int code,
                         const char *detail_part)
{
    struct af_result res = call(st, method, m);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, code);
    assert_non_null(res.detail);
    if (!strstr(res.detail, detail_part))
        fail_msg("detail \"%s\" lacks \"%s\"", res.detail, detail_part);
    svc_result_free(&res);
}

static void test_refusals(void **state)
{
    struct mail_state *st = *state;
    Af__Mail__MailMessage m = good_message();
    m.sender = "not an address";
    expect_error(st, "Send", &m, MAILERR(BAD_REQUEST), "sender");

    m = good_message();
    char *bad_cc[] = {"ok@example.com", "broken@"};
    m.n_cc = 2;
    m.cc = bad_cc;
    expect_error(st, "Send", &m, MAILERR(BAD_REQUEST), "cc address \"broken@\"");

    m = good_message();
    m.replyto = "nope";
    expect_error(st, "Send", &m, MAILERR(BAD_REQUEST), "reply-to");

    m = good_message();
    m.n_to = 0;
    expect_error(st, "Send", &m, MAILERR(BAD_REQUEST), "no recipients");

    m = good_message();
    m.textbody = NULL;
    expect_error(st, "Send", &m, MAILERR(BAD_REQUEST), "no body");

    m = good_message();
    Af__Mail__MailAttachment att = AF__MAIL__MAIL_ATTACHMENT__INIT;
    Af__Mail__MailAttachment *attp = &att;
    att.filename = "invoice.EXE";
    att.data.data = (uint8_t *)"MZ";
    att.data.len = 2;
    m.n_attachment = 1;
    m.attachment = &attp;
    expect_error(st, "Send", &m, MAILERR(INVALID_ATTACHMENT_TYPE), "invoice.EXE");
    att.filename = "photo.jpg";
    att.contentid = "no-brackets";
    expect_error(st, "Send", &m, MAILERR(INVALID_CONTENT_ID), "no-brackets");
    att.contentid = "<photo\r\nX-Injected: 1>";
    expect_error(st, "Send", &m, MAILERR(INVALID_CONTENT_ID), "no brackets inside");
    att.contentid = "<a<b>";
    expect_error(st, "Send", &m, MAILERR(INVALID_CONTENT_ID), "<a<b>");
    att.contentid = "<photo1>";
    struct af_result res = call(st, "Send", &m);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);

    m = good_message();
    Af__Mail__MailHeader h = AF__MAIL__MAIL_HEADER__INIT;
    Af__Mail__MailHeader *hp = &h;
    h.name = "Bcc";
    h.value = "spy@example.com";
    m.n_header = 1;
    m.header = &hp;
    expect_error(st, "Send", &m, MAILERR(INVALID_HEADER_NAME), "Bcc");
    h.name = "list-id";
    h.value = "<list.example.com>";
    res = call(st, "Send", &m);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);

    /* Only the two accepted messages were kept. */
    assert_int_equal(st->count, 2);
}

static void test_bounded(void **state)
{
    struct mail_state *st = *state;
    Af__Mail__MailMessage m = good_message();
    for (int i = 0; i < MAIL_MAX_KEPT + 7; i++) {
        struct af_result res = call(st, "Send", &m);
        assert_int_equal(res.kind, AF_RESULT_OK);
        svc_result_free(&res);
    }
    assert_int_equal(st->count, MAIL_MAX_KEPT);
    assert_int_equal(st->sent, MAIL_MAX_KEPT + 7);
}

static void test_undecodable(void **state)
{
    static const uint8_t garbage[] = {0x0a, 0x03, 'a'};
    const char *methods[] = {"Send", "SendToAdmins"};
    for (size_t i = 0; i < 2; i++) {
        struct af_result res = call_raw(*state, methods[i], garbage, sizeof(garbage));
        assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
        assert_int_equal(res.code, MAILERR(BAD_REQUEST));
        svc_result_free(&res);
        /* Sender and Subject are required. */
        res = call_raw(*state, methods[i], NULL, 0);
        assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
        assert_int_equal(res.code, MAILERR(BAD_REQUEST));
        svc_result_free(&res);
    }
    assert_int_equal(((struct mail_state *)*state)->count, 0);
}

/* With --smtp_host, Send is deferred to the I/O thread with the message
 * and its envelope; SendToAdmins still answers at once. */
static void test_smtp_deferred(void **state)
{
    struct af_api_options o = {.smtp_host = "127.0.0.1", .smtp_port = 2525};
    struct mail_state *st = af_service_mail.create(&o);
    assert_non_null(st->relay);
    Af__Mail__MailMessage m = good_message();
    char *cc[] = {"Nurse <nurse@capulet.org>", "JULIET@capulet.org"};
    m.n_cc = 2;
    m.cc = cc;
    struct af_result res = call(st, "Send", &m);
    assert_int_equal(res.kind, AF_RESULT_DEFER);
    assert_ptr_equal(res.defer_ops, &mail_session_ops);
    struct mail_session *s = res.defer_arg;
    assert_string_equal(s->d.from, "romeo@montague.com");
    /* Addr-specs, one per mailbox (case-insensitively). */
    assert_int_equal(s->d.n_rcpt, 2);
    assert_string_equal(s->d.rcpt[0], "juliet@capulet.org");
    assert_string_equal(s->d.rcpt[1], "nurse@capulet.org");
    assert_non_null(strstr(s->d.data, "Subject: See you tonight\r\n"));
    assert_true(s->d.deadline_s == MAIL_SMTP_DEADLINE_S);
    assert_int_equal(atomic_load(&st->relay->inflight), s->d.len);
    res.defer_ops->cancel(res.defer_arg);
    assert_int_equal(atomic_load(&st->relay->inflight), 0);
    assert_int_equal(st->count, 1); /* kept, as without SMTP */

    res = call(st, "SendToAdmins", &m);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);

    /* The caller's deadline bounds the session; a passed one fails. */
    size_t len = af__mail__mail_message__get_packed_size(&m);
    uint8_t *buf = malloc(len);
    af__mail__mail_message__pack(&m, buf);
    struct af_call c = {.service = "mail", .method = "Send", .request = buf, .request_len = len,
                        .request_id = "", .deadline_ns = af_api_now_ns() + 2000000000ull};
    res = (struct af_result){0};
    mail_send(st, &c, &res);
    assert_int_equal(res.kind, AF_RESULT_DEFER);
    s = res.defer_arg;
    assert_true(s->d.deadline_s > 1.5 && s->d.deadline_s <= 2.0);
    res.defer_ops->cancel(res.defer_arg);
    c.deadline_ns = af_api_now_ns() - 1;
    res = (struct af_result){0};
    mail_send(st, &c, &res);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, MAILERR(INTERNAL_ERROR));
    svc_result_free(&res);
    free(buf);

    /* Too much already waiting: refused at once. */
    atomic_store(&st->relay->inflight, MAIL_SMTP_MAX_INFLIGHT + 1);
    expect_error(st, "Send", &m, MAILERR(INTERNAL_ERROR), "retry later");
    atomic_store(&st->relay->inflight, 0);
    af_service_mail.destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_send_kept, setup, teardown),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
        cmocka_unit_test(test_smtp_deferred),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
