/*
 * login — the development server's stand-in for Google sign-in: the
 * `dev_appserver_login` cookie, the /_ah/login form and /_ah/logout.
 *
 * The cookie is the one dev_appserver writes, so a browser session and the
 * apps that read it behave the same under both servers:
 *
 *   Set-Cookie: dev_appserver_login="EMAIL:True|False:USER_ID"; Path=/
 *
 * USER_ID is derived from the email as dev_appserver does: '1' followed by
 * the first 20 characters of the decimal bytes ("%02d" each) of the MD5 of
 * the lower-cased email. The cookie is not signed (neither is
 * dev_appserver's): anyone who can reach the port can claim any user, which
 * is the point of a development login.
 *
 * The user headers sent to the app (X-AppEngine-User-*) come only from this
 * cookie, through af_login_from_headers(), which conn.c and the router both
 * use so that "logged in" means the same thing to both.
 */
#ifndef AF_LOGIN_H
#define AF_LOGIN_H

#include <stdbool.h>
#include <stddef.h>

struct af_headers;
struct af_exchange;

/* RFC 5321 §4.5.3.1.3 caps a path at 256 octets including the angle
 * brackets: 254 for the address itself. */
#define AF_LOGIN_MAX_EMAIL 254
/* dev_appserver's ids are 21 characters; other tools write longer ones. */
#define AF_LOGIN_MAX_USER_ID 64

#define AF_LOGIN_COOKIE "dev_appserver_login"

struct af_user {
    char email[AF_LOGIN_MAX_EMAIL + 1];
    char user_id[AF_LOGIN_MAX_USER_ID + 1];
    bool admin;
};

/*
 * The user of the first `dev_appserver_login` cookie in the request's Cookie
 * fields (dropped fields are skipped). False, with *user zeroed, when there
 * is none or it is not valid: an email with an '@', of printable ASCII
 * without '"', ',', ';', '\\' or ':', at most AF_LOGIN_MAX_EMAIL long; a
 * user id of the same characters, at most AF_LOGIN_MAX_USER_ID long (it may
 * be empty). Like dev_appserver, an email without '@' means "not logged in".
 * Whatever passes can be written in a header: no CR, LF or NUL.
 */
bool af_login_from_headers(const struct af_headers *h, struct af_user *user);

/* True if `email` is acceptable in the cookie (the rules above). */
bool af_login_email_is_valid(const char *email);

/* dev_appserver's user id for `email` (see above) into out (22 bytes). */
void af_login_user_id(const char *email, char out[22]);

/* The MD5 digest (RFC 1321) of n bytes; for the user id. */
void af_md5(const void *data, size_t n, unsigned char digest[16]);

/*
 * Answers /_ah/login (logout false) or /_ah/logout (logout true). `query`
 * is the raw query string (after '?'), or NULL.
 *
 *   /_ah/login                      the form (email, admin checkbox)
 *   /_ah/login?action=Login&email=E[&admin=True]&continue=URL
 *                                   sets the cookie, 302 to URL
 *   /_ah/login?action=Logout&continue=URL, /_ah/logout?continue=URL
 *                                   clears the cookie, 302 to URL
 *
 * URL defaults to "/"; it must be a path ("/...", not "//...") or an http
 * or https URL, else "/" is used, and bytes outside printable ASCII are
 * percent-encoded, so it can never break the Location field.
 */
void af_login_page(struct af_exchange *ex, const char *query, bool logout);

/* The continue URL made safe as described above; caller frees. */
char *af_login_safe_continue(const char *url);

#endif
