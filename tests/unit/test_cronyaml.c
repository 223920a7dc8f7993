/* Unit tests for proxy/cronyaml.c: production's schedule grammar, the
 * file's shape and its errors with FILE:LINE:COLUMN, loading from disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/cronyaml.h"

static char err[512];

static void test_schedules_production_accepts(void **state)
{
    static const char *const good[] = {
        "every 24 hours",
        "every 5 minutes",
        "every 1 mins",
        "every 12 hours synchronized",
        "every 5 minutes from 10:00 to 14:00",
        "every 2 hours from 08:00 to 18:00",
        "every day 00:00",
        "every monday 09:00",
        "every mon,wed,fri 23:59",
        "1st monday of sep,oct,nov 17:00",
        "2nd,third mon,wed,thu of march 17:00",
        "first sunday of month 06:30",
        "1 of jan,april,july,oct 00:00",
        "1,15 of month 12:00",
        "Every Monday 09:00",
        "  every   day   10:00  ",
    };
    char why[160];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!af_cron_schedule_ok(good[i], why, sizeof(why)))
            fail_msg("'%s' refused: %s", good[i], why);
}

static void test_schedules_production_refuses(void **state)
{
    static const struct {
        const char *s, *why;
    } bad[] = {
        {"", "empty"},
        {"daily", "ends with a time of day"},
        {"every 0 minutes", "ends with a time of day"},
        {"every 5 seconds", "ends with a time of day"},
        {"every 5 minutes synchronized from 10:00 to 11:00", "only \"synchronized\""},
        {"every 5 minutes from 10:00 until 11:00", "only \"synchronized\""},
        {"every day 24:00", "ends with a time of day"},
        {"every day 9:00", "ends with a time of day"},
        {"every funday 09:00", "'funday' is not \"day\" or weekdays"},
        {"6th monday of month 09:00", "'6th' is not \"every\""},
        {"1st monday in month 09:00", "expected \"of\""},
        {"1st monday of smarch 09:00", "'smarch' is not \"month\""},
        {"32 of month 09:00", "'32' is not"},
        {"every day of month", "ends with a time of day"},
    };
    char why[160];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        if (af_cron_schedule_ok(bad[i].s, why, sizeof(why)))
            fail_msg("'%s' accepted", bad[i].s);
        if (!strstr(why, bad[i].why))
            fail_msg("'%s': reason '%s' lacks '%s'", bad[i].s, why, bad[i].why);
    }
    char longer[600];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_false(af_cron_schedule_ok(longer, why, sizeof(why)));
}

static struct af_cron_yaml *parse_ok(const char *text)
{
    struct af_cron_yaml *c = NULL;
    if (af_cron_yaml_parse("cron.yaml", text, strlen(text), &c, err, sizeof(err)) != 0)
        fail_msg("expected success, got: %s", err);
    assert_non_null(c);
    return c;
}

static void expect_error(const char *text, const char *want)
{
    struct af_cron_yaml *c = (struct af_cron_yaml *)1;
    assert_int_equal(af_cron_yaml_parse("cron.yaml", text, strlen(text), &c, err, sizeof(err)), -1);
    assert_null(c);
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_file(void **state)
{
    struct af_cron_yaml *c = parse_ok("cron:\n"
                                      "- description: daily summary job\n"
                                      "  url: /tasks/summary\n"
                                      "  schedule: every 24 hours\n"
                                      "  target: beta.worker\n"
                                      "  retry_parameters:\n"
                                      "    job_retry_limit: 5\n"
                                      "- url: /tasks/weekly?x=1\n"
                                      "  schedule: every monday 09:00\n"
                                      "  timezone: America/New_York\n");
    assert_int_equal(c->n, 2);
    assert_string_equal(c->jobs[0].url, "/tasks/summary");
    assert_string_equal(c->jobs[0].schedule, "every 24 hours");
    assert_string_equal(c->jobs[0].description, "daily summary job");
    assert_string_equal(c->jobs[0].target, "beta.worker");
    assert_null(c->jobs[0].timezone);
    assert_string_equal(c->jobs[1].url, "/tasks/weekly?x=1");
    assert_string_equal(c->jobs[1].timezone, "America/New_York");
    assert_null(c->jobs[1].description);
    assert_null(c->jobs[1].target);
    af_cron_yaml_free(c);

    c = parse_ok("");
    assert_int_equal(c->n, 0);
    af_cron_yaml_free(c);
    c = parse_ok("cron:\n");
    assert_int_equal(c->n, 0);
    af_cron_yaml_free(c);
}

static void test_file_errors(void **state)
{
    expect_error("cron:\n- url: /a\n  schedule: every 61 fortnights\n",
                 "cron.yaml:3:13: schedule: 'every 61 fortnights': ");
    expect_error("cron:\n- url: /a\n", "cron.yaml:2:3: a job needs a url and a schedule");
    expect_error("cron:\n- schedule: every 1 hours\n", "a job needs a url and a schedule");
    expect_error("cron:\n- url: tasks/a\n  schedule: every 1 hours\n",
                 "cron.yaml:2:8: url: 'tasks/a' is not a path starting with '/'");
    expect_error("cron:\n- url: [/a]\n  schedule: every 1 hours\n", "url: expected a single value");
    expect_error("cron:\n- url: /a\n  schedule: every 1 hours\n  target: 'a b'\n",
                 "target: 'a b' is not MODULE or VERSION.MODULE");
    expect_error("cron: /a\n", "cron.yaml:1:7: cron: expected a list of jobs");
    expect_error("cron:\n- [1]\n", "cron.yaml:2:3: ");
    expect_error("cron:\n- url: /a\n   schedule: x\n", "cron.yaml:");
}

static void test_load_dir(void **state)
{
    char dir[] = "/tmp/af-cron-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct af_cron_yaml *c = (struct af_cron_yaml *)1;
    assert_int_equal(af_cron_yaml_load_dir(dir, &c, err, sizeof(err)), 0);
    assert_null(c); /* no file */

    char path[64];
    snprintf(path, sizeof(path), "%s/cron.yml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("cron:\n- url: /x\n  schedule: every 5 minutes\n", f);
    fclose(f);
    assert_int_equal(af_cron_yaml_load_dir(dir, &c, err, sizeof(err)), 0);
    assert_non_null(c);
    assert_int_equal(c->n, 1);
    assert_string_equal(c->path, path);
    af_cron_yaml_free(c);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("cron:\n- url: /x\n", f);
    fclose(f);
    assert_int_equal(af_cron_yaml_load_dir(dir, &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_production_accepts),
        cmocka_unit_test(test_schedules_production_refuses),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_load_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
