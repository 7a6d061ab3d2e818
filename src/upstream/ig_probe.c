/* Probe connections (ig_probe.h). The connection is its own exchange's owner. */
#include "ig_probe.h"

#include <llhttp.h>
#include <string.h>

#include "ig_exchange.h"

static void probe_ready(void *owner, ig_exchange_req *rq)
{
    ig_upconn *up = owner;
    int g = up->w->group > 0 && up->w->group < IG_MAX_GROUPS ? up->w->group : 0;
    const char *path =
        up->ctx->cfg->probe_paths[g] ? up->ctx->cfg->probe_paths[g] : up->ctx->cfg->probe_paths[0];
    path = path ? path : "/";
    *rq = (ig_exchange_req){
        .method = HTTP_GET, .target = path, .target_len = strlen(path), .rid = "ig-probe", .rid_len = 8};
}

static int probe_head(void *owner, const ig_resp_head *h, int *dechunk, const char **why)
{
    (void)owner, (void)h, (void)dechunk, (void)why;
    return IG_X_DISCARD; /* the head named the process; the body is not wanted */
}

static void probe_body(void *owner, const uv_buf_t *bufs, unsigned n, ig_block *blk, int read_end)
{
    (void)owner, (void)bufs, (void)n, (void)blk, (void)read_end;
}

static void probe_done(void *owner, int reusable)
{
    ig_pool_probe_done(owner, reusable);
}

static void probe_error(void *owner, int err, const char *why, unsigned what)
{
    ig_upconn *up =
        owner; /* closed already (freed after this callback); the health checks judge the worker */
    (void)err, (void)why, (void)what;
    ig_pool_probe_failed(up->ctx, up->w);
}

static const ig_exchange_cb probe_cb = {probe_ready, probe_head, probe_body, probe_done, probe_error, NULL};

int ig_probe_start(ig_upstream_ctx *ctx, ig_worker *w)
{
    ig_upconn *up = ig_exchange_connect(ctx, w);
    if (!up)
        return UV_ENOMEM;
    up->probe = 1;
    ig_list_push_front(&ctx->probes, &up->tlink);
    return ig_exchange_start(up, &probe_cb, up);
}
