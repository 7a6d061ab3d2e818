/* The access log: one line per request, from a small record, buffered per
 * loop thread and written once per loop iteration (or when the buffer
 * fills). What the client chose (request id, model) is escaped: one request
 * is one line with fixed fields, whatever it sent. One owner thread. */
#ifndef IG_ACCESS_LOG_H
#define IG_ACCESS_LOG_H
#include <stddef.h>
#include <stdint.h>

#include "../core/ig_buf.h"

typedef struct ig_alog {
    ig_buf buf;
    int fd; /* where lines go (stderr, which --log-file points at the file) */
    int64_t sec;
    char stamp[32];
} ig_alog;

typedef struct ig_alog_record {
    const char *rid;
    size_t rid_len;
    const char *method;
    const char *path; /* without the query */
    size_t path_len;
    int status;
    const char *model; /* NULL: "-" */
    size_t model_len;
    const char *worker; /* NULL or "": "-" */
    uint64_t bytes;
    uint64_t ttfb_ns; /* 0: no byte came from a worker */
    uint64_t dur_us;
} ig_alog_record;

void ig_alog_init(ig_alog *a, int fd);
/** Append r's line; writes out when much is buffered. */
void ig_alog_append(ig_alog *a, const ig_alog_record *r);
/** Write what is buffered (a log that cannot be written never stops the proxy). */
void ig_alog_flush(ig_alog *a);
void ig_alog_free(ig_alog *a);
#endif
