/* return_logprob in SGLang's protocol (ig_pd.h): the prompt's logprobs are
 * the prefill's, so the client's answer is the decode's with the prefill's
 * meta_info.input_token_logprobs put first, as smg does. The decode's
 * answer is held (undechunked) until the prefill has answered; then each
 * complete SSE event (or, not streaming, the whole answer) is rewritten and
 * written chunked. Only requests with "return_logprob": true come here. */
#include <string.h>

#include "../api/ig_pd_body.h"
#include "ig_pd.h"

/* n bytes to the client, copied into read blocks (their writes hold them) */
static void put(ig_request *r, const char *p, size_t n)
{
    ig_freelist *blocks = r->px->up->blocks;
    while (n) {
        ig_block *b = ig_block_get(blocks);
        if (!b)
            return;
        size_t k = n < IG_BLOCK_SIZE ? n : IG_BLOCK_SIZE;
        memcpy(b->data, p, k);
        uv_buf_t buf = uv_buf_init(b->data, (unsigned)k);
        r->res->write(r, &buf, 1, b);
        ig_block_put(blocks, b);
        p += k;
        n -= k;
    }
}

/* one chunk of the client's answer */
static void emit(ig_request *r, const char *p, size_t n)
{
    char head[24];
    if (!n)
        return;
    if (!r->pd->client_raw) {
        int h = snprintf(head, sizeof(head), "%zx\r\n", n);
        put(r, head, (size_t)h);
    }
    put(r, p, n);
    if (!r->pd->client_raw)
        put(r, "\r\n", 2);
}

/* one decode answer (an event's data, or the whole body), merged if it can be */
static void emit_merged(ig_request *r, const char *pre, size_t plen, const char *json, size_t len,
                        const char *post, size_t postlen)
{
    ig_pd *pd = r->pd;
    ig_buf out;
    ig_buf_init(&out, (size_t)1 << 30);
    int merged = pd->elems.len && !ig_buf_append(&out, pre, plen) &&
                 !ig_pd_merge_logprobs(&out, json, len, pd->elems.data, pd->elems.len) &&
                 !ig_buf_append(&out, post, postlen);
    if (merged)
        emit(r, out.data, out.len);
    else {
        out.len = 0;
        if (!ig_buf_append(&out, pre, plen) && !ig_buf_append(&out, json, len) &&
            !ig_buf_append(&out, post, postlen))
            emit(r, out.data, out.len);
    }
    ig_buf_free(&out);
}

void ig_pd_merge_start(ig_request *r, int client_raw)
{
    r->pd->client_raw = client_raw != 0;
}

void ig_pd_merge_body(ig_request *r, const uv_buf_t *bufs, unsigned n)
{
    ig_pd *pd = r->pd;
    for (unsigned i = 0; i < n; i++) {
        if (pd->raw) {
            emit(r, bufs[i].base, bufs[i].len);
            continue;
        }
        if (!ig_buf_append(&pd->held, bufs[i].base, bufs[i].len))
            continue;
        /* more than an answer to merge holds: it goes as it is from here */
        pd->raw = 1;
        emit(r, pd->held.data, pd->held.len);
        pd->held.len = 0;
        emit(r, bufs[i].base, bufs[i].len);
    }
    if (pd->logprobs_known && !pd->raw)
        ig_pd_merge_pump(r, 0);
}

void ig_pd_merge_prefill_over(ig_request *r)
{
    ig_pd *pd = r->pd;
    if (pd->logprobs_known)
        return;
    pd->logprobs_known = 1;
    pd->elems.len = 0;
    if (pd->status >= 200 && pd->status < 300 &&
        ig_pd_prefill_logprobs(&pd->elems, pd->answer.data, pd->answer.len))
        pd->elems.len = 0; /* none: the decode's answer goes as it is */
}

int ig_pd_merge_pump(ig_request *r, int final)
{
    ig_pd *pd = r->pd;
    if (!pd->logprobs_known && !final)
        return 0;
    if (pd->raw) {
        if (final && !pd->client_raw)
            put(r, "0\r\n\r\n", 5);
        return final;
    }
    ig_buf *h = &pd->held;
    size_t pos = 0;
    if (r->fields.stream) { /* each complete event: "data: {...}\n\n" */
        const char *end;
        while ((end = memmem(h->data + pos, h->len - pos, "\n\n", 2))) {
            const char *ev = h->data + pos;
            size_t len = (size_t)(end - ev);
            if (len > 6 && !memcmp(ev, "data: ", 6) && ev[6] == '{')
                emit_merged(r, "data: ", 6, ev + 6, len - 6, "\n\n", 2);
            else
                emit(r, ev, len + 2);
            pos += len + 2;
        }
    }
    if (final) {
        if (r->fields.stream)
            emit(r, h->data + pos, h->len - pos);
        else if (h->len > pos)
            emit_merged(r, "", 0, h->data + pos, h->len - pos, "", 0);
        pos = h->len;
        if (!pd->client_raw)
            put(r, "0\r\n\r\n", 5);
    }
    if (pos) {
        memmove(h->data, h->data + pos, h->len - pos);
        h->len -= pos;
    }
    return final;
}
