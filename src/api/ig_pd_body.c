/* The bootstrap fields of SGLang's PD handshake (ig_pd_body.h). */
#include "ig_pd_body.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* Where fields go in body (one JSON object): its closing brace (*at), and
 * whether the object is empty (no comma before ours). 0 or -EINVAL. */
static int insert_point(const char *body, size_t len, size_t *at, int *empty)
{
    size_t end = len, start = 0;
    while (end && strchr(" \t\r\n", body[end - 1]))
        end--;
    while (start < end && strchr(" \t\r\n", body[start]))
        start++;
    if (end - start < 2 || body[start] != '{' || body[end - 1] != '}')
        return -EINVAL;
    size_t last = end - 1, k = last;
    while (k > start + 1 && strchr(" \t\r\n", body[k - 1]))
        k--;
    *empty = k == start + 1;
    *at = last;
    return 0;
}

int ig_pd_fields(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch, size_t *at)
{
    int empty;
    if (insert_point(body, len, at, &empty))
        return -EINVAL;
    char h[512], hv[520], pv[16];
    size_t hn = ig_log_json_escape(h, sizeof(h), host, strlen(host));
    snprintf(hv, sizeof(hv), "\"%.*s\"", (int)hn, h);
    snprintf(pv, sizeof(pv), port > 0 ? "%d" : "null", port);
    int rc = put_field(out, empty ? "\"bootstrap_host\":" : ",\"bootstrap_host\":", hv, batch);
    rc = rc ? rc : put_field(out, ",\"bootstrap_port\":", pv, batch);
    rc = rc ? rc : ig_buf_puts(out, ",\"bootstrap_room\":");
    rc = rc ? rc : (batch ? ig_buf_puts(out, "[") : 0);
    for (int i = 0; !rc && i < (batch ? batch : 1); i++) {
        rc = i ? ig_buf_puts(out, ",") : 0;
        rc = rc ? rc : ig_buf_putu(out, rooms[i]);
    }
    rc = rc ? rc : (batch ? ig_buf_puts(out, "]") : 0);
    return rc ? -ENOMEM : 0;
}

int ig_pd_inject(ig_buf *out, const char *body, size_t len, const char *host, int port, const uint64_t *rooms,
                 int batch)
{
    ig_buf ins;
    size_t at;
    ig_buf_init(&ins, out->max);
    int rc = ig_pd_fields(&ins, body, len, host, port, rooms, batch, &at);
    rc = rc ? rc
         : ig_buf_append(out, body, at) || ig_buf_append(out, ins.data, ins.len) ||
                 ig_buf_append(out, body + at, len - at)
             ? -ENOMEM
             : 0;
    ig_buf_free(&ins);
    return rc;
}

int ig_pd_vllm_prefill_fields(ig_buf *out, const char *body, size_t len, size_t *at)
{
    int empty;
    if (insert_point(body, len, at, &empty))
        return -EINVAL;
    /* toy_proxy_server's prefill request: one token, no stream (and no
     * stream_options, min_tokens: not for a prefill), the KV kept for a remote decode */
    int rc = ig_buf_puts(out, empty ? "" : ",");
    rc = rc ? rc
            : ig_buf_puts(out,
                          "\"kv_transfer_params\":{\"do_remote_decode\":true,\"do_remote_prefill\":false,"
                          "\"remote_engine_id\":null,\"remote_block_ids\":null,\"remote_host\":null,"
                          "\"remote_port\":null},\"stream\":false,\"stream_options\":null,\"max_tokens\":1,"
                          "\"max_completion_tokens\":1,\"min_tokens\":0");
    return rc ? -ENOMEM : 0;
}

int ig_pd_vllm_decode_fields(ig_buf *out, const char *body, size_t len, const char *answer, size_t alen,
                             size_t *at)
{
    int empty;
    if (insert_point(body, len, at, &empty))
        return -EINVAL;
    ig_span params; /* found in one pass over the answer, copied as written */
    if (ig_json_member(answer ? answer : "", alen, "kv_transfer_params", &params) || *params.p != '{')
        return -ENOENT;
    int rc = ig_buf_puts(out, empty ? "\"kv_transfer_params\":" : ",\"kv_transfer_params\":");
    rc = rc ? rc : ig_buf_append(out, params.p, params.len);
    return rc ? -ENOMEM : 0;
}

static int logprobs_of_one(ig_buf *out, const char *answer, size_t len);

int ig_pd_prefill_logprobs(ig_buf *out, const char *answer, size_t len)
{
    if (len < 6 || memcmp(answer, "data:", 5) != 0)
        return logprobs_of_one(out, answer, len);
    /* a streamed prefill (the client asked to stream): its last event that has them */
    size_t mark = out->len;
    int rc = -ENOENT;
    for (const char *p = answer, *end = answer + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if (eol - p > 5 && !memcmp(p, "data:", 5)) {
            const char *j = p + 5 + (p[5] == ' ');
            size_t before = out->len;
            if (*j == '{' && !logprobs_of_one(out, j, (size_t)(eol - j))) {
                memmove(out->data + mark, out->data + before, out->len - before);
                out->len = mark + (out->len - before);
                rc = 0;
            }
        }
        p = eol + 1;
    }
    return rc;
}

static int logprobs_of_one(ig_buf *out, const char *answer, size_t len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(answer ? answer : "", len, 0, &jerr);
    json_t *lp = json_object_get(json_object_get(doc, "meta_info"), "input_token_logprobs");
    int rc = json_is_array(lp) ? 0 : -ENOENT;
    char *text = rc ? NULL : json_dumps(lp, JSON_COMPACT);
    if (!rc && !text)
        rc = -ENOMEM;
    if (text) { /* "[a,b]" -> "a,b" */
        size_t n = strlen(text);
        rc = n < 2 ? -ENOENT : ig_buf_append(out, text + 1, n - 2) ? -ENOMEM : 0;
    }
    free(text);
    json_decref(doc);
    return rc;
}

/* Stands in for the merged array while the rest is written by jansson: a
 * string no JSON text of an answer holds unescaped (the 0x01s are written
 * as \u0001), replaced once in the output. */
#define MERGE_MARK "\001ig-pd-logprobs\001"
#define MERGE_MARK_JSON "\"\\u0001ig-pd-logprobs\\u0001\""

int ig_pd_merge_logprobs(ig_buf *out, const char *json, size_t len, const char *elems, size_t elen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr);
    json_t *meta = json_object_get(doc, "meta_info"), *lp = json_object_get(meta, "input_token_logprobs");
    if (!json_is_array(lp)) {
        json_decref(doc);
        return -ENOENT;
    }
    char *own = json_dumps(lp, JSON_COMPACT);
    json_object_set_new(meta, "input_token_logprobs", json_string(MERGE_MARK));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *at = text ? strstr(text, MERGE_MARK_JSON) : NULL;
    int rc = own && at ? 0 : -ENOMEM;
    if (!rc) {
        size_t olen = strlen(own);
        rc = ig_buf_append(out, text, (size_t)(at - text)) || ig_buf_puts(out, "[") ||
             ig_buf_append(out, elems, elen) || (elen && olen > 2 && ig_buf_puts(out, ",")) ||
             ig_buf_append(out, own + 1, olen - 1) || ig_buf_puts(out, at + strlen(MERGE_MARK_JSON));
        rc = rc ? -ENOMEM : 0;
    }
    free(own);
    free(text);
    return rc;
}
