#include "ig_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int ig_log_level = IG_LOG_INFO;
int ig_log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int ig_log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return IG_LOG_WARN;
    return -1;
}

size_t ig_log_escape(char *out, size_t cap, const char *in, size_t n, int spaces)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f || c == '\\' || (spaces && (c == ' ' || c == '"'))) {
            if (o + 4 > cap)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
        }
    }
    return o;
}

/* The length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

size_t ig_log_json_escape(char *out, size_t cap, const char *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        size_t u = c >= 0x80 ? utf8_len(s + i, n - i) : 0;
        if (u) {
            if (o + u > cap)
                break;
            memcpy(out + o, s + i, u);
            o += u;
            i += u - 1;
        } else if (c == '"' || c == '\\') {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (o + 6 > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
        }
    }
    return o;
}

void ig_log_emit(int level, const char *fmt, ...)
{
    char msg[2048], line[2048 + 64];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line),
                 ig_log_json ? "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":\""
                             : "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    /* messages quote what clients and workers sent (models, ids, reasons):
     * a newline or an escape sequence in them must not forge a line */
    size_t mlen = (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1, len;
    if (ig_log_json) {
        len = (size_t)n + ig_log_json_escape(line + n, sizeof(line) - (size_t)n - 3, msg, mlen);
        line[len++] = '"';
        line[len++] = '}';
    } else {
        len = (size_t)n + ig_log_escape(line + n, sizeof(line) - (size_t)n - 1, msg, mlen, 0);
    }
    line[len++] = '\n';
    /* one write per line so lines from several threads never interleave */
    fwrite(line, 1, len, stderr);
}
