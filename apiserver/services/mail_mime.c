/*
 * mail_mime — the Internet message (RFC 5322) that mail.Send delivers,
 * built from a MailMessage the service already checked (mail.c), with
 * MIME (RFC 2045-2047, 2231, 2387) for bodies and attachments.
 *
 * Decisions:
 *  - Bodies are always quoted-printable in UTF-8, attachments always
 *    base64: the message is 7-bit whatever the app sent, so any server
 *    takes it without 8BITMIME, no line is over 76 characters, and no
 *    encoded line can contain a boundary (ours start "=_", which neither
 *    encoding ever produces).
 *  - Text that headers cannot carry as it is (bytes over 0x7f, control
 *    bytes, "=?", or over 900 bytes) becomes RFC 2047 encoded-words, split
 *    on character boundaries.
 *  - An attachment with a Content-ID is an inline part of a
 *    multipart/related around the body, which is how an HTML body's
 *    "cid:" references find it; the rest are attachments of a
 *    multipart/mixed around that.
 *  - The Content-Type of an attachment comes from its file name's
 *    extension (a short table); anything else is application/octet-stream.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "apiserver/services/mail.h"
#include "common/mimeword.h"
#include "common/xalloc.h"

/* A growing buffer. */
struct mbuf {
    char *p;
    size_t len, cap;
};

static void put(struct mbuf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = af_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct mbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct mbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        put(b, tmp, (size_t)n);
        return;
    }
    char *big = af_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    put(b, big, (size_t)n);
    free(big);
}

/* ---- encodings ------------------------------------------------------------ */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of n bytes, without line breaks. */
static void put_base64(struct mbuf *b, const uint8_t *s, size_t n)
{
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        out[0] = b64_alphabet[v >> 18 & 63];
        out[1] = b64_alphabet[v >> 12 & 63];
        out[2] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
        out[3] = i + 2 < n ? b64_alphabet[v & 63] : '=';
        put(b, out, 4);
    }
}

/* Base64 in lines of 76 characters (RFC 2045 section 6.8). */
static void put_base64_lines(struct mbuf *b, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i += 57) {
        put_base64(b, s + i, n - i < 57 ? n - i : 57);
        put(b, "\r\n", 2);
    }
}

/* Quoted-printable (RFC 2045 section 6.7): line breaks of any kind (LF,
 * CRLF, CR) become CRLF; lines are at most 76 characters, soft breaks
 * included; whitespace before a line end is encoded. */
static void put_qp(struct mbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            if (*p == '\r' && p[1] == '\n')
                p++;
            put(b, "\r\n", 2);
            col = 0;
            continue;
        }
        char enc[3];
        size_t n;
        bool at_eol = p[1] == '\0' || p[1] == '\r' || p[1] == '\n';
        if ((*p >= 33 && *p <= 126 && *p != '=') || ((*p == ' ' || *p == '\t') && !at_eol)) {
            enc[0] = (char)*p;
            n = 1;
        } else {
            enc[0] = '=';
            enc[1] = hex[*p >> 4];
            enc[2] = hex[*p & 15];
            n = 3;
        }
        /* Room for this and a soft break "=" within 76. */
        if (col + n > 75) {
            put(b, "=\r\n", 3);
            col = 0;
        }
        put(b, enc, n);
        col += n;
    }
    if (col > 0)
        put(b, "\r\n", 2);
}

/* RFC 2047 encoded-words for n bytes of UTF-8 (common/mimeword.h). */
static void put_encoded_words(struct mbuf *b, const char *s, size_t n)
{
    char *w = af_mime_encoded_words(s, n);
    puts_(b, w);
    free(w);
}

/* Unstructured header text (Subject, an extra header's value). */
static void put_text(struct mbuf *b, const char *s)
{
    char *t = af_mime_header_text(s);
    puts_(b, t);
    free(t);
}

/* ---- addresses ------------------------------------------------------------ */

const char *mail_angle_open(const char *addr, size_t n)
{
    const char *lt = NULL;
    bool quoted = false;
    for (size_t i = 0; i + 1 < n; i++) {
        if (addr[i] == '"' && (i == 0 || addr[i - 1] != '\\'))
            quoted = !quoted;
        else if (addr[i] == '<' && !quoted)
            lt = addr + i;
    }
    return lt;
}

const char *mail_addr_spec(const char *addr, size_t *len)
{
    size_t n = strlen(addr);
    while (n > 0 && (addr[n - 1] == ' ' || addr[n - 1] == '\t'))
        n--;
    while (n > 0 && (*addr == ' ' || *addr == '\t')) {
        addr++;
        n--;
    }
    if (n > 0 && addr[n - 1] == '>') {
        /* mail.c checked the form. */
        const char *lt = mail_angle_open(addr, n);
        if (lt) {
            *len = (size_t)(addr + n - 1 - (lt + 1));
            return lt + 1;
        }
    }
    *len = n;
    return addr;
}

/* One address for a header: as written, except that a display name with
 * bytes over 0x7f becomes encoded-words (its quotes and escapes undone). */
static void put_address(struct mbuf *b, const char *addr)
{
    size_t speclen;
    const char *spec = mail_addr_spec(addr, &speclen);
    const char *name = addr;
    while (*name == ' ' || *name == '\t')
        name++;
    size_t namelen = spec > name + 1 ? (size_t)(spec - 1 - name) : 0; /* up to the '<' */
    while (namelen > 0 && (name[namelen - 1] == ' ' || name[namelen - 1] == '\t'))
        namelen--;
    bool high = false;
    for (size_t i = 0; i < namelen; i++)
        high |= (unsigned char)name[i] >= 0x80;
    if (!high) {
        size_t n = strlen(name);
        while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
            n--;
        put(b, name, n);
        return;
    }
    char *plain = af_xmalloc(namelen + 1);
    size_t o = 0;
    bool quoted = namelen >= 2 && name[0] == '"' && name[namelen - 1] == '"';
    for (size_t i = quoted ? 1 : 0; i < (quoted ? namelen - 1 : namelen); i++) {
        if (quoted && name[i] == '\\' && i + 1 < namelen - 1)
            i++;
        plain[o++] = name[i];
    }
    put_encoded_words(b, plain, o);
    free(plain);
    put(b, " <", 2);
    put(b, spec, speclen);
    put(b, ">", 1);
}

/* "Name: a, b, c", one address per line after the first. */
static void put_address_field(struct mbuf *b, const char *field, char **list, size_t n)
{
    if (n == 0)
        return;
    putf(b, "%s: ", field);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            put(b, ",\r\n ", 4);
        put_address(b, list[i]);
    }
    put(b, "\r\n", 2);
}

/* ---- parts ------------------------------------------------------------------ */

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"txt", "text/plain"},       {"text", "text/plain"},      {"log", "text/plain"},
    {"html", "text/html"},       {"htm", "text/html"},        {"css", "text/css"},
    {"csv", "text/csv"},         {"ics", "text/calendar"},    {"vcf", "text/directory"},
    {"xml", "text/xml"},         {"json", "application/json"}, {"pdf", "application/pdf"},
    {"zip", "application/zip"},  {"gz", "application/gzip"},  {"png", "image/png"},
    {"jpg", "image/jpeg"},       {"jpeg", "image/jpeg"},      {"jpe", "image/jpeg"},
    {"gif", "image/gif"},        {"bmp", "image/bmp"},        {"ico", "image/vnd.microsoft.icon"},
    {"tif", "image/tiff"},       {"tiff", "image/tiff"},      {"webp", "image/webp"},
    {"svg", "image/svg+xml"},    {"mp3", "audio/mpeg"},       {"wav", "audio/x-wav"},
    {"ogg", "audio/ogg"},        {"mp4", "video/mp4"},        {"mpeg", "video/mpeg"},
    {"webm", "video/webm"},      {"doc", "application/msword"}, {"rtf", "application/rtf"},
    {"odt", "application/vnd.oasis.opendocument.text"},
    {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
    {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
};

static const char *content_type_of(const char *filename)
{
    const char *dot = strrchr(filename, '.');
    if (dot)
        for (size_t i = 0; i < sizeof(content_types) / sizeof(content_types[0]); i++)
            if (strcasecmp(dot + 1, content_types[i].ext) == 0)
                return content_types[i].type;
    return "application/octet-stream";
}

/* '; NAME="value"' when value is plain ASCII without quotes or
 * backslashes, else RFC 2231's '; NAME*=utf-8''percent-encoded'. */
static void put_param(struct mbuf *b, const char *name, const char *value)
{
    bool plain = strlen(value) < 200;
    for (const unsigned char *p = (const unsigned char *)value; *p && plain; p++)
        plain = *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\';
    if (plain) {
        putf(b, "; %s=\"%s\"", name, value);
        return;
    }
    putf(b, ";\r\n %s*=utf-8''", name);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("!#$&+-.^_`|~", *p))
            put(b, p, 1);
        else
            putf(b, "%%%02X", *p);
    }
}

static void put_text_part(struct mbuf *b, const char *subtype, const char *text)
{
    putf(b,
         "Content-Type: text/%s; charset=\"utf-8\"\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
         subtype);
    put_qp(b, text);
}

static void put_attachment(struct mbuf *b, const Af__Mail__MailAttachment *a)
{
    putf(b, "Content-Type: %s", content_type_of(a->filename));
    put_param(b, "name", a->filename);
    puts_(b, a->contentid ? "\r\nContent-Disposition: inline" : "\r\nContent-Disposition: attachment");
    put_param(b, "filename", a->filename);
    puts_(b, "\r\nContent-Transfer-Encoding: base64\r\n");
    if (a->contentid)
        putf(b, "Content-ID: %s\r\n", a->contentid);
    put(b, "\r\n", 2);
    put_base64_lines(b, a->data.data, a->data.len);
}

/* The layers of the content, outermost first. */
enum layer {
    L_MIXED,       /* the body (or related) and the plain attachments */
    L_RELATED,     /* the body and the inline (Content-ID) attachments */
    L_ALTERNATIVE, /* text and HTML */
};

static bool has_text(const Af__Mail__MailMessage *m)
{
    return m->textbody && m->textbody[0];
}

static bool has_html(const Af__Mail__MailMessage *m)
{
    return m->htmlbody && m->htmlbody[0];
}

static size_t count_inline(const Af__Mail__MailMessage *m, bool inline_ones)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_attachment; i++)
        n += (m->attachment[i]->contentid != NULL) == inline_ones;
    return n;
}

/* The entity for layer (or the next one that applies): its header fields,
 * a blank line, its content. */
static void put_entity(struct mbuf *b, const Af__Mail__MailMessage *m, enum layer layer,
                       uint64_t seed)
{
    if (layer == L_MIXED && count_inline(m, false) == 0)
        layer = L_RELATED;
    if (layer == L_RELATED && count_inline(m, true) == 0)
        layer = L_ALTERNATIVE;
    if (layer == L_ALTERNATIVE && !(has_text(m) && has_html(m))) {
        put_text_part(b, has_html(m) ? "html" : "plain", has_html(m) ? m->htmlbody : m->textbody);
        return;
    }
    static const char *const subtypes[] = {"mixed", "related", "alternative"};
    char boundary[48];
    snprintf(boundary, sizeof(boundary), "=_af_%016llx_%d", (unsigned long long)seed, (int)layer);
    putf(b, "Content-Type: multipart/%s; boundary=\"%s\"\r\n\r\n", subtypes[layer], boundary);
    puts_(b, "This is a message in MIME format.\r\n");
    putf(b, "\r\n--%s\r\n", boundary);
    if (layer == L_ALTERNATIVE) {
        /* Plainest first (RFC 2046 section 5.1.4). */
        put_text_part(b, "plain", m->textbody);
        putf(b, "\r\n--%s\r\n", boundary);
        put_text_part(b, "html", m->htmlbody);
    } else {
        put_entity(b, m, layer + 1, seed);
        for (size_t i = 0; i < m->n_attachment; i++) {
            const Af__Mail__MailAttachment *a = m->attachment[i];
            if ((a->contentid != NULL) != (layer == L_RELATED))
                continue;
            putf(b, "\r\n--%s\r\n", boundary);
            put_attachment(b, a);
        }
    }
    putf(b, "\r\n--%s--\r\n", boundary);
}

/* ---- the message ------------------------------------------------------------ */

/* RFC 5322 section 3.3, in UTC, without the locale's names. */
static void put_date(struct mbuf *b, int64_t now)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    putf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
         months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

char *mail_mime_build(const Af__Mail__MailMessage *m, int64_t now, uint64_t id_seed, size_t *len)
{
    struct mbuf b = {0};
    puts_(&b, "From: ");
    put_address(&b, m->sender);
    put(&b, "\r\n", 2);
    put_address_field(&b, "To", m->to, m->n_to);
    put_address_field(&b, "Cc", m->cc, m->n_cc);
    if (m->replyto && m->replyto[0]) {
        puts_(&b, "Reply-To: ");
        put_address(&b, m->replyto);
        put(&b, "\r\n", 2);
    }
    puts_(&b, "Subject: ");
    put_text(&b, m->subject);
    put(&b, "\r\n", 2);
    put_date(&b, now);
    /* The sender's domain on the right, as RFC 5322 section 3.6.4 suggests. */
    size_t speclen;
    const char *spec = mail_addr_spec(m->sender, &speclen);
    const char *at = memrchr(spec, '@', speclen);
    putf(&b, "Message-ID: <%016llx.%lld@%.*s>\r\n", (unsigned long long)id_seed, (long long)now,
         at ? (int)(spec + speclen - at - 1) : 9, at ? at + 1 : "localhost");
    for (size_t i = 0; i < m->n_header; i++) {
        putf(&b, "%s: ", m->header[i]->name);
        put_text(&b, m->header[i]->value);
        put(&b, "\r\n", 2);
    }
    puts_(&b, "MIME-Version: 1.0\r\n");
    put_entity(&b, m, L_MIXED, id_seed);
    *len = b.len;
    return b.p;
}
