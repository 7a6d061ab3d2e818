/* The prefix index shared between gateways over NATS (--nats-servers):
 * the control thread's half of balance/ig_prefix_share.h. It drains the
 * loop threads' rings into messages on one subject and applies what the
 * other gateways publish there. NATS is a bus for hints, not state: a
 * message lost while the bus is away costs cache hits, never a request,
 * and nothing waits on it. Every LOAD_MS while it has requests in flight
 * (else once a second) each gateway also reports its
 * in-flight counts per worker (when they changed, or to say it is still here) on
 * <base>.load, and keeps the others' last reports to add to its own counts
 * (ig_worker.remote_inflight); a gateway not heard from in PEER_TTL_MS no
 * longer counts. cnats runs its own threads (reading, flushing,
 * reconnecting, delivering); a received message is handed to this thread
 * through an inbox, so the index and the registry are touched here only. */
#include <errno.h>
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <xxhash.h>

#include "../balance/ig_prefix.h"
#include "../balance/ig_prefix_share.h"
#include "../core/ig_inbox.h"
#include "../core/ig_log.h"
#include "ig_control_int.h"

#define BATCH_MS 2            /* inserts gather this long before they go: a message, not one per request */
#define MSG_BYTES (64 * 1024) /* at least one record of IG_PREFIX_MAX_BLOCKS keys */
#define RECONNECT_BUF (1024 * 1024) /* hints held while the bus is away; older ones are not worth sending */
/* loads go this often while requests are in flight: well under a short
 * request's time, or the others' view of it is already stale (20 ms
 * measured no better than no loads at all on 40 ms requests) */
#define LOAD_MS 2
#define LOAD_REFRESH_MS 1000 /* ... and this often when they did not: "still here" */
#define PEER_TTL_MS 3000     /* a gateway silent this long no longer counts */
#define MAX_PEERS 64

typedef struct load_pair {
    uint64_t key;
    uint32_t inflight;
} load_pair;

/* another gateway, by its last load report */
typedef struct peer {
    uint64_t id, seen_ms;
    load_pair *pairs; /* sorted by key */
    int n, cap;
} peer;

typedef struct received {
    ig_inbox_node node;
    natsMsg *msg;
} received;

static struct {
    int on;
    natsConnection *nc;
    natsSubscription *sub;
    char subject[256], load_subject[256];
    natsSubscription *load_sub;
    uint64_t self_id;
    uv_timer_t load_timer;
    uint64_t reported_ms, reported_hash;
    uint64_t *own_keys; /* this gateway's report, built each tick */
    uint32_t *own_inflight;
    int own_cap;
    peer peers[MAX_PEERS];
    int npeers;
    ig_wakeup put_wake, recv_wake; /* a ring got records; a message came */
    atomic_int wake_ready;
    ig_inbox inbox;
    uv_timer_t batch;
    uint8_t buf[MSG_BYTES];
    atomic_int connected, peer_count;
    atomic_uint_fast64_t sent, lost, received, malformed, applied, unknown;
} sh;

/* --etcd-prefix "/infergate/" -> "infergate.prefix": one cluster, one subject */
static void subject_of(const char *prefix, const char *what, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = prefix ? prefix : ""; *p && n + 8 < cap; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '-';
        if (ok)
            out[n++] = *p;
        else if (n && out[n - 1] != '.')
            out[n++] = '.';
    }
    if (n && out[n - 1] != '.')
        out[n++] = '.';
    snprintf(out + n, cap - n, "%s", what);
}

void ig_control_share_wake(void *arg)
{
    (void)arg;
    if (atomic_load_explicit(&sh.wake_ready, memory_order_acquire))
        ig_wakeup_send(&sh.put_wake);
}

static void publish_cb(uv_timer_t *t)
{
    (void)t;
    ig_prefix_share_take_start();
    size_t len;
    while ((len = ig_prefix_share_take(sh.buf, sizeof(sh.buf))) > 0) {
        natsStatus s = natsConnection_Publish(sh.nc, sh.subject, sh.buf, (int)len);
        if (s == NATS_OK)
            atomic_fetch_add_explicit(&sh.sent, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&sh.lost, 1, memory_order_relaxed);
    }
}

static void load_tick(uv_timer_t *t);

static void put_wake_cb(ig_wakeup *w)
{
    (void)w;
    if (uv_timer_get_repeat(&sh.load_timer) != LOAD_MS) /* idle until now: loads go at the fast pace again */
        uv_timer_start(&sh.load_timer, load_tick, 0, LOAD_MS);
    if (!uv_is_active((uv_handle_t *)&sh.batch))
        uv_timer_start(&sh.batch, publish_cb, BATCH_MS, 0);
}

/* url_key -> this gateway's id for the same worker (a fleet of a few
 * hundred at most: a scan, on this thread, per record) */
static uint64_t resolve(uint64_t url_key, void *arg)
{
    (void)arg;
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        if (w->url_key == url_key && w->group == 0 &&
            !atomic_load_explicit(&w->removed, memory_order_relaxed))
            return w->id;
    }
    atomic_fetch_add_explicit(&sh.unknown, 1, memory_order_relaxed);
    return 0;
}

/* every worker's in flight through the other gateways, from their last reports */
static void sum_remote_loads(void)
{
    for (int i = 0; i < ig_registry_count(); i++) {
        ig_worker *w = ig_registry_at(i);
        long sum = 0;
        for (int p = 0; p < sh.npeers; p++) {
            const peer *pe = &sh.peers[p];
            int lo = 0, hi = pe->n;
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                if (pe->pairs[mid].key < w->url_key)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < pe->n && pe->pairs[lo].key == w->url_key)
                sum += pe->pairs[lo].inflight;
        }
        atomic_store_explicit(&w->remote_inflight, sum > INT32_MAX ? INT32_MAX : (int)sum,
                              memory_order_relaxed);
    }
}

static int by_key(const void *a, const void *b)
{
    uint64_t x = ((const load_pair *)a)->key, y = ((const load_pair *)b)->key;
    return x < y ? -1 : x > y;
}

/* another gateway's report replaces its last one; 0, or -EINVAL */
static int take_load_report(const void *msg, size_t len, uint64_t now_ms)
{
    uint64_t sender;
    int n, p;
    if (ig_load_report_parse(msg, len, &sender, &n))
        return -EINVAL;
    for (p = 0; p < sh.npeers && sh.peers[p].id != sender; p++)
        ;
    if (p == sh.npeers) {
        if (sh.npeers == MAX_PEERS)
            return 0; /* a cluster this wide counts its first MAX_PEERS gateways' loads */
        memset(&sh.peers[p], 0, sizeof(sh.peers[p]));
        sh.peers[p].id = sender;
        sh.npeers++;
    }
    peer *pe = &sh.peers[p];
    if (n > pe->cap) {
        load_pair *np = realloc(pe->pairs, (size_t)n * sizeof(*np));
        if (!np)
            return 0; /* keep the last report */
        pe->pairs = np;
        pe->cap = n;
    }
    for (int i = 0; i < n; i++)
        ig_load_report_pair(msg, i, &pe->pairs[i].key, &pe->pairs[i].inflight);
    if (n > 1)
        qsort(pe->pairs, (size_t)n, sizeof(*pe->pairs), by_key);
    pe->n = n;
    pe->seen_ms = now_ms;
    return 0;
}

static void drop_peer(int p)
{
    free(sh.peers[p].pairs);
    sh.peers[p] = sh.peers[--sh.npeers];
}

/* this gateway's loads out when they changed (or to say it is still here), silent gateways dropped */
static void load_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_now(ig_ctl_loop());
    int n = 0, expired = 0, busy = 0;
    if (ig_registry_count() > sh.own_cap) {
        int cap = ig_registry_count() * 2;
        uint64_t *k = realloc(sh.own_keys, (size_t)cap * sizeof(*k));
        if (k)
            sh.own_keys = k;
        uint32_t *v = k ? realloc(sh.own_inflight, (size_t)cap * sizeof(*v)) : NULL;
        if (v)
            sh.own_inflight = v;
        if (k && v)
            sh.own_cap = cap;
    }
    for (int i = 0; i < ig_registry_count() && n < sh.own_cap; i++) {
        ig_worker *w = ig_registry_at(i);
        if (w->group || atomic_load_explicit(&w->removed, memory_order_relaxed))
            continue;
        sh.own_keys[n] = w->url_key;
        sh.own_inflight[n] = ig_worker_inflight(w);
        busy |= sh.own_inflight[n++] != 0;
    }
    uint64_t h = XXH3_64bits(sh.own_inflight, (size_t)n * sizeof(*sh.own_inflight)) ^
                 XXH3_64bits(sh.own_keys, (size_t)n * sizeof(*sh.own_keys));
    /* not while the bus is away: a stale load is worse than none (peers drop ours after PEER_TTL_MS) */
    if (atomic_load(&sh.connected) && (h != sh.reported_hash || now - sh.reported_ms >= LOAD_REFRESH_MS)) {
        size_t len =
            ig_load_report_encode(sh.buf, sizeof(sh.buf), sh.self_id, sh.own_keys, sh.own_inflight, n);
        if (len && natsConnection_Publish(sh.nc, sh.load_subject, sh.buf, (int)len) == NATS_OK) {
            sh.reported_hash = h;
            sh.reported_ms = now;
            atomic_fetch_add_explicit(&sh.sent, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&sh.lost, 1, memory_order_relaxed);
        }
    }
    for (int p = sh.npeers - 1; p >= 0; p--)
        if (now - sh.peers[p].seen_ms > PEER_TTL_MS) {
            drop_peer(p);
            expired = 1;
        }
    if (expired)
        sum_remote_loads();
    /* nothing in flight and the others told: slow down until a request comes (put_wake_cb) */
    uint64_t pace = busy || h != sh.reported_hash ? LOAD_MS : LOAD_REFRESH_MS;
    if (pace == LOAD_REFRESH_MS) /* the next request routed wakes us (put_wake_cb) */
        ig_prefix_share_take_start();
    if (uv_timer_get_repeat(&sh.load_timer) != pace)
        uv_timer_start(&sh.load_timer, load_tick, pace, pace);
    atomic_store_explicit(&sh.peer_count, sh.npeers, memory_order_relaxed);
}

static void recv_wake_cb(ig_wakeup *w)
{
    (void)w;
    uint64_t now_ms = uv_now(ig_ctl_loop());
    uint32_t now = (uint32_t)(now_ms / 100);
    int loads = 0;
    for (ig_inbox_node *n = ig_inbox_take(&sh.inbox), *next; n; n = next) {
        next = n->next;
        received *r = ig_container_of(n, received, node);
        const void *data = natsMsg_GetData(r->msg);
        size_t len = (size_t)natsMsg_GetDataLength(r->msg);
        int applied;
        if (!strcmp(natsMsg_GetSubject(r->msg), sh.load_subject)) {
            applied = take_load_report(data, len, now_ms);
            loads += applied == 0;
            applied = applied < 0 ? applied : 0;
        } else {
            applied = ig_prefix_share_apply(data, len, resolve, NULL, now);
        }
        if (applied < 0)
            atomic_fetch_add_explicit(&sh.malformed, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&sh.applied, (uint64_t)applied, memory_order_relaxed);
        atomic_fetch_add_explicit(&sh.received, 1, memory_order_relaxed);
        natsMsg_Destroy(r->msg);
        free(r);
    }
    if (loads) {
        sum_remote_loads();
        atomic_store_explicit(&sh.peer_count, sh.npeers, memory_order_relaxed);
    }
}

/* cnats' delivery thread */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    received *r = malloc(sizeof(*r));
    if (!r) {
        natsMsg_Destroy(msg);
        return;
    }
    r->msg = msg;
    ig_inbox_push(&sh.inbox, &r->node);
}

/* cnats' threads: the bus came or went */
static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store(&sh.connected, 1);
    ig_info("prefix sharing: connected to NATS");
}
static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    atomic_store(&sh.connected, 0);
    ig_warn("prefix sharing: NATS away; routing goes on with this gateway's own index until it is back");
}

int ig_share_start(uv_loop_t *loop, const ig_control_config *cfg)
{
    if (!cfg->n_nats)
        return 0;
    natsOptions *opts = NULL;
    int rc = -EINVAL;
    subject_of(cfg->etcd_prefix, "prefix", sh.subject, sizeof(sh.subject));
    subject_of(cfg->etcd_prefix, "load", sh.load_subject, sizeof(sh.load_subject));
    if (getrandom(&sh.self_id, sizeof(sh.self_id), 0) != sizeof(sh.self_id))
        sh.self_id = ((uint64_t)getpid() << 32) ^ uv_hrtime();
    ig_inbox_init(&sh.inbox, &sh.recv_wake);
    sh.put_wake.fd = sh.recv_wake.fd = -1;
    if (ig_wakeup_init(loop, &sh.recv_wake, recv_wake_cb) || ig_wakeup_init(loop, &sh.put_wake, put_wake_cb))
        return -ENOMEM;
    uv_timer_init(loop, &sh.batch);
    sh.on = 1;
    atomic_store_explicit(&sh.wake_ready, 1, memory_order_release);
    char name[64];
    snprintf(name, sizeof(name), "infergate-%d", (int)getpid());
    natsStatus s = natsOptions_Create(&opts);
    s = s == NATS_OK ? natsOptions_SetServers(opts, (const char **)cfg->nats_servers, cfg->n_nats) : s;
    s = s == NATS_OK ? natsOptions_SetName(opts, name) : s;
    s = s == NATS_OK ? natsOptions_SetNoEcho(opts, true) : s; /* our own inserts are in our index already */
    s = s == NATS_OK ? natsOptions_SetMaxReconnect(opts, -1) : s;
    s = s == NATS_OK ? natsOptions_SetReconnectWait(opts, 250) : s;
    s = s == NATS_OK ? natsOptions_SetReconnectBufSize(opts, RECONNECT_BUF) : s;
    s = s == NATS_OK ? natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL) : s;
    s = s == NATS_OK ? natsOptions_SetReconnectedCB(opts, on_connected, NULL) : s;
    /* a bus not up yet is not a reason to refuse to start: connect in the background */
    s = s == NATS_OK ? natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, NULL) : s;
    if (s != NATS_OK)
        goto out;
    s = natsConnection_Connect(&sh.nc, opts);
    if (s == NATS_OK) {
        atomic_store(&sh.connected, 1);
    } else if (s != NATS_NOT_YET_CONNECTED) {
        ig_err("--nats-servers: %s", natsStatus_GetText(s));
        goto out;
    } else {
        ig_warn("prefix sharing: NATS not reachable yet; connecting in the background");
    }
    s = natsConnection_Subscribe(&sh.sub, sh.nc, sh.subject, on_msg, NULL);
    if (s == NATS_OK) /* a slow moment here drops hints, it does not grow without bound */
        s = natsSubscription_SetPendingLimits(sh.sub, 4096, 64 * 1024 * 1024);
    s = s == NATS_OK ? natsConnection_Subscribe(&sh.load_sub, sh.nc, sh.load_subject, on_msg, NULL) : s;
    s = s == NATS_OK ? natsSubscription_SetPendingLimits(sh.load_sub, 4096, 64 * 1024 * 1024) : s;
    if (s != NATS_OK) {
        ig_err("--nats-servers: cannot subscribe to %s: %s", sh.subject, natsStatus_GetText(s));
        goto out;
    }
    uv_timer_init(loop, &sh.load_timer);
    uv_timer_start(&sh.load_timer, load_tick, LOAD_MS, LOAD_MS);
    ig_info("prefix sharing: the prefix index is shared on NATS subject %s, loads on %s", sh.subject,
            sh.load_subject);
    rc = 0;
out:
    natsOptions_Destroy(opts);
    return rc;
}

void ig_share_stop(void)
{
    if (!sh.on)
        return;
    atomic_store_explicit(&sh.wake_ready, 0, memory_order_release);
    natsSubscription_Destroy(sh.sub);
    natsSubscription_Destroy(sh.load_sub);
    sh.load_sub = NULL;
    natsConnection_Close(sh.nc);
    natsConnection_Destroy(sh.nc);
    sh.sub = NULL;
    sh.nc = NULL;
    nats_CloseAndWait(2000); /* its threads gone: nothing pushes to the inbox any more */
    for (ig_inbox_node *n = ig_inbox_take(&sh.inbox), *next; n; n = next) {
        next = n->next;
        received *r = ig_container_of(n, received, node);
        natsMsg_Destroy(r->msg);
        free(r);
    }
    ig_inbox_destroy(&sh.inbox);
    while (sh.npeers)
        drop_peer(0);
    free(sh.own_keys);
    free(sh.own_inflight);
    sh.own_keys = NULL;
    sh.own_inflight = NULL;
    ig_wakeup_close(&sh.put_wake);
    ig_wakeup_close(&sh.recv_wake);
}

/* the loop threads are gone by now: nothing sends on the wake-ups */
void ig_share_release(void)
{
    if (!sh.on)
        return;
    ig_wakeup_release(&sh.put_wake);
    ig_wakeup_release(&sh.recv_wake);
    sh.on = 0;
}

void ig_control_share_stats(ig_share_stats *out)
{
    out->on = sh.on;
    out->connected = atomic_load(&sh.connected);
    out->peers = atomic_load(&sh.peer_count);
    out->messages_sent = atomic_load(&sh.sent);
    out->messages_lost = atomic_load(&sh.lost);
    out->messages_received = atomic_load(&sh.received);
    out->messages_malformed = atomic_load(&sh.malformed);
    out->records_applied = atomic_load(&sh.applied);
    out->records_unknown = atomic_load(&sh.unknown);
    out->records_dropped = ig_prefix_share_dropped();
}
