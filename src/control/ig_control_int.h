/* What the control thread's parts share: answering admin messages, fanning
 * a request out to workers, and the AReaL session and model endpoints
 * (ig_areal.c). Control thread only. */
#ifndef IG_CONTROL_INT_H
#define IG_CONTROL_INT_H
#include <jansson.h>
#include <uv.h>

#include "../registry/ig_registry.h"
#include "../api/ig_admin.h"
#include "ig_control.h"

/** Answer m with doc (taken) and hand it back to its loop thread. */
void ig_ctl_reply(ig_admin_msg *m, int status, json_t *doc);
/** Answer with an OpenAI-shaped error. */
void ig_ctl_reply_error(ig_admin_msg *m, int status, const char *code, const char *msg);
/** Answer with a worker's own body (copied). */
void ig_ctl_reply_raw(ig_admin_msg *m, int status, const char *body, size_t len);
uv_loop_t *ig_ctl_loop(void);
const ig_control_config *ig_ctl_cfg(void);
void ig_ctl_publish(void);
/** A registered worker by URL, as given or normalised; NULL if none. */
ig_worker *ig_ctl_find_url(const char *url);
/** A routable worker for a new session (round robin over the snapshot's
 * candidates for model, NULL: any); NULL when none. *known: some registered
 * worker serves the model at all. */
ig_worker *ig_ctl_pick(const char *model, int *known);

/* A fan-out: one request to many workers at once, answered when the last
 * one has; results holds {worker_id, url, worker_addr, status, ok, error}. */
typedef struct ig_fanout ig_fanout;
typedef void (*ig_fanout_item_fn)(ig_fanout *f, ig_worker *w, json_t *entry, int ok, const char *body,
                                  size_t len);
typedef void (*ig_fanout_done_fn)(ig_fanout *f);
struct ig_fanout {
    ig_admin_msg *m;
    ig_fanout_item_fn on_item; /* may be NULL */
    ig_fanout_done_fn on_done; /* frees the fan-out */
    json_t *results;
    int pending;
    int failed;
    uint64_t start_ms;
};
void ig_fanout_init(ig_fanout *f, ig_admin_msg *m, ig_fanout_item_fn on_item, ig_fanout_done_fn on_done);
/** headers: extra "name: value\r\n" lines or NULL. */
void ig_fanout_send(ig_fanout *f, ig_worker *w, const char *method, const char *path, const char *headers,
                    const char *body, size_t len);
/** Every request is out: on_done runs when the last answer is in (maybe now). */
void ig_fanout_end(ig_fanout *f);

/* ig_areal.c */
/** Sessions, registered models, /route, start_session and export. */
void ig_areal_handle(ig_admin_request *req, ig_admin_msg *m);
/** w leaves the fleet: revoke its sessions and drop it from registered
 * models (before the next publish); returns the sessions revoked. */
int ig_areal_worker_removed(ig_worker *w);
/** Pin the admin key's persistent session to w unless it is pinned already. */
void ig_areal_pin_admin(ig_worker *w);
void ig_areal_shutdown(void);
/** A worker as the admin API shows it. */
json_t *ig_worker_json(const ig_worker *w);
#endif
