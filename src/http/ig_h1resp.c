#include "ig_h1resp.h"

#include <errno.h>
#include <string.h>

#include "ig_framing.h"

/* body states; framing bytes are walked one at a time, data is skipped by count */
enum {
    B_SIZE0,    /* the first hex digit of a chunk size */
    B_SIZE,     /* more hex digits, ';' or CR */
    B_EXT0,     /* after ';': an extension name */
    B_EXT,      /* in the name: more, '=', ';' or CR */
    B_EXTV0,    /* after '=': a token or a quoted string */
    B_EXTV,     /* in a token value */
    B_EXTQ,     /* in a quoted value */
    B_EXTQE,    /* after a backslash in one */
    B_EXTQ_END, /* after its closing quote: ';' or CR */
    B_SIZE_LF,  /* the LF of the size line */
    B_DATA,     /* chunk data */
    B_DATA_CR,  /* the CRLF after it */
    B_DATA_LF,
    B_TR,       /* after the last chunk: a trailer field or the final CRLF */
    B_TR_NAME,  /* a trailer field's name */
    B_TR_VALUE, /* its value */
    B_TR_LF,    /* the LF ending a trailer field */
    B_END_LF,   /* the LF of the final CRLF */
    B_LENGTH,   /* Content-Length bytes */
    B_CLOSE,    /* everything until the close */
    B_DONE,
};

static int fail(const char **why, const char *reason)
{
    *why = reason;
    return -EINVAL;
}

static int lower_is(const char *p, size_t n, const char *lower)
{
    size_t i = 0;
    for (; i < n && lower[i]; i++)
        if ((p[i] | 0x20) != lower[i])
            return 0;
    return i == n && !lower[i];
}

void ig_h1resp_init(ig_h1resp *r)
{
    memset(r, 0, sizeof(*r));
}

size_t ig_h1resp_head_scan(ig_h1resp *r, const char *p, size_t n)
{
    /* scan: 0 anywhere, 1 just after LF, 2 after LF CR */
    for (size_t i = 0; i < n; i++) {
        if (r->scan == 0) {
            const char *lf = memchr(p + i, '\n', n - i);
            if (!lf)
                return 0;
            i = (size_t)(lf - p);
            r->scan = 1;
            continue;
        }
        if (p[i] == '\n') {
            r->scan = 0;
            return i + 1;
        }
        r->scan = r->scan == 1 && p[i] == '\r' ? 2 : 0;
        if (r->scan == 0)
            i--; /* look at this byte again from the start state */
    }
    return 0;
}

static int status_line(ig_h1resp *r, const char *p, size_t n, const char **why)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return fail(why, "malformed status line");
    r->http10 = p[7] == '0';
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return fail(why, "malformed status code");
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (r->status < 100 || r->status > 599)
        return fail(why, "status code out of range");
    if (r->status == 101)
        return fail(why, "unsolicited 101 Switching Protocols");
    r->reason_off = r->reason_len = 0;
    if (n == 12)
        return 0;
    if (p[12] != ' ')
        return fail(why, "malformed status line");
    for (size_t i = 13; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(why, "control byte in the reason phrase");
    }
    r->reason_off = 13;
    r->reason_len = (uint32_t)(n - 13);
    return 0;
}

/* a Content-Length value: 1 to 18 digits, nothing else (no lists, no sign) */
static int length_value(const char *v, size_t n, uint64_t *len)
{
    if (n == 0 || n > 18)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *len = x;
    return 0;
}

int ig_h1resp_head(ig_h1resp *r, const char *buf, size_t len, int head_request, ig_hdr *hdrs, int max,
                   int *nhdrs, const char **why)
{
    int cls = 0, tes = 0, close = 0, rc;
    *nhdrs = 0;
    /* line ends: CRLF only, whatever a lenient parser downstream would make of the rest */
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r' && (i + 1 == len || buf[i + 1] != '\n'))
            return fail(why, "bare CR in the response head");
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
            return fail(why, "bare LF in the response head");
    }
    if (len < 4 || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0)
        return fail(why, "malformed response head");
    const char *end = buf + len - 2, *line = buf;
    /* every CR is followed by LF (above), so each line below end has its CR before end */
    const char *eol = memchr(line, '\r', (size_t)(end - line));
    if (!eol)
        return fail(why, "malformed status line");
    if ((rc = status_line(r, line, (size_t)(eol - line), why)))
        return rc;
    for (line = eol + 2; line < end; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(end - line));
        size_t k, vn;
        const char *v;
        if ((rc = ig_framing_field_line(line, (size_t)(eol - line), &k, &v, &vn, why)))
            return rc;
        const char *ve = v + vn;
        if (*nhdrs == max) {
            *why = "too many response headers";
            return -E2BIG;
        }
        ig_hdr *h = &hdrs[(*nhdrs)++];
        h->name_off = (uint32_t)(line - buf);
        h->name_len = (uint32_t)k;
        h->value_off = (uint32_t)(v - buf);
        h->value_len = (uint32_t)(ve - v);
        switch (ig_http_header_kind(line, k)) {
        case IG_H_CONTENT_LENGTH:
            if (++cls > 1)
                return fail(why, "more than one Content-Length in the response");
            if (length_value(v, (size_t)(ve - v), &r->length))
                return fail(why, "invalid Content-Length in the response");
            r->has_length = 1;
            break;
        case IG_H_TRANSFER_ENCODING:
            if (++tes > 1)
                return fail(why, "more than one Transfer-Encoding in the response");
            /* any other coding would be dropped with the header (hop-by-hop) and
             * the body handed on still encoded: refuse rather than corrupt it */
            if (!lower_is(v, (size_t)(ve - v), "chunked"))
                return fail(why, "a response transfer coding other than chunked");
            break;
        case IG_H_CONNECTION:
            if (ig_http_list_has(v, (size_t)(ve - v), "close", 5))
                close = 1;
            break;
        default: break;
        }
    }
    if (cls && tes)
        return fail(why, "both Content-Length and Transfer-Encoding in the response");
    if (tes && r->http10)
        return fail(why, "chunked transfer coding in an HTTP/1.0 response");
    /* a 1.0 worker's keep-alive is an extension nobody needs here: close */
    r->keep_alive = !r->http10 && !close;
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304) {
        /* never a body, whatever the head says; a worker that framed one anyway
         * may send its bytes next, so its connection goes (HEAD and 304 may
         * state the length the body would have had) */
        r->body = IG_H1R_NONE;
        r->suspect = tes || (r->has_length && r->length && (r->status < 200 || r->status == 204)) ||
                     (r->status < 200 && r->has_length);
        r->st = B_DONE;
    } else if (tes) {
        r->body = IG_H1R_CHUNKED;
        r->st = B_SIZE0;
    } else if (cls) {
        r->body = IG_H1R_LENGTH;
        r->left = r->length;
        r->st = r->length ? B_LENGTH : B_DONE;
    } else {
        r->body = IG_H1R_CLOSE;
        r->keep_alive = 0;
        r->st = B_CLOSE;
    }
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Add p[a..b) to the output, merged with the previous run when adjacent. */
static void emit(ig_h1span *out, int *nout, const char *a, const char *b)
{
    if (a == b)
        return;
    if (*nout && out[*nout - 1].p + out[*nout - 1].n == a) {
        out[*nout - 1].n += (size_t)(b - a);
        return;
    }
    out[*nout].p = a;
    out[*nout].n = (size_t)(b - a);
    (*nout)++;
}

int ig_h1resp_body(ig_h1resp *r, const char *p, size_t n, int dechunk, ig_h1span *out, int max, int *nout,
                   size_t *used, const char **why)
{
    size_t i = 0;
    /* raw mode: the run being forwarded starts here (NULL: inside dropped trailer bytes) */
    const char *run = dechunk || (r->st >= B_TR_NAME && r->st <= B_TR_LF) ? NULL : p;
    int rc = 0;
    *nout = 0;
    if (r->st == B_LENGTH) {
        size_t take = r->left < n ? (size_t)r->left : n;
        emit(out, nout, p, p + take);
        r->left -= take;
        *used = take;
        if (r->left)
            return 0;
        r->st = B_DONE;
        return 1;
    }
    if (r->st == B_CLOSE) {
        emit(out, nout, p, p + n);
        *used = n;
        return 0;
    }
    while (i < n && r->st != B_DONE) {
        char c = p[i];
        int v;
        if (r->st <= B_SIZE_LF && ++r->line > IG_H1R_MAX_LINE) {
            rc = fail(why, "chunk size line too long");
            goto out;
        }
        switch (r->st) {
        case B_SIZE0:
        case B_SIZE:
            if ((v = hexval(c)) >= 0) {
                if (r->line > 16) {
                    rc = fail(why, "chunk size too large");
                    goto out;
                }
                r->left = r->left * 16 + (uint64_t)v;
                r->st = B_SIZE;
            } else if (r->st == B_SIZE && c == ';') {
                r->st = B_EXT0;
            } else if (r->st == B_SIZE && c == '\r') {
                r->st = B_SIZE_LF;
            } else {
                rc = fail(why, "malformed chunk size");
                goto out;
            }
            break;
        case B_EXT0:
        case B_EXT:
            if (ig_tchar((unsigned char)c))
                r->st = B_EXT;
            else if (r->st == B_EXT && (c == ';' || c == '=' || c == '\r'))
                r->st = c == ';' ? B_EXT0 : c == '=' ? B_EXTV0 : B_SIZE_LF;
            else {
                rc = fail(why, "malformed chunk extension");
                goto out;
            }
            break;
        case B_EXTV0:
        case B_EXTV:
            if (ig_tchar((unsigned char)c))
                r->st = B_EXTV;
            else if (r->st == B_EXTV0 && c == '"')
                r->st = B_EXTQ;
            else if (r->st == B_EXTV && (c == ';' || c == '\r'))
                r->st = c == ';' ? B_EXT0 : B_SIZE_LF;
            else {
                rc = fail(why, "malformed chunk extension");
                goto out;
            }
            break;
        case B_EXTQ:
            if (c == '"')
                r->st = B_EXTQ_END;
            else if (c == '\\')
                r->st = B_EXTQE;
            else if (!ig_field_vchar((unsigned char)c)) {
                rc = fail(why, "control byte in a chunk extension");
                goto out;
            }
            break;
        case B_EXTQ_END:
            if (c != ';' && c != '\r') {
                rc = fail(why, "malformed chunk extension");
                goto out;
            }
            r->st = c == ';' ? B_EXT0 : B_SIZE_LF;
            break;
        case B_EXTQE:
            if (!ig_field_vchar((unsigned char)c)) {
                rc = fail(why, "control byte in a chunk extension");
                goto out;
            }
            r->st = B_EXTQ;
            break;
        case B_SIZE_LF:
            if (c != '\n') {
                rc = fail(why, "bare CR in a chunk size line");
                goto out;
            }
            r->line = 0;
            if (r->left == 0) {
                r->st = B_TR;
                break;
            }
            if (dechunk && *nout == max) {
                i++; /* the line is done; the data starts the next call */
                r->st = B_DATA;
                goto out;
            }
            r->st = B_DATA;
            break;
        case B_DATA: {
            size_t take = r->left < n - i ? (size_t)r->left : n - i;
            if (dechunk)
                emit(out, nout, p + i, p + i + take);
            r->left -= take;
            i += take;
            if (!r->left)
                r->st = B_DATA_CR;
            continue;
        }
        case B_DATA_CR:
        case B_DATA_LF:
            if (c != (r->st == B_DATA_CR ? '\r' : '\n')) {
                rc = fail(why, "chunk data not followed by CRLF");
                goto out;
            }
            r->st = r->st == B_DATA_CR ? B_DATA_LF : B_SIZE0;
            break;
        case B_TR:
            if (c == '\r') {
                if (!dechunk && !run)
                    run = p + i; /* the final CRLF goes out after the dropped fields */
                r->st = B_END_LF;
                break;
            }
            if (!ig_tchar((unsigned char)c)) {
                rc = fail(why, "malformed trailer field");
                goto out;
            }
            if (run) {
                emit(out, nout, run, p + i);
                run = NULL;
            }
            r->st = B_TR_NAME;
            break;
        case B_TR_NAME:
            if (c == ':')
                r->st = B_TR_VALUE;
            else if (!ig_tchar((unsigned char)c)) {
                rc = fail(why, "malformed trailer field");
                goto out;
            }
            break;
        case B_TR_VALUE:
            if (c == '\r')
                r->st = B_TR_LF;
            else if (!ig_field_vchar((unsigned char)c)) {
                rc = fail(why, "invalid byte in a trailer field");
                goto out;
            }
            break;
        case B_TR_LF:
        case B_END_LF:
            if (c != '\n') {
                rc = fail(why, "bare CR in the trailer section");
                goto out;
            }
            r->st = r->st == B_TR_LF ? B_TR : B_DONE;
            break;
        }
        if (r->st >= B_TR && r->st <= B_TR_LF && ++r->trailer > IG_H1R_MAX_TRAILER) {
            rc = fail(why, "trailer section too large");
            goto out;
        }
        i++;
    }
out:
    if (rc)
        return rc;
    if (run && !dechunk)
        emit(out, nout, run, p + i);
    *used = i;
    return r->st == B_DONE;
}

int ig_h1resp_eof(const ig_h1resp *r)
{
    return r->st == B_CLOSE || r->st == B_DONE;
}

int ig_h1resp_done(const ig_h1resp *r)
{
    return r->st == B_DONE;
}
