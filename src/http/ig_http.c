#include "ig_http.h"

#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <string.h>

int ig_http_name_is(const char *name, size_t len, const char *lower)
{
    size_t i = 0;
    for (; i < len; i++) {
        if (!lower[i] || (char)tolower((unsigned char)name[i]) != lower[i])
            return 0;
    }
    return lower[i] == '\0';
}

ig_hkind ig_http_header_kind(const char *n, size_t len)
{
#define IS(lit) (strncasecmp(n, lit, len) == 0)
    switch (len) {
    case 2: return IS("te") ? IG_H_HOP : IG_H_OTHER;
    case 4: return IS("host") ? IG_H_HOST : IG_H_OTHER;
    case 6: return IS("expect") ? IG_H_EXPECT : IG_H_OTHER;
    case 7: return IS("trailer") || IS("upgrade") ? IG_H_HOP : IG_H_OTHER;
    case 10:
        if ((n[0] | 0x20) == 'c')
            return IS("connection") ? IG_H_CONNECTION : IG_H_OTHER;
        return IS("keep-alive") ? IG_H_HOP : IG_H_OTHER;
    case 9:
        if (IS("x-user-id"))
            return IG_H_ROUTING_KEY;
        return IS("forwarded") || IS("x-real-ip") ? IG_H_FORWARDED : IG_H_OTHER;
    case 15: return IS("x-forwarded-for") ? IG_H_FORWARDED : IG_H_OTHER;
    case 12:
        if (IS("x-session-id"))
            return IG_H_ROUTING_KEY;
        return IS("x-request-id") ? IG_H_REQUEST_ID : IG_H_OTHER;
    case 13: return IS("authorization") ? IG_H_AUTHORIZATION : IG_H_OTHER;
    case 14: return IS("content-length") ? IG_H_CONTENT_LENGTH : IG_H_OTHER;
    case 16:
        if ((n[0] | 0x20) == 'x')
            return IS("x-weight-version") ? IG_H_WEIGHT_VERSION : IG_H_OTHER;
        return IS("proxy-connection") ? IG_H_HOP : IG_H_OTHER;
    case 17:
        if (IS("x-smg-routing-key"))
            return IG_H_ROUTING_KEY;
        return IS("transfer-encoding") ? IG_H_TRANSFER_ENCODING : IG_H_OTHER;
    case 18: return IS("proxy-authenticate") ? IG_H_HOP : IG_H_OTHER;
    case 19: return IS("proxy-authorization") ? IG_H_HOP : IG_H_OTHER;
    default: return IG_H_OTHER;
    }
#undef IS
}

int ig_http_list_has(const char *v, size_t vlen, const char *token, size_t tlen)
{
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t b = i;
        while (i < vlen && v[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - b == tlen && strncasecmp(v + b, token, tlen) == 0)
            return 1;
    }
    return 0;
}

/* A header named in any Connection header's token list is hop-by-hop too. */
static int named_by_connection(const char *base, const ig_hdr *hdrs, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (ig_http_name_is(base + hdrs[i].name_off, hdrs[i].name_len, "connection") &&
            ig_http_list_has(base + hdrs[i].value_off, hdrs[i].value_len, name, len))
            return 1;
    return 0;
}

int ig_http_copy_headers(ig_buf *out, const char *base, const ig_hdr *hdrs, int n, unsigned flags)
{
    /* one classification per header; the rare Connection token lists cost a second pass */
    unsigned char kinds[IG_MAX_HEADERS];
    int has_connection = 0;
    if (n > IG_MAX_HEADERS)
        return -E2BIG;
    for (int i = 0; i < n; i++) {
        kinds[i] = (unsigned char)ig_http_header_kind(base + hdrs[i].name_off, hdrs[i].name_len);
        has_connection |= kinds[i] == IG_H_CONNECTION;
    }
    for (int i = 0; i < n; i++) {
        const char *name = base + hdrs[i].name_off;
        size_t len = hdrs[i].name_len;
        switch ((ig_hkind)kinds[i]) {
        case IG_H_HOP:
        case IG_H_CONNECTION:
        case IG_H_TRANSFER_ENCODING: continue;
        case IG_H_HOST:
            if (flags & IG_COPY_DROP_HOST)
                continue;
            break;
        case IG_H_CONTENT_LENGTH:
            if (flags & IG_COPY_DROP_LENGTH)
                continue;
            break;
        case IG_H_EXPECT:
            if (flags & IG_COPY_DROP_EXPECT)
                continue;
            break;
        case IG_H_REQUEST_ID:
            if (flags & IG_COPY_DROP_REQUEST_ID)
                continue;
            break;
        case IG_H_AUTHORIZATION:
            if (flags & IG_COPY_DROP_AUTHORIZATION)
                continue;
            break;
        case IG_H_WEIGHT_VERSION:
            if (flags & IG_COPY_DROP_GATEWAY)
                continue;
            break;
        default: break;
        }
        if (has_connection && named_by_connection(base, hdrs, n, name, len))
            continue;
        int rc = ig_buf_reserve(out, len + hdrs[i].value_len + 4);
        if (rc)
            return rc;
        memcpy(out->data + out->len, name, len);
        out->len += len;
        out->data[out->len++] = ':';
        out->data[out->len++] = ' ';
        memcpy(out->data + out->len, base + hdrs[i].value_off, hdrs[i].value_len);
        out->len += hdrs[i].value_len;
        out->data[out->len++] = '\r';
        out->data[out->len++] = '\n';
    }
    return 0;
}

const char *ig_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

int ig_json_append_string(ig_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = ig_buf_append(out, "\"", 1);
    for (size_t i = 0; !rc && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = ig_buf_append(out, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = ig_buf_append(out, e, 6);
        } else {
            rc = ig_buf_append(out, &s[i], 1);
        }
    }
    return rc ? rc : ig_buf_append(out, "\"", 1);
}

int ig_http_error_response(ig_buf *out, int status, const char *type, const char *code, const char *message,
                           const char *rid, size_t rid_len, int close_conn, const char *extra_headers)
{
    char body[1024];
    ig_buf b = {body, 0, sizeof(body), sizeof(body)};
    int rc = ig_buf_puts(&b, "{\"error\":{\"message\":");
    rc = rc ? rc : ig_json_append_string(&b, message, strlen(message));
    rc = rc ? rc : ig_buf_puts(&b, ",\"type\":");
    rc = rc ? rc : ig_json_append_string(&b, type, strlen(type));
    rc = rc ? rc : ig_buf_puts(&b, ",\"code\":");
    rc = rc ? rc : ig_json_append_string(&b, code, strlen(code));
    rc = rc ? rc : ig_buf_puts(&b, "}}\n");
    if (rc)
        return rc;

    rc = ig_buf_puts(out, "HTTP/1.1 ");
    rc = rc ? rc : ig_buf_putu(out, (uint64_t)status);
    rc = rc ? rc : ig_buf_puts(out, " ");
    rc = rc ? rc : ig_buf_puts(out, ig_http_reason(status));
    rc = rc ? rc : ig_buf_puts(out, "\r\ncontent-type: application/json\r\ncontent-length: ");
    rc = rc ? rc : ig_buf_putu(out, b.len);
    if (rid_len) {
        rc = rc ? rc : ig_buf_puts(out, "\r\nx-request-id: ");
        rc = rc ? rc : ig_buf_append(out, rid, rid_len);
    }
    rc = rc ? rc : ig_buf_puts(out, close_conn ? "\r\nconnection: close\r\n" : "\r\n");
    if (extra_headers)
        rc = rc ? rc : ig_buf_puts(out, extra_headers);
    rc = rc ? rc : ig_buf_puts(out, "\r\n");
    return rc ? rc : ig_buf_append(out, b.data, b.len);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

size_t ig_http_pct_decode(char *out, const char *in, size_t n, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (in[i] == '%' && i + 2 < n && (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = plus && in[i] == '+' ? ' ' : in[i];
        }
    }
    return o;
}

int ig_http_secret_is(const char *given, size_t len, const char *secret)
{
    if (!secret || !*secret)
        return 0;
    size_t slen = strlen(secret);
    unsigned char diff = len != slen;
    for (size_t i = 0; i < slen; i++) /* no early exit */
        diff |= (unsigned char)((i < len ? given[i] : 0) ^ secret[i]);
    return !diff;
}
