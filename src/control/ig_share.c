/* The prefix index shared between gateways over NATS (--nats-servers):
 * the control thread's half of balance/ig_prefix_share.h. It drains the
 * loop threads' rings into messages on one subject and applies what the
 * other gateways publish there. NATS is a bus for hints, not state: a
 * message lost while the bus is away costs cache hits, never a request,
 * and nothing waits on it. cnats runs its own threads (reading, flushing,
 * reconnecting, delivering); a received message is handed to this thread
 * through an inbox, so the index and the registry are touched here only. */
#include <errno.h>
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../balance/ig_prefix.h"
#include "../balance/ig_prefix_share.h"
#include "../core/ig_inbox.h"
#include "../core/ig_log.h"
#include "ig_control_int.h"

#define BATCH_MS 2            /* inserts gather this long before they go: a message, not one per request */
#define MSG_BYTES (64 * 1024) /* at least one record of IG_PREFIX_MAX_BLOCKS keys */
#define RECONNECT_BUF (1024 * 1024) /* hints held while the bus is away; older ones are not worth sending */

typedef struct received {
    ig_inbox_node node;
    natsMsg *msg;
} received;

static struct {
    int on;
    natsConnection *nc;
    natsSubscription *sub;
    char subject[256];
    ig_wakeup put_wake, recv_wake; /* a ring got records; a message came */
    atomic_int wake_ready;
    ig_inbox inbox;
    uv_timer_t batch;
    uint8_t buf[MSG_BYTES];
    atomic_int connected;
    atomic_uint_fast64_t sent, lost, received, malformed, applied, unknown;
} sh;

/* --etcd-prefix "/infergate/" -> "infergate.prefix": one cluster, one subject */
static void subject_of(const char *prefix, char *out, size_t cap)
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
    memcpy(out + n, "prefix", 7);
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

static void put_wake_cb(ig_wakeup *w)
{
    (void)w;
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

static void recv_wake_cb(ig_wakeup *w)
{
    (void)w;
    uint32_t now = (uint32_t)(uv_now(ig_ctl_loop()) / 100);
    for (ig_inbox_node *n = ig_inbox_take(&sh.inbox), *next; n; n = next) {
        next = n->next;
        received *r = ig_container_of(n, received, node);
        int applied = ig_prefix_share_apply(natsMsg_GetData(r->msg), (size_t)natsMsg_GetDataLength(r->msg),
                                            resolve, NULL, now);
        if (applied < 0)
            atomic_fetch_add_explicit(&sh.malformed, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&sh.applied, (uint64_t)applied, memory_order_relaxed);
        atomic_fetch_add_explicit(&sh.received, 1, memory_order_relaxed);
        natsMsg_Destroy(r->msg);
        free(r);
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
    subject_of(cfg->etcd_prefix, sh.subject, sizeof(sh.subject));
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
    if (s != NATS_OK) {
        ig_err("--nats-servers: cannot subscribe to %s: %s", sh.subject, natsStatus_GetText(s));
        goto out;
    }
    ig_info("prefix sharing: the prefix index is shared on NATS subject %s", sh.subject);
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
    out->messages_sent = atomic_load(&sh.sent);
    out->messages_lost = atomic_load(&sh.lost);
    out->messages_received = atomic_load(&sh.received);
    out->messages_malformed = atomic_load(&sh.malformed);
    out->records_applied = atomic_load(&sh.applied);
    out->records_unknown = atomic_load(&sh.unknown);
    out->records_dropped = ig_prefix_share_dropped();
}
