/* pct — percent-decoding; see pct.h. */
#include "common/pct.h"

int af_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20; /* 'A'-'F' to 'a'-'f'; nothing else becomes a hex letter */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t af_pct_decode(const char *s, size_t n, char *out, unsigned flags)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? af_hex_digit((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? af_hex_digit((unsigned char)s[i + 2]) : -1;
            if (lo >= 0) {
                ch = (unsigned char)(hi << 4 | lo);
                i += 2;
            } else if (!(flags & AF_PCT_KEEP_BAD)) {
                return -1;
            }
        } else if (ch == '+' && (flags & AF_PCT_PLUS_SPACE)) {
            ch = ' ';
        }
        if (ch == '\0' && (flags & AF_PCT_NO_NUL))
            return -1;
        out[o++] = (char)ch;
    }
    return (ssize_t)o;
}
