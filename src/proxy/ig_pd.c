/* The prefill leg of a disaggregated request (ig_pd.h). */
#include "ig_pd.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "../api/ig_pd_body.h"
#include "../core/ig_log.h"
#include "../upstream/ig_exchange.h"
#include "ig_pick.h"

#define PD_FREE_MAX 256
#define PD_INS_SIZE 512          /* a single prompt's fields fit; a batch's grow past it */
#define PD_INS_MAX (1u << 20)    /* IG_PD_MAX_BATCH prompts' fields */
#define PD_ANSWER_MAX (4u << 20) /* a prefill's answer kept (vLLM's is one token) */
#define PD_ERROR_MAX 4096        /* ... and of an error answer, for the client's message */

static void leg_start(ig_pd *pd, ig_upconn *up);

/* The leg is over: its connection is gone or pooled already. */
static void leg_release_worker(ig_pd *pd)
{
    ig_worker *w = pd->worker;
    if (!w)
        return;
    pd->worker = NULL;
    ig_pick_release(pd->r, w, pd->probe, pd->keyed);
    pd->probe = pd->keyed = 0;
}

int ig_pd_prepare(ig_request *r, ig_worker *w, int probe, int vllm)
{
    int keyed = r->keyed;
    r->keyed = 0;
    static _Thread_local uint64_t rooms[IG_PD_MAX_BATCH];
    ig_proxy_ctx *px = r->px;
    if (!px->pd_ready) {
        ig_freelist_init(&px->pd_legs, sizeof(ig_pd), PD_FREE_MAX);
        ig_freelist_init(&px->pd_ins, PD_INS_SIZE, PD_FREE_MAX);
        px->pd_rooms = uv_hrtime() ^ ((uint64_t)(uintptr_t)px << 16);
        px->pd_ready = 1;
    }
    ig_pd *pd = r->pd;
    if (!pd) {
        if (!(pd = ig_freelist_get(&px->pd_legs))) {
            ig_pick_release(r, w, probe, keyed);
            return -ENOMEM;
        }
        memset(pd, 0, sizeof(*pd));
        ig_buf_init(&pd->ins, PD_INS_MAX);
        ig_buf_init(&pd->dins, PD_INS_MAX);
        ig_buf_init(&pd->answer, PD_ANSWER_MAX);
        ig_buf_init(&pd->held, PD_ANSWER_MAX);
        ig_buf_init(&pd->elems, PD_ANSWER_MAX);
        pd->r = r;
        r->pd = pd;
    }
    pd->worker = w;
    pd->probe = probe != 0;
    pd->keyed = keyed != 0;
    pd->running = 1;
    pd->sent = 0;
    pd->status = 0;
    pd->vllm = vllm != 0;
    pd->merge = !vllm && r->fields.return_logprob;
    pd->collect = pd->vllm || pd->merge;
    pd->decode_done = pd->client_raw = pd->logprobs_known = pd->raw = 0;
    pd->ins.len = pd->dins.len = pd->answer.len = pd->held.len = pd->elems.len = 0;
    int rc = ig_buf_take(&pd->ins, &px->pd_ins);
    if (vllm) {
        rc = rc ? rc : ig_pd_vllm_prefill_fields(&pd->ins, r->body.p, r->body.len, &pd->at);
    } else {
        int batch = ig_pd_batch_size(&r->fields);
        rc = rc ? rc : batch < 0 ? batch : 0;
        for (int i = 0; !rc && i < (batch ? batch : 1); i++)
            rooms[i] = ig_pd_room(&px->pd_rooms);
        rc = rc ? rc
                : ig_pd_fields(&pd->ins, r->body.p, r->body.len, w->host, w->bootstrap_port, rooms, batch,
                               &pd->at);
    }
    if (rc) {
        pd->running = 0;
        leg_release_worker(pd);
    }
    return rc;
}

/* The leg failed: its slot goes back, the proxy decides. */
static void leg_failed(ig_pd *pd, int status, int err, const char *why, int connect)
{
    ig_worker *w = pd->worker;
    ig_request *r = pd->r;
    pd->up = NULL;
    pd->running = 0;
    pd->decode_pending = 0; /* what follows decides for the decode */
    ig_worker_ref(w);       /* the slot's release may drop the last other reference */
    leg_release_worker(pd);
    ig_proxy_pd_leg_failed(r, w, status, err, why, connect);
    ig_worker_unref(w);
}

/* ---- the exchange's callbacks ---- */

int ig_pd_vllm_decode(ig_request *r)
{
    ig_pd *pd = r->pd;
    pd->dins.len = 0;
    int rc = ig_buf_take(&pd->dins, &r->px->pd_ins);
    return rc ? rc
              : ig_pd_vllm_decode_fields(&pd->dins, r->body.p, r->body.len, pd->answer.data, pd->answer.len,
                                         &pd->at);
}

static void leg_on_ready(void *owner, ig_exchange_req *rq)
{
    ig_pd *pd = owner;
    ig_proxy_fill_exchange(pd->r, rq, 0);
}

static int leg_on_head(void *owner, const ig_resp_head *h, int *dechunk, const char **why)
{
    ig_pd *pd = owner;
    (void)why;
    pd->status = h->status;
    int ok = h->status >= 200 && h->status < 300;
    pd->collect = ok ? pd->vllm || pd->merge : 1; /* an error's text goes into the client's error */
    if (!pd->collect)
        return IG_X_DISCARD; /* the client's answer is the decode's */
    *dechunk = 1;
    return IG_X_FORWARD;
}

static void leg_on_body(void *owner, const uv_buf_t *bufs, unsigned n, ig_block *blk, int read_end)
{
    ig_pd *pd = owner;
    (void)blk, (void)read_end;
    if (!pd->collect)
        return;
    if (!pd->answer.data && ig_buf_take(&pd->answer, &pd->r->px->pd_ins))
        return;
    size_t cap = pd->status >= 200 && pd->status < 300 ? PD_ANSWER_MAX : PD_ERROR_MAX;
    for (unsigned i = 0; i < n && pd->collect; i++)
        if (pd->answer.len + bufs[i].len > cap || ig_buf_append(&pd->answer, bufs[i].base, bufs[i].len))
            pd->collect = 0; /* too large to be a prefill's answer: it is not read */
}

static void leg_on_done(void *owner, int reusable)
{
    ig_pd *pd = owner;
    ig_upconn *up = pd->up;
    pd->up = NULL;
    ig_pool_release(up, reusable);
    if (!(pd->status >= 200 && pd->status < 300)) {
        leg_failed(pd, pd->status, 0, NULL, 0);
        return;
    }
    ig_worker *w = pd->worker;
    ig_request *r = pd->r;
    pd->running = 0;
    ig_worker_ref(w);
    leg_release_worker(pd);
    ig_proxy_pd_leg_done(r, w);
    ig_worker_unref(w);
}

static void leg_on_error(void *owner, int err, const char *why, unsigned what)
{
    leg_failed(owner, 0, err, (what & IG_X_HEAD_TOO_LARGE) ? "request head too large" : why,
               (what & IG_X_CONNECT) != 0);
}

static void leg_on_sent(void *owner)
{
    (void)owner;
}

static const ig_exchange_cb leg_cb = {leg_on_ready, leg_on_head,  leg_on_body,
                                      leg_on_done,  leg_on_error, leg_on_sent};

static void leg_connect(ig_pd *pd)
{
    ig_upconn *up = ig_exchange_connect(pd->r->px->up, pd->worker);
    if (!up)
        leg_failed(pd, 0, UV_ENOMEM, "cannot open a connection", 1);
    else
        leg_start(pd, up);
}

static void leg_start(ig_pd *pd, ig_upconn *up)
{
    pd->up = up;
    if (ig_exchange_start(up, &leg_cb, pd)) { /* nothing went out on it */
        ig_pool_release(up, 1);
        leg_failed(pd, 0, 0, "request head too large", 0);
    }
}

static void leg_conn_ready(ig_conn_wait *cw, ig_upconn *up)
{
    ig_pd *pd = ig_container_of(cw, ig_pd, cwait);
    if (up)
        leg_start(pd, up);
    else
        leg_connect(pd);
}

void ig_pd_send(ig_request *r)
{
    ig_pd *pd = r->pd;
    ig_worker *w = pd->worker;
    pd->sent = 1;
    pd->start_ns = uv_hrtime();
    pd->cwait.ready = leg_conn_ready;
    pd->cwait.w = NULL;
    ig_upconn *up = ig_pool_take(r->px->up, w);
    if (!up && ig_pool_wait(r->px->up, w, &pd->cwait))
        return; /* leg_conn_ready goes on */
    if (!up)
        leg_connect(pd);
    else
        leg_start(pd, up);
}

void ig_pd_cancel(ig_request *r)
{
    ig_pd *pd = r->pd;
    if (!pd || !pd->running)
        return;
    ig_debug("%.*s prefill leg cancelled", (int)r->rid_len, r->rid);
    pd->running = 0;
    pd->decode_pending = 0;
    ig_pool_unwait(r->px->up, &pd->cwait);
    if (pd->up) {
        ig_exchange_cancel(pd->up); /* the prefill learns it can stop */
        pd->up = NULL;
    }
    leg_release_worker(pd);
}

const char *ig_pd_error_text(ig_request *r, char *buf, size_t cap)
{
    ig_pd *pd = r->pd;
    buf[0] = '\0';
    if (!pd || !pd->answer.len)
        return buf;
    json_error_t jerr;
    json_t *doc = json_loadb(pd->answer.data, pd->answer.len, 0, &jerr);
    json_t *e = json_object_get(doc, "error");
    const char *m = json_string_value(json_object_get(json_is_object(e) ? e : doc, "message"));
    if (!m)
        m = json_string_value(e);
    if (!m)
        m = json_string_value(json_object_get(doc, "detail")); /* FastAPI's */
    if (m)
        snprintf(buf, cap, "%s", m);
    else
        snprintf(buf, cap, "%.*s", (int)(pd->answer.len < 300 ? pd->answer.len : 300), pd->answer.data);
    json_decref(doc);
    return buf;
}

void ig_pd_thread_done(ig_proxy_ctx *px)
{
    if (!px->pd_ready)
        return;
    ig_freelist_clear(&px->pd_legs);
    ig_freelist_clear(&px->pd_ins);
}

void ig_pd_release(ig_request *r)
{
    ig_pd *pd = r->pd;
    if (!pd)
        return;
    ig_pd_cancel(r);
    ig_buf_give(&pd->ins, &r->px->pd_ins);
    ig_buf_give(&pd->dins, &r->px->pd_ins);
    ig_buf_give(&pd->answer, &r->px->pd_ins);
    ig_buf_free(&pd->held);
    ig_buf_free(&pd->elems);
    r->pd = NULL;
    ig_freelist_put(&r->px->pd_legs, pd);
}
