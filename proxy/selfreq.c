/* selfreq — see selfreq.h. */
#include "proxy/selfreq.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <event2/listener.h>

#include "proxy/server.h"

static char secret[33];
static bool drawn;

const char *af_selfreq_secret(void)
{
    if (!drawn) {
        drawn = true;
        unsigned char raw[16];
        if (getrandom(raw, sizeof(raw), 0) == (ssize_t)sizeof(raw))
            for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(secret + 2 * i, 3, "%02x", raw[i]);
    }
    return secret;
}

bool af_selfreq_secret_is(const char *value, size_t len)
{
    const char *s = af_selfreq_secret();
    if (!s[0] || len != 32)
        return false;
    unsigned char diff = 0;
    for (size_t k = 0; k < 32; k++)
        diff |= (unsigned char)(value[k] ^ s[k]);
    return diff == 0;
}

int af_selfreq_address(const struct af_listener *lst, char *addr, size_t addrlen, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (!lst || !lst->l ||
        getsockname(evconnlistener_get_fd(lst->l), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY))
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)addrlen);
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = in6addr_loopback;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)addrlen);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    return -1;
}
