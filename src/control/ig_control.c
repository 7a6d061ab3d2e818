#include "ig_control.h"

#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../core/ig_log.h"
#include "../core/ig_wakeup.h"
#include "../balance/ig_prefix.h"
#include "../balance/ig_sticky.h"
#include "../health/ig_breaker.h"
#include "../core/ig_epoch.h"
#include "../registry/ig_registry.h"
#include "../upstream/ig_httpc.h"
#include "../admission/ig_admission.h"
#include "../api/ig_admin.h"
#include "ig_control_int.h"

#define TICK_MS 200

static struct {
    uv_loop_t loop;
    uv_thread_t tid;
    ig_wakeup inbox_wake;
    uv_timer_t tick, health, prefix_sweep;
    ig_inbox inbox; /* admin requests from the loop threads */
    atomic_int poked, stopping;
    const ig_control_config *cfg;
    ig_control_hooks hooks;
    int nthreads;
} ctl;

void ig_admin_msg_free(ig_admin_msg *m)
{
    if (!m)
        return;
    if (m->pin)
        ig_worker_unref(m->pin);
    free(m->target);
    free(m->body);
    free(m->reply);
    free(m->auth);
    free(m);
}

/* Publishing retires the old snapshot. Busy loop threads pass quiescent
 * points all the time; only one idle in epoll holds reclamation up, and the
 * tick wakes just that one. (Waking every thread on every publish costs more
 * than it saves: libuv's async handles spin while a sender is mid-send.) */
static void publish(void)
{
    if (ig_registry_publish())
        ig_err("registry: out of memory publishing a snapshot");
}

void ig_ctl_reply(ig_admin_msg *m, int status, json_t *doc)
{
    m->status = status;
    m->reply = json_dumps(doc, JSON_COMPACT);
    m->reply_len = m->reply ? strlen(m->reply) : 0;
    json_decref(doc);
    if (m->reply_to)
        ig_inbox_push(m->reply_to, &m->node);
    else
        ig_admin_msg_free(m); /* a start-up add: nobody to answer */
}

void ig_ctl_reply_raw(ig_admin_msg *m, int status, const char *body, size_t len)
{
    m->status = status;
    m->reply = malloc(len + 1);
    m->reply_len = m->reply ? len : 0;
    if (m->reply) {
        memcpy(m->reply, body, len);
        m->reply[len] = '\0';
    }
    if (m->reply_to)
        ig_inbox_push(m->reply_to, &m->node);
    else
        ig_admin_msg_free(m);
}

void ig_ctl_wake_loops(void)
{
    for (int i = 0; i < ctl.nthreads; i++)
        ctl.hooks.wake_reader(i);
}

uv_loop_t *ig_ctl_loop(void)
{
    return &ctl.loop;
}

const ig_control_config *ig_ctl_cfg(void)
{
    return ctl.cfg;
}

void ig_ctl_publish(void)
{
    publish();
}

ig_worker *ig_ctl_find_url(const char *url)
{
    ig_worker *w = ig_registry_find_url(url);
    char norm[1200];
    /* a URL as given may differ from the stored, normalised one (found without resolving it) */
    if (!w && ig_url_normalize(url, norm, sizeof(norm)) == 0)
        w = ig_registry_find_url(norm);
    return w;
}

ig_worker *ig_ctl_pick(const char *model, int *known)
{
    static uint64_t rr;
    const ig_snapshot *s = ig_snapshot_get(); /* the writer's own: always current */
    ig_worker *const *cand;
    int n = ig_snapshot_candidates(s, model, model ? strlen(model) : 0, &cand, known);
    return n > 0 ? cand[rr++ % (uint64_t)n] : NULL;
}

void ig_ctl_reply_error(ig_admin_msg *m, int status, const char *code, const char *msg)
{
    ig_ctl_reply(m, status,
                 json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type",
                           status == 404 ? "not_found_error" : "invalid_request_error", "code", code));
}

/* ---- the tick: breakers out of cool-down, pokes, reclamation ---- */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
    int changed = atomic_exchange(&ctl.poked, 0);
    uint64_t now = uv_now(&ctl.loop);
    for (int i = 0; i < ig_registry_count(); i++)
        changed |= ig_breaker_cooldown_over(ig_registry_at(i), now);
    if (changed)
        publish();
    if (ig_epoch_reclaim())
        for (int i = 0; i < ctl.nthreads; i++)
            if (ig_epoch_reader_behind(i))
                ctl.hooks.wake_reader(i);
}

/* The prefix index's upkeep, off the routing path: forget removed workers,
 * and evict the least recently used entries when it is 90% full (to 70%). */
static void prefix_sweep_cb(uv_timer_t *t)
{
    (void)t;
    const ig_control_config *cfg = ig_ctl_cfg();
    if (cfg->sticky) {
        int gone = ig_sticky_sweep(uv_now(&ctl.loop), (uint64_t)(cfg->max_idle_secs * 1000.0));
        if (gone)
            ig_debug("routing keys: %d idle ones forgotten, %d remembered", gone, ig_sticky_count());
    }
    if (!cfg->cache_aware)
        return;
    ig_holders live = {{0, 0}};
    for (int i = 0; i < ig_registry_count(); i++)
        ig_holders_add(&live, ig_registry_at(i)->id);
    size_t used = ig_prefix_sweep(&live, (uint32_t)(uv_now(&ctl.loop) / 100), 90, 70);
    ig_debug("prefix index: %zu of %zu entries in use", used, ig_prefix_capacity());
}

void ig_control_pin_admin(ig_worker *w)
{
    ig_admin_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return; /* the next admin-key request pins instead */
    ig_worker_ref(w);
    m->pin = w;
    ig_control_submit(m);
}

void ig_control_poke(void)
{
    atomic_store(&ctl.poked, 1);
}

/* ---- the inbox ---- */

static void inbox_cb(ig_wakeup *a)
{
    (void)a;
    ig_inbox_node *n = ig_inbox_take(&ctl.inbox);
    while (n) {
        ig_inbox_node *next = n->next;
        ig_ctl_handle(ig_container_of(n, ig_admin_msg, node));
        n = next;
    }
    if (atomic_load(&ctl.stopping)) {
        uv_stop(&ctl.loop);
    }
}

void ig_control_submit(ig_admin_msg *m)
{
    ig_inbox_push(&ctl.inbox, &m->node);
}

/* ---- life cycle ---- */

static void control_main(void *arg)
{
    (void)arg;
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
}

static int all_healthy(void)
{
    for (int i = 0; i < ig_registry_count(); i++)
        if (atomic_load(&ig_registry_at(i)->health) != IG_HEALTH_UP)
            return 0;
    return 1;
}

static void wake_cb(uv_timer_t *t)
{
    (void)t;
}

/* --worker-startup-timeout-secs (sgl-model-gateway's): every start-up
 * worker healthy before anything is served; checks every 250 ms meanwhile.
 * -ETIMEDOUT when they are not in time. Runs before the thread exists. */
static int wait_for_startup_workers(double secs)
{
    uint64_t deadline = uv_now(&ctl.loop) + (uint64_t)(secs * 1000.0);
    uv_timer_t poll;
    uv_timer_init(&ctl.loop, &poll);
    int rc = 0;
    while (!all_healthy()) {
        if (uv_now(&ctl.loop) >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        ig_ctl_health_round(NULL);
        uv_timer_start(&poll, wake_cb, 250, 0);
        while (uv_is_active((uv_handle_t *)&poll))
            uv_run(&ctl.loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&poll, NULL);
    uv_run(&ctl.loop, UV_RUN_NOWAIT);
    if (rc) {
        int up = 0;
        for (int i = 0; i < ig_registry_count(); i++)
            up += atomic_load(&ig_registry_at(i)->health) == IG_HEALTH_UP;
        ig_err("--worker-startup-timeout-secs: %d of %d workers healthy after %.0f s", up,
               ig_registry_count(), secs);
    }
    return rc;
}

int ig_control_start(const ig_control_config *cfg, int nthreads, const ig_control_hooks *hooks)
{
    ctl.cfg = cfg;
    ctl.hooks = *hooks;
    ctl.nthreads = nthreads;
    int rc = uv_loop_init(&ctl.loop);
    if (rc)
        return rc;
    ig_inbox_init(&ctl.inbox, &ctl.inbox_wake);
    if ((rc = ig_wakeup_init(&ctl.loop, &ctl.inbox_wake, inbox_cb)))
        return rc;
    uv_timer_init(&ctl.loop, &ctl.tick);
    uv_timer_init(&ctl.loop, &ctl.health);
    uv_timer_init(&ctl.loop, &ctl.prefix_sweep);

    /* start-up workers, discovered concurrently on this thread before any loop thread runs */
    int n_boot = cfg->n_worker_urls + cfg->n_prefill + cfg->n_decode, k = 0;
    ig_ctl_worker_spec *boot = calloc((size_t)(n_boot ? n_boot : 1), sizeof(*boot));
    if (!boot)
        return -ENOMEM;
    for (int i = 0; i < cfg->n_worker_urls; i++)
        boot[k++] =
            (ig_ctl_worker_spec){.url = cfg->worker_urls[i], .max_inflight = (int)cfg->worker_max_inflight};
    for (int i = 0; i < cfg->n_prefill; i++)
        boot[k++] = (ig_ctl_worker_spec){.url = cfg->prefill_urls[i],
                                         .max_inflight = (int)cfg->worker_max_inflight,
                                         .role = IG_ROLE_PREFILL,
                                         .bootstrap_port = cfg->prefill_ports[i]};
    for (int i = 0; i < cfg->n_decode; i++)
        boot[k++] = (ig_ctl_worker_spec){.url = cfg->decode_urls[i],
                                         .max_inflight = (int)cfg->worker_max_inflight,
                                         .role = IG_ROLE_DECODE};
    for (int i = 0; i < n_boot; i++)
        ig_ctl_add_worker(&boot[i], NULL);
    rc = ig_cluster_start(&ctl.loop, cfg);
    rc = rc ? rc : ig_share_start(&ctl.loop, cfg);
    if (!rc && ig_cluster_enabled())
        ig_cluster_publish_startup(boot, n_boot);
    free(boot);
    if (rc)
        return rc;
    for (int g = 1; g < cfg->n_groups; g++)
        for (int i = 0; i < cfg->groups[g].n_worker_urls; i++)
            ig_ctl_add_worker(
                &(ig_ctl_worker_spec){.url = cfg->groups[g].worker_urls[i], .max_inflight = -1, .group = g},
                NULL);
    while (ig_ctl_initial_pending() > 0)
        uv_run(&ctl.loop, UV_RUN_ONCE);
    if (cfg->worker_startup_timeout_secs > 0 &&
        (rc = wait_for_startup_workers(cfg->worker_startup_timeout_secs)))
        return rc;
    ig_epoch_drain(); /* no reader exists yet */

    uv_timer_start(&ctl.tick, tick_cb, TICK_MS, TICK_MS);
    if ((cfg->cache_aware || cfg->sticky) && cfg->eviction_interval_secs > 0) {
        uint64_t ms = (uint64_t)(cfg->eviction_interval_secs * 1000.0);
        uv_timer_start(&ctl.prefix_sweep, prefix_sweep_cb, ms, ms);
    }
    if (cfg->health_check_interval_secs > 0) {
        uint64_t ms = (uint64_t)(cfg->health_check_interval_secs * 1000.0);
        uv_timer_start(&ctl.health, ig_ctl_health_round, ms, ms);
    }
    return uv_thread_create(&ctl.tid, control_main, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void ig_control_stop(void)
{
    atomic_store(&ctl.stopping, 1);
    ig_wakeup_send(&ctl.inbox_wake);
    uv_thread_join(&ctl.tid);
    /* the loop threads are gone: close what is left here, then the registry */
    ig_cluster_stop();
    ig_share_stop();
    ig_ctl_workers_shutdown();
    ig_wakeup_close(&ctl.inbox_wake);
    uv_walk(&ctl.loop, close_walk, NULL);
    uv_run(&ctl.loop, UV_RUN_DEFAULT);
    ig_wakeup_release(&ctl.inbox_wake); /* the loop threads, its senders, are gone */
    ig_share_release();
    uv_loop_close(&ctl.loop);
    for (ig_inbox_node *n = ig_inbox_take(&ctl.inbox), *next; n; n = next) {
        next = n->next;
        ig_admin_msg_free(ig_container_of(n, ig_admin_msg, node));
    }
    ig_inbox_destroy(&ctl.inbox);
    ig_areal_shutdown();
    ig_ctl_fleet_shutdown();
    ig_registry_shutdown();
}
