/*
 * utf8 — validity and safe cuts (see utf8.h).
 */
#include "common/utf8.h"

#include <stdint.h>

bool af_utf8_valid(const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (len > n - i)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

size_t af_utf8_prefix(const char *str, size_t n, size_t max)
{
    const uint8_t *s = (const uint8_t *)str;
    if (n <= max)
        return n;
    size_t cut = max;
    /* Back over continuation bytes to the start of the character the cut
     * falls in; that character is left out whole. */
    while (cut > 0 && (s[cut] & 0xc0) == 0x80)
        cut--;
    return cut;
}
