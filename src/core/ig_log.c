#include "ig_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int ig_log_level = IG_LOG_INFO;

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

void ig_log_emit(int level, const char *fmt, ...)
{
    char msg[2048], line[2048 + 64];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    /* messages quote what clients and workers sent (models, ids, reasons):
     * a newline or an escape sequence in them must not forge a line */
    size_t len = (size_t)n + ig_log_escape(line + n, sizeof(line) - (size_t)n - 1, msg,
                                           (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1, 0);
    line[len++] = '\n';
    /* one write per line so lines from several threads never interleave */
    fwrite(line, 1, len, stderr);
}
