/* Event-loop threads: each owns a loop, a SO_REUSEPORT listener, its client
 * connections, its share of the upstream pools, the admission queue and the
 * buffer free lists. Nothing here is shared between threads except the stop
 * flag, the wake-up and the inbox. What a request means is not known here:
 * the app hands in the hooks that route requests and take messages. */
#ifndef IG_THREAD_H
#define IG_THREAD_H
#include <stdatomic.h>
#include <uv.h>

#include "../admission/ig_admission.h"
#include "../core/ig_freelist.h"
#include "../core/ig_inbox.h"
#include "../core/ig_list.h"
#include "../core/ig_wakeup.h"
#include "../net/ig_tls.h"
#include "../obs/ig_access_log.h"
#include "../obs/ig_stats.h"
#include "../proxy/ig_request.h"
#include "../upstream/ig_pool.h"

/* A client's request buffer starts at this size (from the thread's free list). */
#define IG_RBUF_SIZE (16 * 1024)
#define IG_BIG_RBUF_KEEP (4u << 20)
#define IG_BIG_RBUF_TOTAL (16u << 20)
#define IG_BIG_RBUFS 8
/* A body that streams through (a forwarded upload) is read into a window
 * of this size past its head: the rest waits in the client's socket. */
#define IG_STREAM_WINDOW (256 * 1024)
/* Request and response heads are built in buffers of this size (they grow past it). */
#define IG_HEAD_SIZE 4096

typedef struct ig_server_config {
    double client_idle_timeout_secs;   /* between requests */
    double client_header_timeout_secs; /* the whole head, from its first byte */
    double client_body_timeout_secs;   /* the whole body, from the end of its head */
    double drain_timeout_secs;         /* on stop, how long streams may finish */
    uint32_t max_header_size;
    uint64_t max_payload_size;
    uint32_t max_client_connections;
    uint64_t max_buffered_body_bytes; /* request bytes held, all clients together */
    ig_tls_server *tls;               /* clients speak HTTPS (NULL: plain HTTP) */
    int metrics_fd;                   /* --prometheus-port: a bound socket for /metrics alone (-1: none) */
} ig_server_config;

typedef struct ig_server_hooks {
    void (*on_request)(ig_request *r); /* a request is read: route it */
    /* its head is read (method, target, headers, body_length): 1 when its
     * body should stream to the handler as it arrives, on_request now */
    int (*streams_body)(ig_request *r);
    void (*on_message)(ig_inbox_node *n); /* something came back through the thread's inbox */
} ig_server_hooks;

typedef struct ig_thread {
    int idx;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t metrics_listener; /* thread 0, with --prometheus-port */
    int metrics_open;
    ig_wakeup wake; /* stop, admin answers, epoch nudges, freed slots: from other threads */
    uv_timer_t sweep;
    uv_timer_t drain_timer;
    uv_prepare_t prepare; /* quiescent points for the registry's epochs, log flush */
    uv_check_t check;
    uv_thread_t tid;
    int listen_fd;
    const ig_server_config *cfg;
    const ig_server_hooks *hooks;
    /* Memory a request needs only for a while comes from here and goes back
     * as soon as it is done with, so an open stream or an idle keep-alive
     * connection holds little more than its struct. */
    ig_freelist blocks;          /* ig_block: upstream reads */
    ig_freelist wreqs;           /* client writes */
    ig_freelist rbufs;           /* IG_RBUF_SIZE: client request buffers */
    ig_freelist heads;           /* IG_HEAD_SIZE: request/response heads being built or parsed */
    ig_freelist hdr_tables;      /* ig_hdr[IG_MAX_HEADERS]: header slices of a head being read */
    char rscratch[IG_RBUF_SIZE]; /* client reads with no request buffer (one read at a time) */
    /* Big request buffers (each up to IG_BIG_RBUF_KEEP, IG_BIG_RBUF_TOTAL in
     * all) kept for the next big bodies: a fresh one costs a page fault
     * every 4 KiB as the kernel copies the body in, more than the body scan
     * itself. Freed when unused for a few seconds. */
    char *big_rbuf[IG_BIG_RBUFS];
    size_t big_rbuf_cap[IG_BIG_RBUFS], big_rbuf_bytes;
    int n_big_rbuf;
    uint64_t big_rbuf_used_ms;
    ig_pool_config pool_cfg;
    ig_upstream_ctx up; /* this thread's worker connections */
    ig_proxy_ctx px;    /* what the proxy keeps per thread */
    ig_admq admq;       /* requests of this thread waiting for a worker slot */
    ig_list clients;
    int nclients;
    ig_list budget_waiters; /* clients whose body waits for --max-buffered-body-bytes */
    uv_timer_t budget_timer;
    int draining;
    atomic_int stop_requested;
    uint64_t rid_seq;
    char rid_prefix[32];
    ig_inbox replies; /* answers from the control thread */
    ig_alog alog;
    ig_thread_stats stats;
} ig_thread;

/** Prepare the loop threads (listening sockets already bound). 0 or negative errno. */
int ig_threads_init(ig_thread *ths, int n, const ig_server_config *cfg, const ig_pool_config *pool,
                    const int *fds, const ig_server_hooks *hooks);
/** Run them. */
int ig_threads_run(ig_thread *ths, int n);
/** Every loop thread, for /metrics and wake-ups. */
extern ig_thread *ig_all_threads;
extern int ig_n_threads;
/** Ask every thread to drain and end. */
void ig_threads_stop(ig_thread *ths, int n);
void ig_threads_join(ig_thread *ths, int n);
/** Close the loop threads' wake-up descriptors: only once nothing can send
 * to them any more (loop threads joined, control thread stopped). */
void ig_threads_release_wakeups(ig_thread *ths, int n);
/** Wake loop thread i (any thread): it passes a quiescent point and retries its queue. */
void ig_thread_wake(int i);
/** Give the kept big request buffers back (idle, or at exit). */
void ig_thread_free_big_rbufs(ig_thread *th);
/** A client connection of th closed (ig_h1conn). */
void ig_thread_client_closed(ig_thread *th);
#endif
