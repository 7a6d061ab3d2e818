/* libFuzzer driver: the worker side, as the proxy drives it. The first byte
 * picks the request method (bit 0: HEAD) and a read size (bits 1-7: 1 to
 * 127 bytes, 0: everything at once); the rest is what a worker sends on one
 * kept-alive connection, responses back to back. Besides memory errors it
 * checks what the proxy relies on:
 *   - every forwarded run lies inside the bytes just read;
 *   - the same bytes give the same verdict and the same output whether they
 *     arrive at once or in pieces;
 *   - what is forwarded raw for a chunked body parses again, strictly, to the
 *     same data as de-chunking gives, and carries no trailer fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/http/ig_h1resp.h"

#define OUT_MAX (1 << 16)

typedef struct run_out {
    int rc; /* 1 done, 0 needs more, -1 refused */
    int body;
    size_t used; /* input consumed by the first response */
    size_t outlen;
    char out[OUT_MAX];
} run_out;

static void check(int ok)
{
    if (!ok)
        abort();
}

/* One response from d[0..n), fed step bytes at a time (0: at once). */
static void run(const char *d, size_t n, int head_request, int dechunk, size_t step, run_out *o)
{
    static ig_hdr hdrs[IG_MAX_HEADERS];
    static char head[1 << 16];
    ig_h1resp r;
    size_t hlen = 0, pos = 0;
    int nh, in_head = 1;
    const char *why;
    ig_h1resp_init(&r);
    o->rc = 0;
    o->outlen = 0;
    o->body = -1;
    while (pos < n) {
        size_t len = step && n - pos > step ? step : n - pos;
        const char *p = d + pos;
        size_t i = 0;
        while (i < len) {
            if (in_head) {
                size_t e = ig_h1resp_head_scan(&r, p + i, len - i);
                size_t take = e ? e : len - i;
                if (hlen + take > sizeof(head)) {
                    o->rc = -1;
                    return;
                }
                memcpy(head + hlen, p + i, take);
                hlen += take;
                i += take;
                if (!e)
                    continue;
                if (ig_h1resp_head(&r, head, hlen, head_request, hdrs, IG_MAX_HEADERS, &nh, &why)) {
                    check(why != NULL);
                    o->rc = -1;
                    return;
                }
                for (int k = 0; k < nh; k++)
                    check(hdrs[k].name_off + hdrs[k].name_len <= hlen &&
                          hdrs[k].value_off + hdrs[k].value_len <= hlen);
                check(r.reason_off + r.reason_len <= hlen);
                check(r.status >= 100 && r.status <= 599 && r.status != 101);
                hlen = 0;
                if (r.status < 200) {
                    ig_h1resp_init(&r);
                    continue;
                }
                in_head = 0;
                o->body = (int)r.body;
            }
            ig_h1span sp[8];
            int ns;
            size_t used;
            int rc = ig_h1resp_body(&r, p + i, len - i, dechunk, sp, 8, &ns, &used, &why);
            if (rc < 0) {
                check(why != NULL);
                o->rc = -1;
                return;
            }
            check(used <= len - i && ns >= 0 && ns <= 8);
            for (int k = 0; k < ns; k++) {
                check(sp[k].p >= p + i && sp[k].p + sp[k].n <= p + i + used && sp[k].n > 0);
                size_t take = sp[k].n < OUT_MAX - o->outlen ? sp[k].n : OUT_MAX - o->outlen;
                memcpy(o->out + o->outlen, sp[k].p, take);
                o->outlen += take;
            }
            i += used;
            if (rc == 1) {
                o->rc = 1;
                o->used = pos + i;
                return;
            }
            check(used > 0 || ns > 0 || i == len);
            if (used == 0 && ns == 0)
                break;
        }
        pos += len;
    }
    if (!in_head && ig_h1resp_eof(&r))
        o->rc = 1, o->used = n;
}

static run_out a, b, c;

/* The line before the final CRLF of a raw chunked body is the last chunk
 * (hex digits, then its end or extensions), never a trailer field. */
static int ends_without_trailer(const char *p, size_t n)
{
    if (n < 5 || memcmp(p + n - 4, "\r\n\r\n", 4) != 0)
        return 0;
    size_t e = n - 4, s = e;
    while (s > 0 && p[s - 1] != '\n')
        s--;
    size_t i = s;
    while (i < e && strchr("0123456789abcdefABCDEF", p[i]))
        i++;
    return i > s && (i == e || p[i] == ';');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int head_request = data[0] & 1;
    size_t step = data[0] >> 1;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    /* up to three responses back to back, as on one kept-alive connection */
    for (int resp = 0; resp < 3 && n; resp++) {
        run(d, n, head_request, 0, 0, &a);
        run(d, n, head_request, 0, step, &b);
        check(a.rc == b.rc);
        if (a.rc >= 0) {
            check(a.outlen == b.outlen && memcmp(a.out, b.out, a.outlen) == 0);
            check(a.rc == 0 || a.used == b.used);
        }
        run(d, n, head_request, 1, step, &b); /* de-chunked */
        check(a.rc == b.rc);
        if (a.rc == 1 && a.body == IG_H1R_CHUNKED && a.outlen < OUT_MAX) {
            /* the raw output is a well-framed chunked body with the same data */
            static char again[OUT_MAX + 64];
            static const char hd[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            memcpy(again, hd, sizeof(hd) - 1);
            memcpy(again + sizeof(hd) - 1, a.out, a.outlen);
            run(again, sizeof(hd) - 1 + a.outlen, 0, 1, 0, &c);
            check(c.rc == 1 && c.used == sizeof(hd) - 1 + a.outlen);
            check(c.outlen == b.outlen && memcmp(c.out, b.out, c.outlen) == 0);
            check(ends_without_trailer(a.out, a.outlen));
        }
        if (a.rc != 1 || a.used == 0 || a.used >= n)
            break;
        d += a.used;
        n -= a.used;
    }
    return 0;
}
