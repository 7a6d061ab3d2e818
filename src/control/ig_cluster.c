/* Several gateways, one fleet (ig_control_int.h, docs/internals/cluster.md):
 * with --etcd-endpoints the worker registry lives in etcd and every
 * gateway follows it. This gateway holds a lease and its member key under
 * it; an admin add or remove is written to etcd first and applied here only
 * once etcd took it (etcd down: 503, nothing half-applied); every
 * --etcd-sync-interval-secs the workers are read back whole and this
 * gateway's registry is made to match (a full re-list, not events alone:
 * nothing is lost to a missed event). Routing never waits on etcd: it reads
 * the local snapshot, which keeps the last known state while etcd is away.
 *
 * Control thread only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/ig_log.h"
#include "ig_control_int.h"
#include "ig_etcd.h"

static struct {
    ig_etcd *etcd;
    const ig_control_config *cfg;
    uv_timer_t keepalive, sync;
    int64_t lease;
    int granting, syncing;
    int store_ok; /* the last call to etcd got an answer */
    char member_key[320], member_value[320];
    char workers_prefix[256];
} cl;

int ig_cluster_enabled(void)
{
    return cl.etcd != NULL;
}

/* ---- the worker's key and value ---- */

static void worker_key(char *out, size_t cap, const char *url)
{
    size_t p = strlen(cl.workers_prefix), u = strlen(url);
    if (p + u >= cap)
        u = cap - 1 - p; /* URLs are far shorter: normalised ones at most 1200 bytes */
    memcpy(out, cl.workers_prefix, p);
    memcpy(out + p, url, u);
    out[p + u] = '\0';
}

static char *spec_json(const ig_ctl_worker_spec *s)
{
    json_t *j = json_pack("{s:s,s:i,s:i,s:i}", "url", s->url, "max_inflight", s->max_inflight, "role",
                          s->role, "bootstrap_port", s->bootstrap_port);
    if (s->model_id)
        json_object_set_new(j, "model_id", json_string(s->model_id));
    if (s->api_key)
        json_object_set_new(j, "api_key", json_string(s->api_key));
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return t;
}

/* ---- membership: a lease, kept alive; the member key under it ---- */

static void put_member(void);

static void member_put(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg, (void)resp;
    cl.store_ok = ok;
    if (!ok)
        ig_warn("etcd: cannot register this gateway: %s", err);
}

static void granted(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg;
    cl.granting = 0;
    cl.store_ok = ok;
    if (!ok) {
        ig_warn("etcd: no lease: %s (routing goes on with the last known workers)", err);
        return;
    }
    cl.lease = ig_etcd_int(json_object_get(resp, "ID"));
    put_member();
}

static void put_member(void)
{
    ig_etcd_put(cl.etcd, cl.member_key, cl.member_value, cl.lease, member_put, NULL);
}

static void grant(void)
{
    if (cl.granting)
        return;
    cl.granting = 1;
    ig_etcd_lease_grant(cl.etcd, (int)cl.cfg->etcd_lease_ttl_secs, granted, NULL);
}

static void kept_alive(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg;
    cl.store_ok = ok;
    if (!ok) {
        ig_debug("etcd keep-alive: %s", err);
        return;
    }
    if (ig_etcd_int(json_object_get(json_object_get(resp, "result"), "TTL")) <= 0) {
        /* it expired while etcd was away: this gateway joins again */
        ig_warn("etcd: this gateway's lease had expired; registering again");
        cl.lease = 0;
        grant();
    }
}

static void keepalive_tick(uv_timer_t *t)
{
    (void)t;
    if (!cl.lease)
        grant();
    else
        ig_etcd_lease_keepalive(cl.etcd, cl.lease, kept_alive, NULL);
}

/* The start-up workers go into the shared registry, again before each read
 * until etcd took them (it may be away when this gateway starts); until
 * then a read without them does not remove them here. */
typedef struct startup {
    char key[1400], *value;
    int acked, putting;
} startup;
static startup *boot;
static int n_boot;

static int unpublished(const char *url)
{
    char key[1400];
    worker_key(key, sizeof(key), url);
    for (int i = 0; i < n_boot; i++)
        if (!boot[i].acked && !strcmp(boot[i].key, key))
            return 1;
    return 0;
}

static void startup_put(void *arg, int ok, json_t *resp, const char *err)
{
    startup *b = arg;
    (void)resp;
    b->putting = 0;
    b->acked = ok;
    if (!ok)
        ig_debug("etcd: a start-up worker is not in the shared registry yet: %s", err);
}

static void publish_startup(void)
{
    for (int i = 0; i < n_boot; i++)
        if (!boot[i].acked && !boot[i].putting) {
            boot[i].putting = 1;
            ig_etcd_put(cl.etcd, boot[i].key, boot[i].value, 0, startup_put, &boot[i]);
        }
}

void ig_cluster_publish_startup(const ig_ctl_worker_spec *specs, int n)
{
    boot = calloc((size_t)(n ? n : 1), sizeof(*boot));
    for (int i = 0; boot && i < n; i++) {
        char norm[1200];
        if (ig_url_normalize(specs[i].url, norm, sizeof(norm)) ||
            !(boot[n_boot].value = spec_json(&specs[i])))
            continue;
        worker_key(boot[n_boot].key, sizeof(boot[n_boot].key), norm);
        n_boot++;
    }
    publish_startup();
}

/* ---- the workers: read back whole, the registry made to match ---- */

static void synced(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg;
    cl.syncing = 0;
    cl.store_ok = ok;
    if (!ok) {
        ig_debug("etcd sync: %s", err);
        return;
    }
    json_t *kvs = json_object_get(resp, "kvs");
    int n = ig_registry_count();
    char *seen = calloc((size_t)(n ? n : 1), 1);
    if (!seen)
        return;
    size_t i;
    json_t *kv;
    json_array_foreach(kvs, i, kv)
    {
        char *key, *value;
        if (ig_etcd_kv(kv, &key, &value))
            continue;
        json_error_t jerr;
        json_t *j = json_loads(value, 0, &jerr);
        const char *url = json_string_value(json_object_get(j, "url"));
        ig_worker *w = url ? ig_ctl_find_url(url) : NULL;
        if (w) {
            for (int k = 0; k < n; k++)
                if (ig_registry_at(k) == w)
                    seen[k] = 1;
        } else if (url) { /* another gateway added it */
            json_t *cap = json_object_get(j, "max_inflight");
            ig_ctl_worker_spec s = {.url = url,
                                    .model_id = json_string_value(json_object_get(j, "model_id")),
                                    .api_key = json_string_value(json_object_get(j, "api_key")),
                                    .max_inflight = json_is_integer(cap) ? (int)json_integer_value(cap) : -1,
                                    .role = (int)json_integer_value(json_object_get(j, "role")),
                                    .bootstrap_port =
                                        (int)json_integer_value(json_object_get(j, "bootstrap_port"))};
            ig_ctl_add_worker(&s, NULL);
        }
        json_decref(j);
        free(key);
        free(value);
    }
    /* what etcd no longer has went through another gateway's remove (named
     * groups are this gateway's own); the list shifts as workers go, so from its end */
    for (int k = n - 1; k >= 0; k--) {
        ig_worker *w = ig_registry_at(k);
        if (!seen[k] && w->group == 0 && !unpublished(w->url)) {
            ig_info("worker %s was removed through another gateway", w->url);
            ig_ctl_remove_worker(w, NULL);
        }
    }
    free(seen);
}

static void publish_startup(void);

static void sync_tick(uv_timer_t *t)
{
    (void)t;
    if (cl.syncing)
        return;
    cl.syncing = 1;
    publish_startup(); /* calls go in order: the read below sees these */
    ig_etcd_range_prefix(cl.etcd, cl.workers_prefix, synced, NULL);
}

/* ---- admin writes: etcd first ---- */

typedef struct pending_write {
    ig_ctl_worker_spec spec; /* the strings below */
    char *url, *model_id, *api_key;
    ig_worker *w; /* a remove's (referenced) */
    ig_admin_msg *m;
} pending_write;

static void pending_free(pending_write *p)
{
    if (p->w)
        ig_worker_unref(p->w);
    free(p->url);
    free(p->model_id);
    free(p->api_key);
    free(p);
}

static void written(void *arg, int ok, json_t *resp, const char *err)
{
    pending_write *p = arg;
    (void)resp;
    cl.store_ok = ok;
    if (!ok) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the shared registry (etcd) did not take the change: %s; nothing changed",
                 err ? err : "no answer");
        ig_ctl_reply_error(p->m, 503, "store_unavailable", msg);
    } else if (p->w) {
        ig_ctl_remove_worker(p->w, p->m);
    } else {
        ig_ctl_add_worker(&p->spec, p->m);
    }
    pending_free(p);
}

void ig_cluster_add_worker(const ig_ctl_worker_spec *s, ig_admin_msg *m)
{
    pending_write *p = calloc(1, sizeof(*p));
    char key[1400], *value = NULL;
    if (p) {
        p->url = strdup(s->url);
        p->model_id = s->model_id ? strdup(s->model_id) : NULL;
        p->api_key = s->api_key ? strdup(s->api_key) : NULL;
        p->spec = *s;
        p->spec.url = p->url;
        p->spec.model_id = p->model_id;
        p->spec.api_key = p->api_key;
        p->m = m;
        value = p->url ? spec_json(&p->spec) : NULL;
    }
    char norm[1200];
    if (!value || ig_url_normalize(s->url, norm, sizeof(norm))) {
        free(value);
        if (p)
            pending_free(p);
        if (value || !p)
            ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        else
            ig_ctl_add_worker(s, m); /* a bad URL: said as without a cluster */
        return;
    }
    worker_key(key, sizeof(key), norm);
    ig_etcd_put(cl.etcd, key, value, 0, written, p);
    free(value);
}

void ig_cluster_remove_worker(ig_worker *w, ig_admin_msg *m)
{
    pending_write *p = calloc(1, sizeof(*p));
    char key[1400];
    if (!p) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    ig_worker_ref(w);
    p->w = w;
    p->m = m;
    worker_key(key, sizeof(key), w->url);
    ig_etcd_delete(cl.etcd, key, written, p);
}

int ig_cluster_start(uv_loop_t *loop, const ig_control_config *cfg)
{
    if (!cfg->n_etcd)
        return 0;
    cl.cfg = cfg;
    cl.etcd = ig_etcd_new(loop, cfg->etcd_endpoints, cfg->n_etcd, 2.0);
    if (!cl.etcd) {
        ig_err("--etcd-endpoints: no usable endpoint (http://host:port)");
        return -EINVAL;
    }
    snprintf(cl.workers_prefix, sizeof(cl.workers_prefix), "%sworkers/", cfg->etcd_prefix);
    unsigned long long id = ((unsigned long long)getpid() << 32) ^ uv_hrtime();
    snprintf(cl.member_key, sizeof(cl.member_key), "%sgateways/%016llx", cfg->etcd_prefix, id);
    snprintf(cl.member_value, sizeof(cl.member_value), "{\"addr\":\"%s\",\"pid\":%d}",
             cfg->self_addr ? cfg->self_addr : "", (int)getpid());
    cl.store_ok = 1;
    grant();
    uv_timer_init(loop, &cl.keepalive);
    uv_timer_init(loop, &cl.sync);
    uint64_t ka = (uint64_t)(cfg->etcd_lease_ttl_secs * 1000 / 3);
    uv_timer_start(&cl.keepalive, keepalive_tick, ka ? ka : 500, ka ? ka : 500);
    uint64_t every = (uint64_t)(cfg->etcd_sync_interval_secs * 1000);
    uv_timer_start(&cl.sync, sync_tick, every ? every : 1000, every ? every : 1000);
    ig_info("cluster: this gateway is %s in etcd (%d endpoints)", cl.member_key, cfg->n_etcd);
    return 0;
}

void ig_cluster_stop(void)
{
    for (int i = 0; i < n_boot; i++)
        free(boot[i].value);
    free(boot);
    boot = NULL;
    n_boot = 0;
    if (!cl.etcd)
        return;
    uv_timer_stop(&cl.keepalive);
    uv_timer_stop(&cl.sync);
    uv_close((uv_handle_t *)&cl.keepalive, NULL);
    uv_close((uv_handle_t *)&cl.sync, NULL);
    ig_etcd_free(cl.etcd);
    cl.etcd = NULL;
}
