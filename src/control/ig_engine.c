/* What the engines say about themselves, gathered from all at once:
 * sgl-model-gateway's /engine_metrics (every worker's Prometheus page as
 * one, each sample labelled worker_addr) and /get_loads (the load gauges
 * of those pages: SGLang's and vLLM's names). Control thread only. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../obs/ig_prom.h"
#include "ig_control_int.h"

typedef struct page {
    char *url;
    char *text;
    size_t len;
} page;

typedef struct engine_fanout {
    ig_fanout f; /* first: the fan-out's callbacks get it back */
    int loads;   /* /get_loads, else /engine_metrics */
    page *pages;
    int n, cap;
} engine_fanout;

static void keep_page(ig_fanout *f, ig_worker *w, json_t *entry, int ok, const char *body, size_t len)
{
    engine_fanout *e = (engine_fanout *)f;
    (void)entry;
    if (!ok && !e->loads)
        return;
    if (e->n == e->cap) {
        int cap = e->cap ? e->cap * 2 : 16;
        page *v = realloc(e->pages, sizeof(*v) * (size_t)cap);
        if (!v)
            return;
        e->pages = v;
        e->cap = cap;
    }
    page *p = &e->pages[e->n];
    p->url = strdup(w->url);
    p->text = ok ? malloc(len + 1) : NULL;
    if (!p->url || (ok && !p->text)) {
        free(p->url);
        free(p->text);
        return;
    }
    if (p->text)
        memcpy(p->text, body, len), p->text[len] = '\0';
    p->len = ok ? len : 0;
    e->n++;
}

/* The first of the names a page has, summed over its samples (-1: none). */
static double gauge(const page *p, const char *const *names, int mean)
{
    for (int i = 0; names[i]; i++) {
        double sum;
        int n = ig_prom_sum(p->text, p->len, names[i], &sum);
        if (n)
            return mean ? sum / n : sum;
    }
    return -1;
}

static json_t *load_of(const page *p, ig_worker *w)
{
    static const char *const running[] = {"sglang:num_running_reqs", "sglang_num_running_reqs",
                                          "vllm:num_requests_running", NULL};
    static const char *const waiting[] = {"sglang:num_queue_reqs", "sglang_num_queue_reqs",
                                          "vllm:num_requests_waiting", NULL};
    static const char *const used[] = {"sglang:num_used_tokens", "sglang_num_used_tokens", NULL};
    static const char *const usage[] = {"sglang:token_usage", "sglang_token_usage",
                                        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", NULL};
    json_t *o =
        json_pack("{s:s,s:I}", "worker", p->url, "inflight",
                  (json_int_t)(w ? ig_worker_inflight(w) : 0)); /* what the gateway sent it, always known */
    double used_tokens = p->text ? gauge(p, used, 0) : -1;
    json_object_set_new(o, "load", json_integer(used_tokens >= 0 ? (json_int_t)used_tokens : -1));
    if (p->text) {
        double r = gauge(p, running, 0), q = gauge(p, waiting, 0), u = gauge(p, usage, 1);
        json_t *d = json_object();
        if (r >= 0)
            json_object_set_new(d, "num_running_reqs", json_integer((json_int_t)r));
        if (q >= 0)
            json_object_set_new(d, "num_waiting_reqs", json_integer((json_int_t)q));
        if (used_tokens >= 0)
            json_object_set_new(d, "num_used_tokens", json_integer((json_int_t)used_tokens));
        if (u >= 0)
            json_object_set_new(d, "token_usage", json_real(u));
        json_object_set_new(o, "details", d);
    }
    return o;
}

static void engine_done(ig_fanout *f)
{
    engine_fanout *e = (engine_fanout *)f;
    if (e->loads) {
        json_t *loads = json_array();
        int ok = 0;
        for (int i = 0; i < e->n; i++) {
            json_t *l = load_of(&e->pages[i], ig_ctl_find_url(e->pages[i].url));
            ok += json_integer_value(json_object_get(l, "load")) >= 0;
            json_array_append_new(loads, l);
        }
        ig_ctl_reply(f->m, 200,
                     json_pack("{s:o,s:i,s:i,s:i}", "loads", loads, "total_workers", e->n, "successful", ok,
                               "failed", e->n - ok));
    } else if (!e->n) {
        ig_ctl_reply_error(f->m, 503, "no_engine_metrics",
                           ig_registry_count() ? "no worker answered GET /metrics" : "no workers");
    } else {
        const char **texts = malloc(sizeof(char *) * (size_t)e->n),
                   **urls = malloc(sizeof(char *) * (size_t)e->n);
        size_t *lens = malloc(sizeof(size_t) * (size_t)e->n);
        ig_buf out;
        ig_buf_init(&out, 512u << 20);
        int rc = texts && urls && lens ? 0 : -ENOMEM;
        for (int i = 0; !rc && i < e->n; i++) {
            texts[i] = e->pages[i].text;
            lens[i] = e->pages[i].len;
            urls[i] = e->pages[i].url;
        }
        rc = rc ? rc : ig_prom_merge(texts, lens, "worker_addr", urls, e->n, &out);
        if (rc) {
            ig_ctl_reply_error(f->m, 503, "out_of_memory", "out of memory");
        } else {
            f->m->content_type = "text/plain; version=0.0.4";
            ig_ctl_reply_raw(f->m, 200, out.data ? out.data : "", out.len);
        }
        ig_buf_free(&out);
        free(texts);
        free(urls);
        free(lens);
    }
    for (int i = 0; i < e->n; i++) {
        free(e->pages[i].url);
        free(e->pages[i].text);
    }
    free(e->pages);
    json_decref(f->results);
    free(e);
}

void ig_ctl_engine_fanout(ig_admin_msg *m, int loads)
{
    engine_fanout *e = calloc(1, sizeof(*e));
    if (!e) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    e->loads = loads;
    ig_fanout_init(&e->f, m, keep_page, engine_done);
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (!w->group) /* the LLM fleet: a named group's servers are not engines */
            ig_fanout_send(&e->f, w, "GET", "/metrics", NULL, NULL, 0);
    }
    ig_fanout_end(&e->f);
}
