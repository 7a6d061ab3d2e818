#include "ig_framing.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static int fail(const char **why, const char *reason)
{
    *why = reason;
    return -EINVAL;
}

/* a request-target byte of origin-form: visible ASCII, no space */
static int is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '#';
}

/* a Host value: reg-name or IP literal, optional port; nothing that changes its meaning */
static int valid_host(const char *v, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~%!$&'()*+,;=:[]", c)))
            return 0;
    }
    return 1;
}

int ig_framing_field_ok(const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (!nlen)
        return 0;
    for (size_t i = 0; i < nlen; i++)
        if (!ig_tchar((unsigned char)name[i]))
            return 0;
    for (size_t i = 0; i < vlen; i++)
        if (!ig_field_vchar((unsigned char)value[i]))
            return 0;
    return 1;
}

int ig_framing_field_line(const char *line, size_t n, size_t *name_len, const char **value, size_t *vlen,
                          const char **why)
{
    if (n && (line[0] == ' ' || line[0] == '\t'))
        return fail(why, "obsolete line folding is not accepted");
    size_t k = 0;
    while (k < n && ig_tchar((unsigned char)line[k]))
        k++;
    if (k == 0 || k >= n || line[k] != ':')
        return fail(why, k < n && (line[k] == ' ' || line[k] == '\t') ? "whitespace before a header's colon"
                                                                      : "invalid header name");
    const char *v = line + k + 1, *ve = line + n;
    for (const char *q = v; q < ve; q++)
        if (!ig_field_vchar((unsigned char)*q))
            return fail(why, "invalid byte in a header value");
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    *name_len = k;
    *value = v;
    *vlen = (size_t)(ve - v);
    return 0;
}

static int name_is(const char *n, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(n, want, len) == 0;
}

size_t ig_framing_head_len(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int check_request_line(const char *p, size_t n, int *http10, const char **why)
{
    size_t i = 0;
    while (i < n && ig_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return fail(why, "malformed request line");
    if (i == 7 && memcmp(p, "CONNECT", 7) == 0)
        return fail(why, "CONNECT is not supported");
    i++;
    if (i >= n || p[i] != '/')
        return fail(why, "only origin-form request targets (starting with '/') are accepted");
    size_t t = i;
    while (i < n && is_target_char((unsigned char)p[i]))
        i++;
    if (i == t || i >= n || p[i] != ' ')
        return fail(why, "malformed request target");
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '0' && p[i + 7] != '1'))
        return fail(why, "only HTTP/1.0 and HTTP/1.1 are accepted");
    *http10 = p[i + 7] == '0';
    return 0;
}

int ig_framing_check_head(const char *head, size_t len, const char **why)
{
    /* line ends: CRLF only */
    for (size_t i = 0; i < len; i++) {
        if (head[i] == '\r' && (i + 1 == len || head[i + 1] != '\n'))
            return fail(why, "bare CR in the request head");
        if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r'))
            return fail(why, "bare LF in the request head");
    }
    const char *end = head + len, *line = head;
    const char *eol = memchr(line, '\r', (size_t)(end - line));
    int http10 = 0, hosts = 0, cls = 0, tes = 0, rc;
    if (!eol || (rc = check_request_line(line, (size_t)(eol - line), &http10, why)))
        return eol ? rc : fail(why, "malformed request line");
    for (line = eol + 2; line < end; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(end - line));
        size_t n = (size_t)(eol - line);
        if (n == 0)
            break; /* the empty line: end of the head */
        size_t k, vn;
        const char *v;
        if ((rc = ig_framing_field_line(line, n, &k, &v, &vn, why)))
            return rc;
        if (name_is(line, k, "host")) {
            hosts++;
            if (!valid_host(v, vn))
                return fail(why, "invalid Host header");
        } else if (name_is(line, k, "content-length")) {
            cls++;
            if (vn == 0 || vn > 18)
                return fail(why, "invalid Content-Length");
            for (size_t q = 0; q < vn; q++)
                if (v[q] < '0' || v[q] > '9')
                    return fail(why, "invalid Content-Length");
        } else if (name_is(line, k, "transfer-encoding")) {
            tes++;
            if (!name_is(v, vn, "chunked"))
                return fail(why, "only 'Transfer-Encoding: chunked' is accepted");
        }
    }
    if (cls > 1)
        return fail(why, "more than one Content-Length");
    if (tes > 1)
        return fail(why, "more than one Transfer-Encoding");
    if (cls && tes)
        return fail(why, "both Content-Length and Transfer-Encoding");
    if (tes && http10)
        return fail(why, "chunked transfer coding is not allowed in HTTP/1.0");
    if (!http10 && hosts != 1)
        return fail(why, hosts ? "more than one Host header" : "an HTTP/1.1 request needs a Host header");
    if (http10 && hosts > 1)
        return fail(why, "more than one Host header");
    return 0;
}

/* SIZE[;ext]CRLF at p; returns the bytes used, 0 when malformed; *size gets the value */
static size_t chunk_line(const char *p, size_t n, unsigned long long *size)
{
    size_t i = 0;
    *size = 0;
    while (i < n && i < 17) {
        char c = p[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            break;
        *size = *size * 16 + (unsigned)v;
        i++;
    }
    if (i == 0 || i > 16)
        return 0;
    while (i < n && p[i] == ';') { /* ;name[=value] */
        size_t k = ++i;
        while (i < n && ig_tchar((unsigned char)p[i]))
            i++;
        if (i == k)
            return 0;
        if (i < n && p[i] == '=') {
            i++;
            if (i < n && p[i] == '"') {
                for (i++; i < n && p[i] != '"'; i++)
                    if (p[i] == '\\' ? ++i >= n : !ig_field_vchar((unsigned char)p[i]))
                        return 0;
                if (i >= n)
                    return 0;
                i++;
            } else {
                k = i;
                while (i < n && ig_tchar((unsigned char)p[i]))
                    i++;
                if (i == k)
                    return 0;
            }
        }
    }
    if (i + 2 > n || p[i] != '\r' || p[i + 1] != '\n')
        return 0;
    return i + 2;
}

int ig_framing_check_chunk(const char *p, size_t n, int first, int last, const char **why)
{
    size_t i = 0;
    unsigned long long size;
    if (!first) {
        if (n < 2 || p[0] != '\r' || p[1] != '\n')
            return fail(why, "chunk data not followed by CRLF");
        i = 2;
    }
    size_t used = chunk_line(p + i, n - i, &size);
    if (!used)
        return fail(why, "malformed chunk size line");
    i += used;
    if (!last)
        return i == n && size > 0 ? 0 : fail(why, "malformed chunk framing");
    if (size != 0 || n - i != 2 || p[i] != '\r' || p[i + 1] != '\n')
        return fail(why, "malformed last chunk (trailer fields are not accepted)");
    return 0;
}
