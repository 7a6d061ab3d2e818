/* The mock's AReaL data-proxy sessions: start a session (admin key), count
 * the chat requests made with its key, take a reward, export and forget it.
 * One process's memory: run session tests with --processes 1. */
#include "mock_sessions.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct session {
    char *id, *key;
    long interactions;
    double reward;
    int rewarded;
} session;

static session *sessions;
static int n_sessions, cap_sessions;
static unsigned long seq, groups;
int mock_sessions_legacy;

#define HITL "__hitl__"

/* the bearer token of an Authorization value, or NULL */
static const char *token(const char *auth, size_t *len)
{
    if (!auth || *len < 7 || strncasecmp(auth, "Bearer ", 7) != 0)
        return NULL;
    *len -= 7;
    return auth + 7;
}

static int is_admin(const char *tok, size_t len, const char *admin)
{
    return admin && tok && strlen(admin) == len && memcmp(tok, admin, len) == 0;
}

static session *find(const char *s, size_t len, int by_id)
{
    for (int i = 0; i < n_sessions; i++) {
        const char *v = by_id ? sessions[i].id : sessions[i].key;
        if (strlen(v) == len && memcmp(v, s, len) == 0)
            return &sessions[i];
    }
    return NULL;
}

static session *add(const char *id, const char *key)
{
    if (n_sessions == cap_sessions) {
        int ncap = cap_sessions ? cap_sessions * 2 : 64;
        session *n = realloc(sessions, sizeof(*n) * (size_t)ncap);
        if (!n)
            return NULL;
        sessions = n;
        cap_sessions = ncap;
    }
    session *s = &sessions[n_sessions++];
    *s = (session){.id = strdup(id), .key = strdup(key)};
    return s;
}

/* the session a data request's bearer belongs to: its own, or the admin key's */
static session *of_bearer(const char *auth, size_t auth_len, const char *admin)
{
    size_t len = auth_len;
    const char *tok = token(auth, &len);
    if (!tok)
        return NULL;
    session *s = find(tok, len, 0);
    if (!s && is_admin(tok, len, admin) && !(s = find(HITL, strlen(HITL), 1)))
        s = add(HITL, admin);
    return s;
}

void mock_sessions_note_chat(const char *auth, size_t auth_len, const char *admin)
{
    session *s = of_bearer(auth, auth_len, admin);
    if (s)
        s->interactions++;
}

static int reply(char **out, int status, json_t *doc)
{
    *out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return status;
}

static int error(char **out, int status, const char *detail)
{
    return reply(out, status, json_pack("{s:s}", "detail", detail));
}

int mock_sessions_handle(const char *path, const char *auth, size_t auth_len, const char *body,
                         size_t body_len, const char *admin, const char *worker_id, char **out)
{
    int start = strcmp(path, "/rl/start_session") == 0, reward = strcmp(path, "/rl/set_reward") == 0,
        export = strcmp(path, "/export_trajectories") == 0, model = strcmp(path, "/register_model") == 0;
    if (!start && !reward && !export && !model)
        return 0;
    size_t tlen = auth_len;
    const char *tok = token(auth, &tlen);
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", body_len, 0, &jerr);
    int rc;
    if (!json_is_object(doc)) {
        rc = error(out, 422, "the body must be a JSON object");
    } else if (model) {
        rc = reply(out, 200, json_pack("{s:s}", "status", "ok"));
    } else if (reward) {
        session *s = of_bearer(auth, auth_len, admin);
        json_t *r = json_object_get(doc, "reward");
        if (!s) {
            rc = error(out, 401, "Invalid or expired session API key.");
        } else {
            s->reward = json_is_number(r) ? json_number_value(r) : 0;
            s->rewarded = 1;
            rc = reply(out, 200,
                       json_pack("{s:s,s:I,s:s,s:i,s:b,s:b,s:s}", "message", "success", "interaction_count",
                                 (json_int_t)s->interactions, "session_id", s->id, "trajectory_id", 0,
                                 "trajectory_ready", 1, "ready_transition", 1, "worker_id", worker_id));
        }
    } else if (!tok) {
        rc = error(out, 401, "Missing or malformed Authorization header.");
    } else if (admin && !is_admin(tok, tlen, admin)) {
        rc = error(out, 403, "Invalid admin API key.");
    } else if (start) {
        const char *want = json_string_value(json_object_get(doc, "api_key"));
        json_t *gs = json_object_get(doc, "group_size");
        int n = mock_sessions_legacy                                ? 1
                : json_is_integer(gs) && json_integer_value(gs) > 1 ? (int)json_integer_value(gs)
                                                                    : 1;
        json_t *list = json_array();
        rc = 0;
        if (want && find(want, strlen(want), 0))
            rc = error(out, 409, "api_key already in use");
        for (int i = 0; !rc && i < n; i++) { /* AReaL: the caller's key goes to the first */
            char id[96], key[128];
            snprintf(id, sizeof(id), "sess-%s-%lu", worker_id, ++seq);
            snprintf(key, sizeof(key), "sk-sess-%s-%lu-%08lx", worker_id, seq, (unsigned long)random());
            const char *k = i == 0 && want ? want : key;
            if (!add(id, k))
                rc = error(out, 500, "out of memory");
            else
                json_array_append_new(list, json_pack("{s:s,s:s}", "session_id", id, "session_api_key", k));
        }
        if (!rc && mock_sessions_legacy) {
            json_t *one = json_array_get(list, 0);
            rc = reply(out, 201,
                       json_pack("{s:O,s:O}", "session_id", json_object_get(one, "session_id"), "api_key",
                                 json_object_get(one, "session_api_key")));
        } else if (!rc) {
            char gid[64];
            snprintf(gid, sizeof(gid), "grp-%s-%lu", worker_id, ++groups);
            rc = reply(out, 201, json_pack("{s:s,s:O}", "group_id", gid, "sessions", list));
        }
        json_decref(list);
    } else if (!mock_sessions_legacy) {
        /* AReaL's current export: every listed session merged; the unknown ones skipped */
        json_t *ids = json_object_get(doc, "session_ids"), *inter = json_object();
        size_t i;
        json_t *v;
        if (!json_is_array(ids) || !json_array_size(ids)) {
            rc = error(out, 400, "session_ids must be a non-empty list");
        } else {
            json_array_foreach(ids, i, v)
            {
                const char *id = json_string_value(v);
                session *s = id ? find(id, strlen(id), 1) : NULL;
                if (!s)
                    continue;
                json_object_set_new(inter, s->id,
                                    json_pack("{s:s,s:I,s:f,s:b}", "worker_id", worker_id, "interactions",
                                              (json_int_t)s->interactions, "reward", s->reward, "rewarded",
                                              s->rewarded));
                if (!json_is_false(json_object_get(doc, "remove_session"))) {
                    free(s->id);
                    free(s->key);
                    *s = sessions[--n_sessions];
                }
            }
            rc = reply(out, 200, json_pack("{s:O}", "interactions", inter));
        }
        json_decref(inter);
    } else {
        const char *id = json_string_value(json_object_get(doc, "session_id"));
        session *s = id ? find(id, strlen(id), 1) : NULL;
        if (!s) {
            rc = error(out, 404, "Session not found");
        } else {
            rc = reply(out, 200,
                       json_pack("{s:s,s:s,s:I,s:f,s:b}", "session_id", s->id, "worker_id", worker_id,
                                 "interactions", (json_int_t)s->interactions, "reward", s->reward, "rewarded",
                                 s->rewarded));
            free(s->id);
            free(s->key);
            *s = sessions[--n_sessions];
        }
    }
    json_decref(doc);
    return rc;
}
