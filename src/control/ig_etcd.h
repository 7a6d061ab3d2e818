/* A client of etcd's v3 JSON gateway (plain HTTP/1.1 on its client port:
 * no gRPC library), for the control thread: the calls a gateway cluster
 * needs (put, range, delete, lease grant and keep-alive). Calls go one at a
 * time, in order, on one kept connection; a call whose endpoint fails goes
 * to the next endpoint of the list before it is reported failed. Keys and
 * values are plain strings here (etcd's base64 is done inside).
 *
 * Threads: the control thread only. */
#ifndef IG_ETCD_H
#define IG_ETCD_H
#include <jansson.h>
#include <stdint.h>
#include <uv.h>

typedef struct ig_etcd ig_etcd;

/* ok: etcd answered 2xx (resp: its JSON, borrowed for the call); else err says why. */
typedef void (*ig_etcd_cb)(void *arg, int ok, json_t *resp, const char *err);

/** A client of the endpoints ("http://host:port"); NULL when none parses. */
ig_etcd *ig_etcd_new(uv_loop_t *loop, char *const *endpoints, int n, double timeout_secs);
void ig_etcd_free(ig_etcd *e);

/** Put key = value (lease 0: none). */
int ig_etcd_put(ig_etcd *e, const char *key, const char *value, int64_t lease, ig_etcd_cb cb, void *arg);
/** One key (resp "kvs": none or one). */
int ig_etcd_get(ig_etcd *e, const char *key, ig_etcd_cb cb, void *arg);
/** Every key under prefix (resp "kvs": decode each with ig_etcd_kv). */
int ig_etcd_range_prefix(ig_etcd *e, const char *prefix, ig_etcd_cb cb, void *arg);
/** Delete key. */
int ig_etcd_delete(ig_etcd *e, const char *key, ig_etcd_cb cb, void *arg);
/** At most this many keys in one transaction (etcd's --max-txn-ops default is 128). */
#define IG_ETCD_TXN_MAX 128
/** Put keys[i] = values[i] (values[i] NULL: delete it) for every i at once, or
 * none; n <= IG_ETCD_TXN_MAX. */
int ig_etcd_txn(ig_etcd *e, char *const *keys, char *const *values, int n, ig_etcd_cb cb, void *arg);
/** Put key = value unless the key exists (resp "succeeded": true when put;
 * else "responses"[0]."response_range"."kvs" holds what is there). */
int ig_etcd_put_if_absent(ig_etcd *e, const char *key, const char *value, ig_etcd_cb cb, void *arg);
/** A lease of ttl seconds (resp "ID", as ig_etcd_int). */
int ig_etcd_lease_grant(ig_etcd *e, int ttl, ig_etcd_cb cb, void *arg);
/** Keep lease id alive once more (resp "result"."TTL": 0 when it had expired). */
int ig_etcd_lease_keepalive(ig_etcd *e, int64_t id, ig_etcd_cb cb, void *arg);
/** Revoke lease id (its keys go at once). */
int ig_etcd_lease_revoke(ig_etcd *e, int64_t id, ig_etcd_cb cb, void *arg);

/** Follow every change under prefix on a connection of its own: changed(arg)
 * runs when the watch starts (or starts again: re-read what a break may
 * have hidden) and after each batch of events; up(arg, 1/0) when the watch
 * runs or broke. A break is retried on the next endpoint after a moment.
 * One watch per client; until ig_etcd_free. */
int ig_etcd_watch(ig_etcd *e, const char *prefix, void (*changed)(void *arg), void (*up)(void *arg, int on),
                  void *arg);

/** One entry of a range answer's "kvs": its key and value, decoded (malloc'd; free both). 0 or -EINVAL. */
int ig_etcd_kv(json_t *kv, char **key, char **value);
/** etcd's int64 fields come as strings: the value, or 0. */
int64_t ig_etcd_int(json_t *v);
#endif
