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
    int granting, syncing, sync_again; /* sync_again: a change was seen while a read ran */
    int watch_up;
    int store_ok; /* the last call to etcd got an answer */
    char member_key[320], member_value[320];
    char workers_prefix[256], members_prefix[256], pause_key[256], acks_prefix[256], ack_key[320];
    char state_prefix[240], versions_key[256]; /* the fleet's state: pause_key and versions_key under it */
    char areal_prefix[240];                    /* AReaL's sessions and registered models */
    int64_t versions_applied;
    /* the pause state: the revision of the pause key applied here */
    uv_timer_t pause_poll, barrier;
    int64_t pause_applied, pause_acked;
    int polling_pause, acking;
    struct barrier *wait; /* a pause this gateway asked for, until every gateway applied it */
} cl;

typedef struct barrier {
    int64_t rev;
    uint64_t deadline_ms;
    void (*cb)(void *arg, int ok, const char *err);
    void *arg;
    json_t *members; /* the last member list read, while the acks are read */
    char *value;     /* the state, until etcd took it */
    int reading;
} barrier;

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
    if (s->group > 0) /* by name: the gateways that have a group of that name take it */
        json_object_set_new(j, "group", json_string(cl.cfg->groups[s->group].name));
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
    cl.store_ok = ok; /* the round ends with the sessions' read (areal_synced) */
    if (!ok) {
        ig_debug("etcd sync: %s", err);
        return;
    }
    static uint32_t round;
    json_t *kvs = json_object_get(resp, "kvs");
    int n = ig_registry_count();
    round++;
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
        json_t *cap = json_object_get(j, "max_inflight");
        int group = ig_ctl_group_index(json_string_value(json_object_get(j, "group")));
        if (!w && group < 0) { /* a worker group this gateway's --config does not have */
            json_decref(j);
            free(key);
            free(value);
            continue;
        }
        if (w) {
            w->store_seen = round;
            if (json_is_integer(cap) &&
                json_integer_value(cap) >= 0) /* a cap changed through another gateway */
                atomic_store(&w->max_inflight, (int)json_integer_value(cap));
        } else if (url) { /* another gateway added it */
            ig_ctl_worker_spec s = {.url = url,
                                    .model_id = json_string_value(json_object_get(j, "model_id")),
                                    .api_key = json_string_value(json_object_get(j, "api_key")),
                                    .max_inflight = json_is_integer(cap) ? (int)json_integer_value(cap) : -1,
                                    .group = group,
                                    .role = (int)json_integer_value(json_object_get(j, "role")),
                                    .bootstrap_port =
                                        (int)json_integer_value(json_object_get(j, "bootstrap_port"))};
            ig_ctl_add_worker(&s, NULL);
        }
        json_decref(j);
        free(key);
        free(value);
    }
    /* what etcd no longer has went through another gateway's remove (the workers of
     * --config's groups are this gateway's own); the list shifts as workers go, so from its end */
    for (int k = n - 1; k >= 0; k--) {
        ig_worker *w = ig_registry_at(k);
        if (w->store_seen != round && !ig_ctl_worker_from_config(w) && !unpublished(w->url)) {
            ig_info("worker %s was removed through another gateway", w->url);
            ig_ctl_remove_worker(w, NULL);
        }
    }
}

static void publish_startup(void);

static void sync_tick(uv_timer_t *t);

static void areal_synced(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg;
    cl.syncing = 0;
    if (cl.sync_again) { /* the watch saw a change this read may have missed: once more */
        cl.sync_again = 0;
        sync_tick(NULL);
    }
    cl.store_ok = ok;
    if (!ok) {
        ig_debug("etcd sync (sessions): %s", err);
        return;
    }
    ig_areal_follow(json_object_get(resp, "kvs"), strlen(cl.areal_prefix));
}

static void sync_tick(uv_timer_t *t)
{
    (void)t;
    if (cl.syncing)
        return;
    cl.syncing = 1;
    publish_startup(); /* calls go in order: the read below sees these */
    ig_etcd_range_prefix(cl.etcd, cl.workers_prefix, synced, NULL);
    ig_etcd_range_prefix(cl.etcd, cl.areal_prefix, areal_synced, NULL); /* after the workers it names */
}

/* ---- AReaL's state: written through, in transactions ---- */

typedef struct write_job {
    char **keys, **values;
    int n, at;
    void (*done)(void *arg, int ok, const char *err);
    void *arg;
} write_job;

static void job_free(write_job *j)
{
    for (int i = 0; i < j->n; i++) {
        free(j->keys[i]);
        free(j->values[i]);
    }
    free(j->keys);
    free(j->values);
    free(j);
}

static void job_next(write_job *j);

static void job_written(void *arg, int ok, json_t *resp, const char *err)
{
    write_job *j = arg;
    (void)resp;
    cl.store_ok = ok;
    if (ok && j->at < j->n) {
        job_next(j);
        return;
    }
    j->done(j->arg, ok, ok ? NULL : err ? err : "no answer");
    job_free(j);
}

static void job_next(write_job *j)
{
    int k = j->n - j->at < IG_ETCD_TXN_MAX ? j->n - j->at : IG_ETCD_TXN_MAX, at = j->at;
    j->at += k;
    if (ig_etcd_txn(cl.etcd, j->keys + at, j->values + at, k, job_written, j))
        job_written(j, 0, NULL, "out of memory");
}

void ig_cluster_write(char *const *keys, char *const *values, int n,
                      void (*done)(void *arg, int ok, const char *err), void *arg)
{
    write_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->keys = calloc((size_t)(n ? n : 1), sizeof(char *))) ||
        !(j->values = calloc((size_t)(n ? n : 1), sizeof(char *)))) {
        if (j)
            free(j->keys);
        free(j);
        done(arg, 0, "out of memory");
        return;
    }
    j->done = done;
    j->arg = arg;
    for (; j->n < n; j->n++) {
        size_t len = strlen(cl.areal_prefix) + strlen(keys[j->n]) + 1;
        if (!(j->keys[j->n] = malloc(len)) || (values[j->n] && !(j->values[j->n] = strdup(values[j->n])))) {
            j->n++;
            job_free(j);
            done(arg, 0, "out of memory");
            return;
        }
        snprintf(j->keys[j->n], len, "%s%s", cl.areal_prefix, keys[j->n]);
    }
    if (!n) {
        done(arg, 1, NULL);
        job_free(j);
        return;
    }
    job_next(j);
}

typedef struct claim {
    void (*done)(void *arg, int ok, const char *value, const char *err);
    void *arg;
    char *value;
} claim;

static void claimed(void *arg, int ok, json_t *resp, const char *err)
{
    claim *c = arg;
    cl.store_ok = ok;
    char *key = NULL, *there = NULL;
    if (ok && !json_is_true(json_object_get(resp, "succeeded"))) { /* another gateway's came first */
        json_t *kv = json_array_get(
            json_object_get(
                json_object_get(json_array_get(json_object_get(resp, "responses"), 0), "response_range"),
                "kvs"),
            0);
        if (!kv || ig_etcd_kv(kv, &key, &there))
            ok = 0, err = "the key is there but could not be read";
    }
    c->done(c->arg, ok, ok ? (there ? there : c->value) : NULL, ok ? NULL : err ? err : "no answer");
    free(key);
    free(there);
    free(c->value);
    free(c);
}

void ig_cluster_claim(const char *key, const char *value,
                      void (*done)(void *arg, int ok, const char *value, const char *err), void *arg)
{
    claim *c = calloc(1, sizeof(*c));
    char full[600];
    snprintf(full, sizeof(full), "%s%s", cl.areal_prefix, key);
    if (c) {
        c->done = done;
        c->arg = arg;
    }
    if (!c || !(c->value = strdup(value)) || ig_etcd_put_if_absent(cl.etcd, full, value, claimed, c)) {
        if (c)
            free(c->value);
        free(c);
        done(arg, 0, NULL, "out of memory");
    }
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

/* An admin write etcd did not take: said, and nothing changed. 1 when so. */
void ig_ctl_reply_store_error(ig_admin_msg *m, const char *err)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "the shared registry (etcd) did not take the change: %s; nothing changed",
             err ? err : "no answer");
    ig_ctl_reply_error(m, 503, "store_unavailable", msg);
}

static int refused(int ok, const char *err, ig_admin_msg *m)
{
    cl.store_ok = ok;
    if (ok)
        return 0;
    ig_ctl_reply_store_error(m, err);
    return 1;
}

static void written(void *arg, int ok, json_t *resp, const char *err)
{
    pending_write *p = arg;
    (void)resp;
    if (!refused(ok, err, p->m)) {
        if (p->w)
            ig_ctl_remove_worker(p->w, p->m);
        else
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

/* ---- a cap changed live: read, changed, written back ---- */

typedef struct cap_change {
    ig_worker *w; /* referenced */
    int cap;
    ig_admin_msg *m;
    char key[1400];
} cap_change;

static void cap_written(void *arg, int ok, json_t *resp, const char *err)
{
    cap_change *c = arg;
    (void)resp;
    if (!refused(ok, err, c->m)) {
        atomic_store(&c->w->max_inflight, c->cap);
        ig_ctl_reply(c->m, 200, json_pack("{s:o}", "worker", ig_worker_json(c->w)));
    }
    ig_worker_unref(c->w);
    free(c);
}

static void cap_read(void *arg, int ok, json_t *resp, const char *err)
{
    cap_change *c = arg;
    json_t *kv = json_array_get(json_object_get(resp, "kvs"), 0);
    char *key = NULL, *value = NULL;
    json_t *j = NULL;
    if (ok && kv && !ig_etcd_kv(kv, &key, &value)) {
        json_error_t jerr;
        j = json_loads(value, 0, &jerr);
    }
    free(key);
    free(value);
    if (!json_is_object(j)) { /* etcd away, or it does not have the worker */
        json_decref(j);
        cap_written(c, 0, NULL, ok ? "the worker is not in the shared registry" : err);
        return;
    }
    json_object_set_new(j, "max_inflight", json_integer(c->cap));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text || ig_etcd_put(cl.etcd, c->key, text, 0, cap_written, c))
        cap_written(c, 0, NULL, "out of memory");
    free(text);
}

void ig_cluster_set_cap(ig_worker *w, int cap, ig_admin_msg *m)
{
    cap_change *c = calloc(1, sizeof(*c));
    if (!c) {
        ig_ctl_reply_error(m, 503, "out_of_memory", "out of memory");
        return;
    }
    ig_worker_ref(w);
    c->w = w;
    c->cap = cap;
    c->m = m;
    worker_key(c->key, sizeof(c->key), w->url);
    ig_etcd_get(cl.etcd, c->key, cap_read, c);
}

/* ---- pause as a barrier: the state in etcd, each gateway's ack of the revision it applied ---- */

#define PAUSE_POLL_MS 100
#define BARRIER_POLL_MS 50
#define BARRIER_TIMEOUT_MS 15000

static void acked(void *arg, int ok, json_t *resp, const char *err)
{
    int64_t rev = (int64_t)(intptr_t)arg;
    (void)resp, (void)err;
    cl.acking = 0;
    if (ok && rev > cl.pause_acked)
        cl.pause_acked = rev;
}

static void ack(void)
{
    if (cl.acking || cl.pause_acked >= cl.pause_applied || !cl.lease)
        return;
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)cl.pause_applied);
    cl.acking = 1;
    ig_etcd_put(cl.etcd, cl.ack_key, v, cl.lease, acked, (void *)(intptr_t)cl.pause_applied);
}

/* A pause state (its JSON), at revision rev, held from now on here. */
static void apply_pause(const char *value, int64_t rev)
{
    json_error_t jerr;
    json_t *j = json_loads(value, 0, &jerr), *ms = json_object_get(j, "models");
    size_t n = json_array_size(ms);
    char **models = calloc(n + 1, sizeof(char *));
    int k = 0;
    for (size_t i = 0; models && i < n; i++)
        if (json_is_string(json_array_get(ms, i)))
            models[k++] = (char *)json_string_value(json_array_get(ms, i));
    if (models) {
        ig_fleet_apply_pause(json_is_true(json_object_get(j, "all")), models, k);
        cl.pause_applied = rev;
        ig_info("cluster: pause state of revision %lld held (%s)", (long long)rev, value);
    }
    free(models);
    json_decref(j);
    ack();
}

/* The weight versions another gateway set: the fleet's and each worker's. */
static void apply_versions(const char *value, int64_t rev)
{
    json_error_t jerr;
    json_t *j = json_loads(value, 0, &jerr), *ws = json_object_get(j, "workers"), *v;
    const char *url;
    json_object_foreach(ws, url, v)
    {
        ig_worker *w = ig_ctl_find_url(url);
        if (w && json_is_integer(v))
            atomic_store(&w->version, (long)json_integer_value(v));
    }
    ig_fleet_apply_version((long)json_integer_value(json_object_get(j, "version")));
    cl.versions_applied = rev;
    json_decref(j);
}

static void state_read(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg, (void)err;
    cl.polling_pause = 0;
    size_t i;
    json_t *kv;
    json_array_foreach(ok ? json_object_get(resp, "kvs") : NULL, i, kv)
    {
        int64_t rev = ig_etcd_int(json_object_get(kv, "mod_revision"));
        char *key, *value;
        if (ig_etcd_kv(kv, &key, &value))
            continue;
        if (!strcmp(key, cl.pause_key) && rev > cl.pause_applied)
            apply_pause(value, rev);
        else if (!strcmp(key, cl.versions_key) && rev > cl.versions_applied)
            apply_versions(value, rev);
        free(key);
        free(value);
    }
    ack(); /* again, if the last one was lost */
}

static void versions_put(void *arg, int ok, json_t *resp, const char *err)
{
    (void)arg;
    cl.store_ok = ok;
    if (ok)
        cl.versions_applied = ig_etcd_int(json_object_get(json_object_get(resp, "header"), "revision"));
    else
        ig_warn("etcd: the weight versions set here are not shared: %s", err);
}

void ig_cluster_put_versions(long fleet_version)
{
    json_t *j = json_pack("{s:I,s:{}}", "version", (json_int_t)fleet_version, "workers");
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (!w->group)
            json_object_set_new(json_object_get(j, "workers"), w->url,
                                json_integer(atomic_load(&w->version)));
    }
    char *value = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (value)
        ig_etcd_put(cl.etcd, cl.versions_key, value, 0, versions_put, NULL);
    free(value);
}

static void pause_tick(uv_timer_t *t)
{
    (void)t;
    if (cl.polling_pause)
        return;
    cl.polling_pause = 1;
    ig_etcd_range_prefix(cl.etcd, cl.state_prefix, state_read, NULL); /* the pause and the versions */
}

/* The watch: a change anywhere under the prefix reads the state and the
 * registry at once, instead of at the next poll (which goes on: a watch
 * can break or miss, the reads cannot). */
static void watch_changed(void *arg)
{
    (void)arg;
    pause_tick(NULL);
    if (cl.syncing)
        cl.sync_again = 1;
    else
        sync_tick(NULL);
}

static void watch_up(void *arg, int on)
{
    (void)arg;
    if (on != cl.watch_up)
        ig_info("etcd: watching %s %s", cl.cfg->etcd_prefix,
                on ? "(changes seen at once)" : "broke; polling until it is back");
    cl.watch_up = on;
}

static void barrier_end(int ok, const char *err)
{
    barrier *b = cl.wait;
    cl.wait = NULL;
    uv_timer_stop(&cl.barrier);
    json_decref(b->members);
    b->cb(b->arg, ok, err);
    free(b);
}

static void acks_read(void *arg, int ok, json_t *resp, const char *err)
{
    barrier *b = arg;
    b->reading = 0;
    if (!ok || b != cl.wait)
        return;
    (void)err;
    size_t i, j;
    json_t *m, *a;
    int all = 1;
    json_array_foreach(json_object_get(b->members, "kvs"), i, m)
    {
        char *mk, *mv, *ak, *av;
        if (ig_etcd_kv(m, &mk, &mv))
            continue;
        const char *id = mk + strlen(cl.members_prefix);
        int seen = 0;
        json_array_foreach(json_object_get(resp, "kvs"), j, a)
        {
            if (ig_etcd_kv(a, &ak, &av))
                continue;
            seen |= !strcmp(ak + strlen(cl.acks_prefix), id) && strtoll(av, NULL, 10) >= b->rev;
            free(ak);
            free(av);
        }
        all &= seen;
        free(mk);
        free(mv);
    }
    if (all)
        barrier_end(1, NULL);
}

static void members_read(void *arg, int ok, json_t *resp, const char *err)
{
    barrier *b = arg;
    (void)err;
    if (!ok || b != cl.wait) {
        b->reading = 0;
        return;
    }
    json_decref(b->members);
    b->members = json_incref(resp);
    ig_etcd_range_prefix(cl.etcd, cl.acks_prefix, acks_read, b);
}

static void barrier_tick(uv_timer_t *t)
{
    (void)t;
    barrier *b = cl.wait;
    if (!b)
        return;
    if (uv_now(t->loop) > b->deadline_ms) {
        barrier_end(0, "a live gateway did not hold the pause within 15 s");
        return;
    }
    if (b->reading)
        return;
    b->reading = 1;
    ig_etcd_range_prefix(cl.etcd, cl.members_prefix, members_read, b);
}

static void pause_written(void *arg, int ok, json_t *resp, const char *err)
{
    barrier *b = arg;
    cl.store_ok = ok;
    if (!ok) {
        b->cb(b->arg, 0, err);
        free(b->value);
        free(b);
        return;
    }
    b->rev = ig_etcd_int(json_object_get(json_object_get(resp, "header"), "revision"));
    apply_pause(b->value, b->rev);
    free(b->value);
    b->value = NULL;
    if (cl.wait) /* one barrier at a time: the newer state wins, the older is answered */
        barrier_end(1, NULL);
    cl.wait = b;
    b->deadline_ms = uv_now(cl.barrier.loop) + BARRIER_TIMEOUT_MS;
    uv_timer_start(&cl.barrier, barrier_tick, 0, BARRIER_POLL_MS);
}

void ig_cluster_set_pause(int all, char *const *models, int n, void (*cb)(void *arg, int ok, const char *err),
                          void *arg)
{
    json_t *j = json_pack("{s:b,s:[]}", "all", all, "models");
    for (int i = 0; i < n; i++)
        json_array_append_new(json_object_get(j, "models"), json_string(models[i]));
    char *value = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    barrier *b = calloc(1, sizeof(*b));
    if (!b || !value) {
        free(b);
        free(value);
        cb(arg, 0, "out of memory");
        return;
    }
    b->cb = cb;
    b->arg = arg;
    b->value = value;
    ig_etcd_put(cl.etcd, cl.pause_key, value, 0, pause_written, b);
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
    snprintf(cl.members_prefix, sizeof(cl.members_prefix), "%sgateways/", cfg->etcd_prefix);
    snprintf(cl.acks_prefix, sizeof(cl.acks_prefix), "%spause-acks/", cfg->etcd_prefix);
    snprintf(cl.state_prefix, sizeof(cl.state_prefix), "%sstate/", cfg->etcd_prefix);
    snprintf(cl.areal_prefix, sizeof(cl.areal_prefix), "%sareal/", cfg->etcd_prefix);
    snprintf(cl.pause_key, sizeof(cl.pause_key), "%spause", cl.state_prefix);
    snprintf(cl.versions_key, sizeof(cl.versions_key), "%sversions", cl.state_prefix);
    unsigned long long id = ((unsigned long long)getpid() << 32) ^ uv_hrtime();
    snprintf(cl.member_key, sizeof(cl.member_key), "%s%016llx", cl.members_prefix, id);
    snprintf(cl.ack_key, sizeof(cl.ack_key), "%s%016llx", cl.acks_prefix, id);
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
    uv_timer_init(loop, &cl.pause_poll);
    uv_timer_init(loop, &cl.barrier);
    uv_timer_start(&cl.pause_poll, pause_tick, 0, PAUSE_POLL_MS);
    ig_etcd_watch(cl.etcd, cfg->etcd_prefix, watch_changed, watch_up, NULL);
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
    uv_timer_stop(&cl.pause_poll);
    uv_timer_stop(&cl.barrier);
    uv_close((uv_handle_t *)&cl.keepalive, NULL);
    uv_close((uv_handle_t *)&cl.sync, NULL);
    uv_close((uv_handle_t *)&cl.pause_poll, NULL);
    uv_close((uv_handle_t *)&cl.barrier, NULL);
    if (cl.wait) {
        json_decref(cl.wait->members);
        free(cl.wait);
        cl.wait = NULL;
    }
    ig_etcd_free(cl.etcd);
    cl.etcd = NULL;
}
