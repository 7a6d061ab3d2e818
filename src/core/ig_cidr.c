#include "ig_cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ig_cidr_parse(const char *s, ig_cidr *out)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    int max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    out->bits = max;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || b < 0 || b > max)
            return -EINVAL;
        out->bits = (int)b;
    }
    /* keep only the network part, so matching compares whole bytes */
    for (int i = 0; i < max / 8; i++) {
        int keep = out->bits - i * 8;
        out->addr[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
    return 0;
}

static int in_range(const ig_cidr *c, const uint8_t *a)
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    return !rest || ((a[full] ^ c->addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int ig_cidr_match(const ig_cidr *ranges, int n, const struct sockaddr *sa)
{
    const uint8_t *v4 = NULL, *v6 = NULL;
    if (sa->sa_family == AF_INET) {
        v4 = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        v6 = a->s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            v4 = a->s6_addr + 12;
    }
    for (int i = 0; i < n; i++) {
        if (ranges[i].family == AF_INET && v4 && in_range(&ranges[i], v4))
            return 1;
        if (ranges[i].family == AF_INET6 && v6 && in_range(&ranges[i], v6))
            return 1;
    }
    return 0;
}

const char *ig_cidr_format(const ig_cidr *c, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(c->family, c->addr, a, sizeof(a));
    snprintf(buf, len, "%s/%d", a, c->bits);
    return buf;
}
