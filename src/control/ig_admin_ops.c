/* Admin requests: parsed by api/ig_admin, then handed to the part that
 * does them (workers, fleet, AReaL). The one file that knows them all.
 * Control thread only. */
#include <jansson.h>

#include "../api/ig_admin.h"
#include "../registry/ig_registry.h"
#include "ig_control_int.h"

void ig_ctl_handle(ig_admin_msg *m)
{
    if (m->pin) {
        if (!atomic_load(&m->pin->removed))
            ig_areal_pin_admin(m->pin);
        ig_admin_msg_free(m);
        return;
    }
    ig_admin_request req;
    int rc = ig_admin_parse(m->method, m->target, m->body, m->body_len, &req);
    m->areal = req.areal;
    m->rest = req.rest;
    if (rc) {
        ig_ctl_reply_error(m, req.status, req.code, req.message);
        ig_admin_request_free(&req);
        return;
    }
    switch (req.op) {
    case IG_ADMIN_LIST: {
        json_t *arr = json_array(), *urls = json_array();
        for (int i = 0; i < ig_registry_count(); i++) {
            json_array_append_new(arr, ig_ctl_worker_json_all(ig_registry_at(i)));
            json_array_append_new(urls, json_string(ig_registry_at(i)->url));
        }
        ig_ctl_reply(m, 200,
                     json_pack("{s:o,s:o,s:i}", "workers", arr, "urls", urls, "total", ig_registry_count()));
        break;
    }
    case IG_ADMIN_GET:
    case IG_ADMIN_UPDATE:
    case IG_ADMIN_DELETE: {
        ig_worker *w = req.url ? ig_ctl_find_url(req.url) : ig_registry_find_id(req.id);
        if (!w) {
            ig_ctl_reply_error(m, 404, "worker_not_found", "no such worker");
        } else if (req.op == IG_ADMIN_GET) {
            ig_ctl_reply(m, 200, ig_worker_json(w));
        } else if (req.op == IG_ADMIN_UPDATE && ig_cluster_enabled() && !ig_ctl_worker_from_config(w)) {
            ig_cluster_set_cap(w, req.max_inflight, m);
        } else if (req.op == IG_ADMIN_UPDATE) { /* the cap changes live */
            atomic_store(&w->max_inflight, req.max_inflight);
            ig_ctl_reply(m, 200, json_pack("{s:o}", "worker", ig_worker_json(w)));
        } else if (ig_cluster_enabled() && !ig_ctl_worker_from_config(w)) {
            ig_cluster_remove_worker(w, m);
        } else {
            ig_ctl_remove_worker(w, m);
        }
        break;
    }
    case IG_ADMIN_ADD: {
        int g = ig_ctl_group_index(req.group);
        if (g < 0)
            ig_ctl_reply_error(m, 400, "unknown_group", "no worker group of that name in --config");
        else /* with a cluster, etcd first: every gateway follows */
            (ig_cluster_enabled() ? ig_cluster_add_worker : ig_ctl_add_worker)(
                &(ig_ctl_worker_spec){.url = req.url,
                                      .model_id = req.model_id,
                                      .api_key = req.api_key,
                                      .max_inflight = req.has_max_inflight ? req.max_inflight : -1,
                                      .group = g,
                                      .role = req.role,
                                      .bootstrap_port = req.bootstrap_port},
                m);
    } break;
    case IG_ADMIN_BROADCAST: ig_ctl_broadcast(&req, m); break;
    case IG_ADMIN_LOADS:
    case IG_ADMIN_ENGINE_METRICS: ig_ctl_engine_fanout(m, req.op == IG_ADMIN_LOADS); break;
    default: ig_areal_handle(&req, m); break;
    }
    ig_admin_request_free(&req);
}
