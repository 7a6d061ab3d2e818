/* Address ranges (CIDR) and who is in them: the admin API's allow-list.
 * Pure; safe from any thread once parsed. */
#ifndef IG_CIDR_H
#define IG_CIDR_H
#include <stdint.h>
#include <sys/socket.h>

typedef struct ig_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; 4 bytes used for AF_INET */
    int bits;         /* prefix length */
} ig_cidr;

/** Parse "a.b.c.d[/n]" or "x:y::z[/n]" (no prefix: a single host).
 * 0 or -EINVAL. */
int ig_cidr_parse(const char *s, ig_cidr *out);
/** 1 when the peer address sa is inside one of the n ranges. An IPv4
 * address mapped into IPv6 (::ffff:a.b.c.d) matches IPv4 ranges. */
int ig_cidr_match(const ig_cidr *ranges, int n, const struct sockaddr *sa);
/** Write the range as text ("127.0.0.0/8"); returns buf. */
const char *ig_cidr_format(const ig_cidr *c, char *buf, size_t len);
#endif
