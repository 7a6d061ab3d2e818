/* AReaL's sessions, groups and registered models made to match etcd's
 * (with --etcd-endpoints), read back whole every --etcd-sync-interval-secs
 * after the workers: entries whose worker is not registered here yet wait
 * for a later read; what etcd no longer has goes; groups are rebuilt from
 * their sessions' entries. A full re-list, like the workers': nothing is
 * lost to a missed event. Control thread only. */
#include <stdlib.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../registry/ig_sessions.h"
#include "ig_areal_int.h"
#include "ig_control_int.h"
#include "ig_etcd.h"

static int in_etcd(const ig_session *s, void *sessions)
{
    char id[512];
    if (s->id_len >= sizeof(id))
        return 1; /* no id this long is written: not ours to judge */
    memcpy(id, s->id, s->id_len);
    id[s->id_len] = '\0';
    return json_object_get(sessions, id) != NULL;
}

static void follow_sessions(json_t *sessions)
{
    json_t *groups = json_object(); /* group id -> {"worker", "ids": [...]} */
    const char *id;
    json_t *doc;
    json_object_foreach(sessions, id, doc)
    {
        const char *key = json_string_value(json_object_get(doc, "key"));
        const char *url = json_string_value(json_object_get(doc, "worker"));
        const char *gid = json_string_value(json_object_get(doc, "group"));
        int persistent = json_is_true(json_object_get(doc, "persistent"));
        ig_worker *w = url ? ig_ctl_find_url(url) : NULL;
        if (!key || !w)
            continue; /* its worker is not here yet (or a broken entry): the next read */
        const ig_session *s = ig_sessions_by_id(id, strlen(id));
        if (!s || s->w != w || s->persistent != persistent || s->key_len != strlen(key) ||
            memcmp(s->key, key, s->key_len))
            if (ig_sessions_put(key, strlen(key), id, strlen(id), w, persistent))
                ig_err("sessions: out of memory following etcd");
        if (gid) {
            json_t *g = json_object_get(groups, gid);
            if (!g) {
                g = json_pack("{s:s,s:[]}", "worker", url, "ids");
                json_object_set_new(groups, gid, g);
            }
            json_array_append_new(json_object_get(g, "ids"), json_string(id));
        }
    }
    int gone = ig_sessions_keep_only(in_etcd, sessions);
    if (gone)
        ig_debug("sessions: %d removed through other gateways", gone);
    ig_areal_groups_clear();
    json_t *g;
    json_object_foreach(groups, id, g)
    {
        json_t *ids = json_object_get(g, "ids");
        size_t n = json_array_size(ids), i;
        char **sids = calloc(n ? n : 1, sizeof(char *));
        json_t *one;
        json_array_foreach(ids, i, one) if (sids) sids[i] = (char *)json_string_value(one);
        ig_worker *w = ig_ctl_find_url(json_string_value(json_object_get(g, "worker")));
        if (!sids || !w || ig_areal_group_put(id, w, sids, (int)n))
            ig_err("sessions: out of memory following etcd's groups");
        free(sids);
    }
    json_decref(groups);
}

/* a model's entry, routed here: every worker of it this gateway knows */
static void follow_model(const char *name, const char *value)
{
    json_error_t jerr;
    json_t *doc = json_loads(value, 0, &jerr), *addr;
    json_t *addrs = json_object_get(doc, "workers");
    size_t n = json_array_size(addrs), i;
    ig_worker **ws = calloc(n ? n : 1, sizeof(*ws));
    int k = 0;
    json_array_foreach(addrs, i, addr)
    {
        ig_worker *w = ws ? ig_ctl_find_url(json_string_value(addr)) : NULL;
        if (w) {
            ig_worker_ref(w);
            ws[k++] = w;
        }
    }
    const char *url = json_string_value(json_object_get(doc, "url"));
    const char *key = json_string_value(json_object_get(doc, "api_key"));
    char *nm = strdup(name), *u = url ? strdup(url) : NULL, *ak = key ? strdup(key) : NULL,
         *st = strdup(value);
    if (k < (int)n || !nm || !st || (url && !u) || (key && !ak) || ig_areal_route_set(nm, ws, k, u, ak, st)) {
        /* a worker not here yet (the next read), or out of memory: as it was */
        for (int j = 0; j < k; j++)
            ig_worker_unref(ws[j]);
        free(ws);
        free(nm);
        free(u);
        free(ak);
        free(st);
    } else {
        ig_info("model %s registered on %d workers (through another gateway)", name, k);
    }
    json_decref(doc);
}

static void follow_models(json_t *models)
{
    for (int i = ig_areal_route_count() - 1; i >= 0; i--)
        if (!json_object_get(models, ig_areal_route_name(i))) {
            ig_info("model %s removed through another gateway", ig_areal_route_name(i));
            ig_areal_route_drop(i);
        }
    const char *name;
    json_t *v;
    json_object_foreach(models, name, v)
    {
        int i;
        for (i = 0; i < ig_areal_route_count() && strcmp(ig_areal_route_name(i), name); i++)
            ;
        const char *stored = i < ig_areal_route_count() ? ig_areal_route_stored(i) : NULL;
        if (!stored || strcmp(stored, json_string_value(v)))
            follow_model(name, json_string_value(v));
    }
}

void ig_areal_follow(json_t *kvs, size_t skip)
{
    json_t *sessions = json_object(), *models = json_object(), *kv;
    size_t i;
    json_array_foreach(kvs, i, kv)
    {
        char *key, *value;
        if (ig_etcd_kv(kv, &key, &value))
            continue;
        const char *rel = strlen(key) > skip ? key + skip : "";
        if (!strncmp(rel, "sessions/", 9) && rel[9] && !ig_areal_forgotten(rel + 9)) {
            json_error_t jerr;
            json_t *doc = json_loads(value, 0, &jerr);
            if (json_is_object(doc))
                json_object_set_new(sessions, rel + 9, doc);
            else
                json_decref(doc);
        } else if (!strncmp(rel, "models/", 7) && rel[7]) {
            json_object_set_new(models, rel + 7, json_string(value));
        }
        free(key);
        free(value);
    }
    follow_sessions(sessions);
    follow_models(models);
    json_decref(sessions);
    json_decref(models);
    ig_areal_forget_pending();
}
