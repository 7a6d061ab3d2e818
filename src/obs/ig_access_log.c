#include "ig_access_log.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/ig_log.h"

void ig_alog_init(ig_alog *a, int fd)
{
    ig_buf_init(&a->buf, 1u << 20);
    a->fd = fd;
    a->sec = 0;
    a->stamp[0] = '\0';
}

void ig_alog_flush(ig_alog *a)
{
    size_t off = 0;
    while (off < a->buf.len) {
        ssize_t n = write(a->fd, a->buf.data + off, a->buf.len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    a->buf.len = 0;
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static char *put_u64(char *o, uint64_t v)
{
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(o, tmp + i, (size_t)(20 - i));
}

/* v with exactly width digits (leading zeros) */
static char *put_fixed(char *o, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* tenths as "whole.tenth" (milliseconds with one decimal, as %.1f printed them) */
static char *put_tenths(char *o, uint64_t tenths)
{
    o = put_u64(o, tenths / 10);
    *o++ = '.';
    *o++ = (char)('0' + tenths % 10);
    return o;
}

void ig_alog_append(ig_alog *a, const ig_alog_record *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != a->sec) { /* strftime once a second, not once a line */
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(a->stamp, sizeof(a->stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        a->sec = ts.tv_sec;
    }
    size_t plen = r->path_len > 200 ? 200 : r->path_len;
    if (ig_log_json) {
        char ttfb[24] = "-";
        if (r->ttfb_ns)
            snprintf(ttfb, sizeof(ttfb), "%.1f", (double)r->ttfb_ns / 1e6);
        char line[1600], rid[6 * 80 + 1], model[6 * 128 + 1];
        char path[6 * 200 + 1], worker[6 * 80 + 1];
        size_t ridn = ig_log_json_escape(rid, sizeof(rid) - 1, r->rid, r->rid_len < 80 ? r->rid_len : 80);
        size_t pn = ig_log_json_escape(path, sizeof(path) - 1, r->path, plen);
        size_t mn = r->model ? ig_log_json_escape(model, sizeof(model) - 1, r->model,
                                                  r->model_len < 128 ? r->model_len : 128)
                             : 0;
        size_t wlen = r->worker ? strnlen(r->worker, 80) : 0;
        size_t wn = ig_log_json_escape(worker, sizeof(worker) - 1, r->worker ? r->worker : "", wlen);
        char mfield[6 * 128 + 8] = "null", wfield[6 * 80 + 8] = "null";
        if (r->model)
            snprintf(mfield, sizeof(mfield), "\"%.*s\"", (int)mn, model);
        if (wn)
            snprintf(wfield, sizeof(wfield), "\"%.*s\"", (int)wn, worker);
        int n = snprintf(
            line, sizeof(line),
            "{\"ts\":\"%s.%03ldZ\",\"level\":\"info\",\"event\":\"access\",\"request_id\":\"%.*s\","
            "\"method\":\"%s\",\"path\":\"%.*s\",\"status\":%d,\"model\":%s,\"worker\":%s,"
            "\"bytes\":%llu,\"ttfb_ms\":%s,\"dur_ms\":%.1f}\n",
            a->stamp, ts.tv_nsec / 1000000, (int)ridn, rid, r->method, (int)pn, path, r->status, mfield,
            wfield, (unsigned long long)r->bytes, r->ttfb_ns ? ttfb : "null", (double)r->dur_us / 1000.0);
        if (n > 0)
            ig_buf_append(&a->buf, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
        if (a->buf.len > 60000)
            ig_alog_flush(a);
        return;
    }
    /* the default line, built in place: no printf per request (it was a tenth of a small request's CPU) */
    const char *worker = r->worker && r->worker[0] ? r->worker : "-";
    size_t wlen = strnlen(worker, 200), mlen = strlen(r->method);
    if (ig_buf_reserve(&a->buf, 600 + 6 * 80 + 6 * 128 + plen + wlen + mlen) == 0) {
        char *o = a->buf.data + a->buf.len, *start = o;
        o = put(o, a->stamp, strlen(a->stamp));
        *o++ = '.';
        o = put_fixed(o, (uint64_t)(ts.tv_nsec / 1000000), 3);
        o = put(o, "Z access ", 9);
        o += ig_log_escape(o, 6 * 80, r->rid, r->rid_len < 80 ? r->rid_len : 80, 1);
        *o++ = ' ';
        o = put(o, r->method, mlen);
        *o++ = ' ';
        o = put(o, r->path, plen);
        *o++ = ' ';
        o = put_u64(o, (uint64_t)(r->status < 0 ? 0 : r->status));
        o = put(o, " model=", 7);
        if (r->model)
            o += ig_log_escape(o, 6 * 128, r->model, r->model_len < 128 ? r->model_len : 128, 1);
        else
            *o++ = '-';
        o = put(o, " worker=", 8);
        o = put(o, worker, wlen);
        o = put(o, " bytes=", 7);
        o = put_u64(o, r->bytes);
        o = put(o, " ttfb_ms=", 9);
        if (r->ttfb_ns)
            o = put_tenths(o, (r->ttfb_ns + 50000) / 100000);
        else
            *o++ = '-';
        o = put(o, " dur_ms=", 8);
        o = put_tenths(o, (r->dur_us + 50) / 100);
        *o++ = '\n';
        a->buf.len += (size_t)(o - start);
    }
    if (a->buf.len > 60000)
        ig_alog_flush(a);
}

void ig_alog_free(ig_alog *a)
{
    ig_buf_free(&a->buf);
}
