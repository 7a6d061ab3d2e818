#include "ig_http.h"

#include <ctype.h>
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

int ig_http_is_hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive",        "proxy-connection",
                                      "te",         "trailer",           "upgrade",
                                      "transfer-encoding", "proxy-authenticate", "proxy-authorization"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (ig_http_name_is(name, len, hop[i]))
            return 1;
    return 0;
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

int ig_http_find(const char *base, const ig_hdr *hdrs, int n, const char *lower)
{
    for (int i = 0; i < n; i++)
        if (ig_http_name_is(base + hdrs[i].name_off, hdrs[i].name_len, lower))
            return i;
    return -1;
}

/* A header named in any Connection header's token list is hop-by-hop too. */
static int named_by_connection(const char *base, const ig_hdr *hdrs, int n, const char *name,
                               size_t len)
{
    for (int i = 0; i < n; i++)
        if (ig_http_name_is(base + hdrs[i].name_off, hdrs[i].name_len, "connection") &&
            ig_http_list_has(base + hdrs[i].value_off, hdrs[i].value_len, name, len))
            return 1;
    return 0;
}

int ig_http_copy_headers(ig_buf *out, const char *base, const ig_hdr *hdrs, int n, unsigned flags)
{
    int has_connection = ig_http_find(base, hdrs, n, "connection") >= 0;
    for (int i = 0; i < n; i++) {
        const char *name = base + hdrs[i].name_off;
        size_t len = hdrs[i].name_len;
        if (ig_http_is_hop_by_hop(name, len))
            continue;
        if ((flags & IG_COPY_DROP_HOST) && ig_http_name_is(name, len, "host"))
            continue;
        if ((flags & IG_COPY_DROP_LENGTH) && ig_http_name_is(name, len, "content-length"))
            continue;
        if ((flags & IG_COPY_DROP_EXPECT) && ig_http_name_is(name, len, "expect"))
            continue;
        if ((flags & IG_COPY_DROP_REQUEST_ID) && ig_http_name_is(name, len, "x-request-id"))
            continue;
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

int ig_http_error_response(ig_buf *out, int status, const char *type, const char *code,
                           const char *message, const char *rid, size_t rid_len, int close_conn,
                           const char *extra_headers)
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
