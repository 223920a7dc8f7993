/*
 * login — see login.h.
 */
#include "proxy/login.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/exchange.h"
#include "proxy/headers.h"
#include "proxy/url.h"

/* ---- MD5 (RFC 1321) ---------------------------------------------------------
 * Only for dev_appserver's user id, which is defined through MD5; nothing
 * here relies on it for security. */

struct md5_ctx {
    uint32_t s[4];
    uint64_t bytes;
    unsigned char block[64];
    size_t used;
};

static uint32_t md5_k[64];

/* RFC 1321 §3.4: T[i] is the integer part of 2^32 * |sin(i)|, i in radians;
 * computing it is shorter than a table of 64 magic numbers and exact in
 * double precision. */
static void md5_init_table(void)
{
    if (md5_k[0])
        return;
    for (int i = 0; i < 64; i++)
        md5_k[i] = (uint32_t)(fabs(sin((double)(i + 1))) * 4294967296.0);
}

static uint32_t rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void md5_block(struct md5_ctx *c, const unsigned char *p)
{
    static const unsigned char shift[4][4] = {
        {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = c->s[0], b = c->s[1], cc = c->s[2], d = c->s[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        switch (i / 16) {
        case 0: f = (b & cc) | (~b & d); g = i; break;
        case 1: f = (d & b) | (~d & cc); g = (5 * i + 1) % 16; break;
        case 2: f = b ^ cc ^ d; g = (3 * i + 5) % 16; break;
        default: f = cc ^ (b | ~d); g = (7 * i) % 16; break;
        }
        f += a + md5_k[i] + m[g];
        a = d;
        d = cc;
        cc = b;
        b += rotl(f, shift[i / 16][i % 4]);
    }
    c->s[0] += a;
    c->s[1] += b;
    c->s[2] += cc;
    c->s[3] += d;
}

static void md5_update(struct md5_ctx *c, const unsigned char *p, size_t n)
{
    c->bytes += n;
    while (n > 0) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used == 64) {
            md5_block(c, c->block);
            c->used = 0;
        }
    }
}

void af_md5(const void *data, size_t n, unsigned char digest[16])
{
    md5_init_table();
    struct md5_ctx c = {.s = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}};
    md5_update(&c, data, n);
    /* §3.1-3.2: a 1 bit, zeros up to 56 mod 64, the bit length LE. */
    uint64_t bits = c.bytes * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (c.used < 56 ? 56 : 120) - c.used;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (8 * i));
    md5_update(&c, pad, padlen + 8);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            digest[4 * i + j] = (unsigned char)(c.s[i] >> (8 * j));
}

/* ---- the cookie ------------------------------------------------------------ */

void af_login_user_id(const char *email, char out[22])
{
    size_t n = strlen(email);
    char *lower = af_xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)email[i]);
    unsigned char d[16];
    af_md5(lower, n, d);
    free(lower);
    /* dev_appserver: '1' + ''.join('%02d' % byte for byte in digest)[:20]. */
    char digits[16 * 3 + 1];
    size_t len = 0;
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(digits + len, sizeof(digits) - len, "%02d", d[i]);
    out[0] = '1';
    memcpy(out + 1, digits, 20);
    out[21] = '\0';
}

/* The characters an email or a user id may hold: RFC 6265 §4.1.1
 * cookie-octets (printable ASCII without '"', ',', ';', '\\', space),
 * without ':' which separates the fields. */
static bool cookie_field_char(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && ch != '"' && ch != ',' && ch != ';' && ch != '\\' &&
           ch != ':';
}

static bool cookie_field_ok(const char *s, size_t n, size_t max)
{
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!cookie_field_char((unsigned char)s[i]))
            return false;
    return true;
}

bool af_login_email_is_valid(const char *email)
{
    size_t n = strlen(email);
    return n > 0 && memchr(email, '@', n) && cookie_field_ok(email, n, AF_LOGIN_MAX_EMAIL);
}

/* Parses one cookie value "EMAIL:ADMIN:USER_ID" (quotes already removed).
 * Like dev_appserver's split(':'), fields past the third are ignored. */
static bool parse_value(const char *v, size_t n, struct af_user *u)
{
    const char *a = memchr(v, ':', n);
    if (!a)
        return false;
    const char *b = memchr(a + 1, ':', n - (size_t)(a + 1 - v));
    size_t email_len = (size_t)(a - v);
    const char *admin = a + 1;
    size_t admin_len = b ? (size_t)(b - admin) : n - (size_t)(admin - v);
    const char *uid = b ? b + 1 : v + n;
    const char *uid_end = b ? memchr(uid, ':', n - (size_t)(uid - v)) : NULL;
    size_t uid_len = uid_end ? (size_t)(uid_end - uid) : n - (size_t)(uid - v);
    if (email_len == 0 || !memchr(v, '@', email_len) ||
        !cookie_field_ok(v, email_len, AF_LOGIN_MAX_EMAIL) ||
        !cookie_field_ok(uid, uid_len, AF_LOGIN_MAX_USER_ID))
        return false;
    memcpy(u->email, v, email_len);
    u->email[email_len] = '\0';
    memcpy(u->user_id, uid, uid_len);
    u->user_id[uid_len] = '\0';
    u->admin = admin_len == 4 && memcmp(admin, "True", 4) == 0;
    return true;
}

bool af_login_from_headers(const struct af_headers *h, struct af_user *user)
{
    static const char name[] = AF_LOGIN_COOKIE;
    const size_t name_len = sizeof(name) - 1;
    memset(user, 0, sizeof(*user));
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].drop || strcasecmp(h->v[i].name, "Cookie") != 0)
            continue;
        /* RFC 6265 §5.4: "name=value" pairs separated by "; ". */
        const char *p = h->v[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ';')
                p++;
            size_t len = strcspn(p, ";");
            if (len > name_len && memcmp(p, name, name_len) == 0 && p[name_len] == '=') {
                const char *v = p + name_len + 1;
                size_t n = len - name_len - 1;
                while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                    n--;
                if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
                    v++;
                    n -= 2;
                }
                /* The first one decides, as in dev_appserver's cookie dict
                 * lookup of the first value. */
                if (parse_value(v, n, user))
                    return true;
                memset(user, 0, sizeof(*user));
                return false;
            }
            p += len;
        }
    }
    return false;
}

/* ---- the pages -------------------------------------------------------------- */

char *af_login_safe_continue(const char *url)
{
    if (!url || !*url)
        return af_xstrdup("/");
    bool path = url[0] == '/' && url[1] != '/' && url[1] != '\\';
    bool absolute = strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
    if (!path && !absolute)
        return af_xstrdup("/");
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(url);
    char *out = af_xmalloc(3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch > 0x20 && ch < 0x7f) {
            out[o++] = (char)ch;
        } else {
            /* CR, LF, NUL (never here: af_url_decode refuses it), spaces
             * and non-ASCII bytes cannot stand in a Location field. */
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* Escapes text for an HTML attribute value or element content. */
static void html_escaped(struct evbuffer *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': evbuffer_add(b, "&amp;", 5); break;
        case '<': evbuffer_add(b, "&lt;", 4); break;
        case '>': evbuffer_add(b, "&gt;", 4); break;
        case '"': evbuffer_add(b, "&quot;", 6); break;
        case '\'': evbuffer_add(b, "&#39;", 5); break;
        default: evbuffer_add(b, s, 1); break;
        }
    }
}

static void add_header(struct af_headers *h, const char *name, const char *value)
{
    af_headers_add(h, name, strlen(name), value, strlen(value));
}

static void reply_form(struct af_exchange *ex, int status, const char *continue_url,
                       const char *email, const char *error)
{
    struct af_user current;
    bool logged_in = af_login_from_headers(&ex->req_headers, &current);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                           "<title>Login</title></head>\n<body>\n<h1>Login</h1>\n");
    if (error) {
        evbuffer_add_printf(b, "<p><strong>");
        html_escaped(b, error);
        evbuffer_add_printf(b, "</strong></p>\n");
    }
    if (logged_in) {
        evbuffer_add_printf(b, "<p>Logged in as ");
        html_escaped(b, current.email);
        evbuffer_add_printf(b, "%s.</p>\n", current.admin ? " (administrator)" : "");
    } else {
        evbuffer_add_printf(b, "<p>Not logged in.</p>\n");
    }
    evbuffer_add_printf(b, "<form method=\"get\" action=\"/_ah/login\">\n"
                           "<p><label>Email: <input type=\"text\" name=\"email\" value=\"");
    html_escaped(b, email && *email ? email : "test@example.com");
    evbuffer_add_printf(b, "\" size=\"40\"></label></p>\n"
                           "<p><label><input type=\"checkbox\" name=\"admin\" value=\"True\">"
                           " Sign in as administrator</label></p>\n"
                           "<input type=\"hidden\" name=\"continue\" value=\"");
    html_escaped(b, continue_url);
    evbuffer_add_printf(b, "\">\n<p><input type=\"submit\" name=\"action\" value=\"Login\">\n"
                           "<input type=\"submit\" name=\"action\" value=\"Logout\"></p>\n"
                           "</form>\n</body></html>\n");
    struct af_headers h;
    af_headers_init(&h);
    add_header(&h, "Content-Type", "text/html; charset=utf-8");
    /* The page shows who is logged in: never from a cache. */
    add_header(&h, "Cache-Control", "no-cache");
    af_ex_reply(ex, status, &h, b, -1, 0, 0);
    af_headers_release(&h);
}

static void reply_redirect(struct af_exchange *ex, const char *location, const char *cookie)
{
    struct af_headers h;
    af_headers_init(&h);
    add_header(&h, "Location", location);
    if (cookie)
        add_header(&h, "Set-Cookie", cookie);
    add_header(&h, "Cache-Control", "no-cache");
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "Redirecting to %s\n", location);
    add_header(&h, "Content-Type", "text/plain; charset=utf-8");
    af_ex_reply(ex, 302, &h, b, -1, 0, 0);
    af_headers_release(&h);
}

void af_login_page(struct af_exchange *ex, const char *query, bool logout)
{
    char *action = query ? af_url_query_param(query, "action") : NULL;
    char *email = query ? af_url_query_param(query, "email") : NULL;
    char *admin = query ? af_url_query_param(query, "admin") : NULL;
    char *cont = query ? af_url_query_param(query, "continue") : NULL;
    char *dest = af_login_safe_continue(cont);

    if (logout || (action && strcasecmp(action, "logout") == 0)) {
        /* RFC 6265 §3.1: an expiry in the past removes the cookie. */
        reply_redirect(ex, dest,
                       AF_LOGIN_COOKIE "=; Path=/; Max-Age=0; "
                                       "Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    } else if (action && strcasecmp(action, "login") == 0) {
        if (!email || !af_login_email_is_valid(email)) {
            reply_form(ex, 400, dest, email,
                       "Enter an email address such as test@example.com (printable ASCII, "
                       "with an '@', without ':', ';', ',', '\"' or '\\').");
        } else {
            char uid[22];
            af_login_user_id(email, uid);
            bool is_admin = admin && (strcasecmp(admin, "true") == 0 || strcmp(admin, "on") == 0);
            char *cookie = af_xasprintf("%s=\"%s:%s:%s\"; Path=/", AF_LOGIN_COOKIE, email,
                                        is_admin ? "True" : "False", uid);
            af_log(AF_LOG_INFO, "login: %s%s", email, is_admin ? " (admin)" : "");
            reply_redirect(ex, dest, cookie);
            free(cookie);
        }
    } else {
        reply_form(ex, 200, dest, email, NULL);
    }
    free(action);
    free(email);
    free(admin);
    free(cont);
    free(dest);
}
