/* The bootstrap fields of SGLang's PD handshake (ig_pd_body.h). */
#include "ig_pd_body.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../core/ig_log.h"

int ig_pd_batch_size(const ig_body_fields *f)
{
    for (int i = 0; i < f->n_text; i++) {
        char first;
        int n = ig_json_array_len(f->text[i], &first);
        if (n == -EINVAL)
            return -EINVAL;
        /* a list of prompts (strings or token lists) is a batch; a list of
         * numbers is one tokenized prompt, a list of objects chat messages */
        if (n > 0 && (first == '"' || first == '['))
            return n > IG_PD_MAX_BATCH ? -E2BIG : n;
    }
    return 0;
}

uint64_t ig_pd_room(uint64_t *state)
{
    /* splitmix64: rooms must not collide across concurrent requests, and need not be secret */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (z ^ (z >> 31)) >> 1;
}

static int put_field(ig_buf *out, const char *name, const char *value, int batch)
{
    int rc = ig_buf_puts(out, name);
    if (!batch)
        return rc ? rc : ig_buf_puts(out, value);
    rc = rc ? rc : ig_buf_puts(out, "[");
    for (int i = 0; !rc && i < batch; i++) {
        rc = i ? ig_buf_puts(out, ",") : 0;
        rc = rc ? rc : ig_buf_puts(out, value);
    }
    return rc ? rc : ig_buf_puts(out, "]");
}

int ig_pd_inject(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch)
{
    size_t end = len, start = 0;
    while (end && strchr(" \t\r\n", body[end - 1]))
        end--;
    while (start < end && strchr(" \t\r\n", body[start]))
        start++;
    if (end - start < 2 || body[start] != '{' || body[end - 1] != '}')
        return -EINVAL;
    size_t last = end - 1, k = last; /* is the object empty? */
    while (k > start + 1 && strchr(" \t\r\n", body[k - 1]))
        k--;
    int empty = k == start + 1;
    char h[512], hv[520], pv[16];
    size_t hn = ig_log_json_escape(h, sizeof(h), host, strlen(host));
    snprintf(hv, sizeof(hv), "\"%.*s\"", (int)hn, h);
    snprintf(pv, sizeof(pv), port > 0 ? "%d" : "null", port);
    int rc = ig_buf_append(out, body, last);
    rc = rc ? rc : put_field(out, empty ? "\"bootstrap_host\":" : ",\"bootstrap_host\":", hv, batch);
    rc = rc ? rc : put_field(out, ",\"bootstrap_port\":", pv, batch);
    rc = rc ? rc : ig_buf_puts(out, ",\"bootstrap_room\":");
    rc = rc ? rc : (batch ? ig_buf_puts(out, "[") : 0);
    for (int i = 0; !rc && i < (batch ? batch : 1); i++) {
        rc = i ? ig_buf_puts(out, ",") : 0;
        rc = rc ? rc : ig_buf_putu(out, rooms[i]);
    }
    rc = rc ? rc : (batch ? ig_buf_puts(out, "]") : 0);
    rc = rc ? rc : ig_buf_append(out, body + last, len - last);
    return rc ? -ENOMEM : 0;
}
