/*
 * Unit tests of the connection parameters walq adds (src/db.c) and of the
 * connection strings its messages show: the user's settings win, ours are
 * added otherwise, and no password is ever in a message.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

/* A fake environment: "NAME=value" entries. */
static const char *const *fake_env;

static const char *lookup(const char *name)
{
    size_t n = strlen(name);

    for (const char *const *e = fake_env; e != NULL && *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* The value given for key, or NULL when the arrays do not set it. */
static const char *param(const walq__conn_params *p, const char *key)
{
    const char *v = NULL;

    ck_assert_ptr_null(p->keys[p->n]);
    ck_assert_ptr_null(p->vals[p->n]);
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], key) == 0)
            v = p->vals[i];
    return v;
}

static void build(walq__conn_params *p, const char *conninfo, walq__conn_kind kind,
                  const char *const *env)
{
    fake_env = env;
    ck_assert_msg(walq__conn_params_build(p, conninfo, kind, "walq test", lookup) == 0, "%s",
                  walq_last_error());
}

START_TEST(ours_added_when_unset)
{
    walq__conn_params p;

    build(&p, "host=db.example.com dbname=app", WALQ__CONN_SQL, NULL);
    ck_assert_str_eq(p.keys[0], "dbname");
    ck_assert_str_eq(p.vals[0], "host=db.example.com dbname=app");
    ck_assert_str_eq(param(&p, "fallback_application_name"), "walq test");
    ck_assert_str_eq(param(&p, "connect_timeout"), "10");
    ck_assert_str_eq(param(&p, "keepalives"), "1");
    ck_assert_str_eq(param(&p, "keepalives_idle"), "10");
    ck_assert_str_eq(param(&p, "keepalives_interval"), "5");
    ck_assert_str_eq(param(&p, "keepalives_count"), "3");
    ck_assert_str_eq(param(&p, "tcp_user_timeout"), "30000");
    ck_assert_ptr_null(param(&p, "replication"));

    /* No conninfo: the environment's server, with ours too. */
    build(&p, NULL, WALQ__CONN_REPLICATION, NULL);
    ck_assert_ptr_null(param(&p, "dbname"));
    ck_assert_str_eq(param(&p, "connect_timeout"), "10");
    ck_assert_str_eq(param(&p, "replication"), "database");
    ck_assert_ptr_nonnull(strstr(param(&p, "options"), "timezone=UTC"));
    build(&p, "", WALQ__CONN_SQL, NULL);
    ck_assert_ptr_null(param(&p, "dbname"));
    ck_assert_str_eq(param(&p, "tcp_user_timeout"), "30000");
}
END_TEST

START_TEST(user_settings_win)
{
    static const char *const env[] = {"PGCONNECT_TIMEOUT=3", NULL};
    walq__conn_params p;

    /* Set in the string: libpq takes the string's, ours are not given. */
    build(&p, "host=h connect_timeout=2 keepalives=0 tcp_user_timeout=0", WALQ__CONN_SQL, NULL);
    ck_assert_ptr_null(param(&p, "connect_timeout"));
    ck_assert_ptr_null(param(&p, "keepalives"));
    ck_assert_ptr_null(param(&p, "tcp_user_timeout"));
    ck_assert_str_eq(param(&p, "keepalives_idle"), "10");
    build(&p, "postgresql://h/app?keepalives_idle=60&connect_timeout=1", WALQ__CONN_REPLICATION,
          NULL);
    ck_assert_ptr_null(param(&p, "connect_timeout"));
    ck_assert_ptr_null(param(&p, "keepalives_idle"));
    ck_assert_str_eq(param(&p, "keepalives_count"), "3");
    /* Set in the environment: libpq reads it when the arrays say nothing. */
    build(&p, "host=h", WALQ__CONN_SQL, env);
    ck_assert_ptr_null(param(&p, "connect_timeout"));
    ck_assert_str_eq(param(&p, "keepalives"), "1");
    build(&p, NULL, WALQ__CONN_SQL, env);
    ck_assert_ptr_null(param(&p, "connect_timeout"));
}
END_TEST

START_TEST(mask_hides_passwords)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"host=h password=hunter2 dbname=d", "host=h password=******** dbname=d"},
        /* As libpq reads it: host, port, user and dbname first, the rest in libpq's order. */
        {"password = 'hun ter\\' 2' user=u", "user=u password=********"},
        {"sslpassword=hunter2", "sslpassword=********"},
        {"application_name='a b' host=h", "host=h application_name='a b'"},
        {"application_name='a\\\\b\\'c' host=h", "host=h application_name='a\\\\b\\'c'"},
        {"host=h options=''", "host=h options=''"},
        /* What libpq cannot read may hide a password: nothing of it is shown. */
        {"host=h password='hunter2", "********"},
        {"host=h password=hunter2 and more", "********"},
        {"passwordx=1 xpassword=2", "********"},
        /* A password misspelt is a password all the same. */
        {"host=x port=1 PASSWORD=hunter2", "********"},
        {"host=x Password=hunter2", "********"},
        {"host=x passwd=hunter2", "********"},
        {"host=x pwd=hunter2", "********"},
        {"host=x api_token=hunter2", "********"},
        {"postgresql://u:h%75nter2@h/d?bogus=1", "********"},
        /* Unless it cannot. */
        {"host=h bogus=1", "host=h bogus=1"},
        /* URIs come out as pairs. */
        {"postgresql://u:hunter2@h:5432/d", "host=h port=5432 user=u password=******** dbname=d"},
        {"postgres://u@h/d?password=hunter2&sslmode=require",
         "host=h user=u password=******** dbname=d sslmode=require"},
        {"postgresql:///d?pass%77ord=hunter2", "password=******** dbname=d"},
        {"postgresql://h/d?host=x", "host=x dbname=d"},
        /* Found by fuzz_conninfo: a "?" inside the password. */
        {"postgresql://u:hunte?r2@h:5432/d", "host=h port=5432 user=u password=******** dbname=d"},
        {"postgres://a?&@h/s?sslpassword=hunter2", "host=h user=a?& dbname=s sslpassword=********"},
        /* A connection string in dbname is masked too. */
        {"host=h dbname='user=u password=hunter2'", "host=h dbname='user=u password=********'"},
        {"dbname=postgresql://u:hunter2@h/d", "dbname='host=h user=u password=******** dbname=d'"},
        {"host=h", "host=h"},
        {"", ""},
    };
    char out[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        walq__conninfo_mask(cases[i].in, out, sizeof(out));
        ck_assert_str_eq(out, cases[i].out);
    }
    /* Bounded. */
    walq__conninfo_mask("host=h password=hunter2", out, 10);
    ck_assert_str_eq(out, "host=h pa");
}
END_TEST

START_TEST(invalid_string_message_has_no_password)
{
    static const char *const cases[] = {
        "host=h password=hunter2 nonsense",
        "host=h password='hunter2",
        "host=h password=hunter2 bogus_option=1",
        "host=h port=1 PASSWORD=hunter2",
        "host=h passwd='hunter2",
        "postgresql://u:hunter2@h/d?password=hunter2&bogus=1",
        "postgresql://u:hunter2@h/d?password=hunter2&host",
    };
    walq__conn_params p;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(walq__conn_params_build(&p, cases[i], WALQ__CONN_SQL, "t", lookup),
                         WALQ_EINVAL);
        ck_assert_msg(strstr(walq_last_error(), "hunter2") == NULL, "%s", walq_last_error());
        ck_assert_msg(strstr(walq_last_error(), "invalid connection string \"") ==
                          walq_last_error(),
                      "%s", walq_last_error());
    }
    /* Without a password the string is shown as it is, with libpq's reason. */
    ck_assert_int_eq(walq__conn_params_build(&p, "host=h bogus=1", WALQ__CONN_SQL, "t", lookup),
                     WALQ_EINVAL);
    ck_assert_msg(strstr(walq_last_error(), "invalid connection string \"host=h bogus=1\": "
                                            "invalid connection option \"bogus\"") != NULL,
                  "%s", walq_last_error());
}
END_TEST

START_TEST(connect_failure_message_has_no_password)
{
    PGconn *conn = NULL;

    /* A socket directory where no server is: fails at once. */
    ck_assert_int_eq(walq__connect(&conn,
                                   "host=/nonexistent/walq-test port=1 password=hunter2 "
                                   "user=u dbname=d",
                                   WALQ__CONN_SQL, "t"),
                     WALQ_ECONN);
    ck_assert_ptr_null(conn);
    ck_assert_msg(strstr(walq_last_error(), "hunter2") == NULL, "%s", walq_last_error());
    ck_assert_msg(strstr(walq_last_error(),
                         "could not connect to \"host=/nonexistent/walq-test "
                         "port=1 user=u password=******** dbname=d\": ") == walq_last_error(),
                  "%s", walq_last_error());
    ck_assert_int_eq(walq__connect(&conn, "postgresql://u:hunter2@%2Fnonexistent%2Fwalq-test:1/d",
                                   WALQ__CONN_REPLICATION, "t"),
                     WALQ_ECONN);
    ck_assert_msg(strstr(walq_last_error(), "hunter2") == NULL, "%s", walq_last_error());
}
END_TEST

START_TEST(server_version_needed)
{
    ck_assert_int_eq(walq__server_version_check(140000), 0);
    ck_assert_int_eq(walq__server_version_check(180001), 0);
    ck_assert_int_eq(walq__server_version_check(130016), WALQ_ESERVER);
    ck_assert_msg(
        strstr(walq_last_error(), "the server runs PostgreSQL 13.16, and walq needs 14 or newer") ==
            walq_last_error(),
        "%s", walq_last_error());
    ck_assert_msg(strstr(walq_last_error(), "Upgrade the server to PostgreSQL 14 or newer") != NULL,
                  "%s", walq_last_error());
    ck_assert_int_eq(walq__server_version_check(90624), WALQ_ESERVER);
    ck_assert_msg(strstr(walq_last_error(),
                         "the server runs PostgreSQL 9.6.24, and walq needs 14 or newer") ==
                      walq_last_error(),
                  "%s", walq_last_error());
    ck_assert_int_eq(walq__server_version_check(0), WALQ_ECONN);
}
END_TEST

static Suite *conninfo_suite(void)
{
    Suite *s = suite_create("conninfo");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, ours_added_when_unset);
    tcase_add_test(tc, user_settings_win);
    tcase_add_test(tc, mask_hides_passwords);
    tcase_add_test(tc, invalid_string_message_has_no_password);
    tcase_add_test(tc, connect_failure_message_has_no_password);
    tcase_add_test(tc, server_version_needed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conninfo_suite());
    int failed;

    /* Nothing from the machine's environment: the tests say what is set. */
    unsetenv("PGCONNECT_TIMEOUT");
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
