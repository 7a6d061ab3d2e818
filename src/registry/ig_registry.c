#include "ig_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../core/ig_epoch.h"

#define REF_OTHER (1ull << 32)

static _Atomic(ig_snapshot *) current;
static int pool_count = 1;

/* writer-owned */
static ig_worker **list;
static int list_n, list_cap;
static uint64_t next_id = 1;
static uint64_t version;

static ig_snapshot empty_snapshot;
static int paused_all;
static char **paused_models;
static int n_paused_models;
static long fleet_version;
static int exclude_stale;
static const ig_model_route *routes;
static int n_routes;
static int ring_vnodes;

void ig_registry_set_ring_vnodes(int vnodes)
{
    ring_vnodes = vnodes;
}

void ig_registry_set_model_routes(const ig_model_route *r, int n)
{
    routes = r;
    n_routes = n;
}

void ig_registry_set_paused(int all, char **models, int n)
{
    paused_all = all;
    paused_models = models;
    n_paused_models = n;
}

void ig_registry_set_fleet_version(long v, int exclude)
{
    fleet_version = v;
    exclude_stale = exclude;
}

/* routable, and on the fleet's weights when stale workers are excluded */
static int takes_requests(ig_worker *w)
{
    return ig_worker_routable(w) && !atomic_load(&w->paused) &&
           (!exclude_stale || fleet_version <= 0 || atomic_load(&w->version) >= fleet_version);
}

void ig_registry_init(int nthreads)
{
    pool_count = nthreads > 0 ? nthreads : 1;
    atomic_store(&current, &empty_snapshot);
}

/* ---- URLs and workers ---- */

int ig_url_parse(const char *url, char *host, size_t hostcap, uint16_t *port, int *tls, const char **path,
                 const char **err)
{
    const char *p = url;
    *tls = 0;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        p += 8;
        *tls = 1;
    } else if (strstr(p, "://")) {
        *err = "only http:// and https:// worker URLs are supported";
        return -EINVAL;
    }
    const char *hb = p, *he;
    if (*p == '[') { /* IPv6 literal */
        he = strchr(p, ']');
        if (!he) {
            *err = "unterminated IPv6 address";
            return -EINVAL;
        }
        hb = p + 1;
        p = he + 1;
    } else {
        while (*p && *p != ':' && *p != '/')
            p++;
        he = p;
    }
    if (he == hb || (size_t)(he - hb) >= hostcap) {
        *err = "missing or too long host";
        return -EINVAL;
    }
    for (const char *q = hb; q < he; q++)
        if (*q <= ' ' || *q == '"' || *q == '\\' || *q == '@' || *q == '?' || *q == '#') {
            *err = "invalid character in host";
            return -EINVAL;
        }
    memcpy(host, hb, (size_t)(he - hb));
    host[he - hb] = '\0';
    long prt = *tls ? 443 : 80;
    if (*p == ':') {
        char *end;
        prt = strtol(p + 1, &end, 10);
        if (end == p + 1 || prt <= 0 || prt > 65535) {
            *err = "bad port";
            return -EINVAL;
        }
        p = end;
    }
    if (*p && *p != '/') {
        *err = "bad port";
        return -EINVAL;
    }
    for (const char *q = p; *q; q++)
        if (*q <= ' ' || *q == '?' || *q == '#' || *q == '"' || *q == '\\' || *q == 0x7f) {
            *err = "a worker URL's path takes no query, fragment, space or control character";
            return -EINVAL;
        }
    if (path)
        *path = p;
    *port = (uint16_t)prt;
    return 0;
}

static void worker_free(ig_worker *w)
{
    ig_worker_set_models(w, NULL, 0);
    free(w->url);
    free(w->host);
    free(w->host_header);
    free(w->base_path);
    free(w->auth_line);
    free(w->pools);
    free(w);
}

/* scheme://host:port (IPv6 in brackets), as every worker's url starts */
static int url_origin(char *out, size_t cap, const char *host, uint16_t port, int tls)
{
    int v6 = strchr(host, ':') != NULL;
    const char *fmt =
        tls ? (v6 ? "https://[%s]:%u" : "https://%s:%u") : (v6 ? "http://[%s]:%u" : "http://%s:%u");
    return snprintf(out, cap, fmt, host, port);
}

int ig_url_normalize(const char *url, char *out, size_t cap)
{
    char host[256];
    uint16_t port;
    int tls;
    const char *path, *err;
    int rc = ig_url_parse(url, host, sizeof(host), &port, &tls, &path, &err);
    if (rc)
        return rc;
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/')
        plen--;
    int n = url_origin(out, cap, host, port, tls);
    if (n < 0 || (size_t)n + plen >= cap)
        return -E2BIG;
    memcpy(out + n, path, plen);
    out[(size_t)n + plen] = '\0';
    return 0;
}

int ig_worker_new(const char *url, ig_worker **out, const char **err)
{
    char host[256], portstr[8];
    uint16_t port;
    int tls;
    const char *path;
    struct addrinfo hints = {0}, *res = NULL;
    int rc = ig_url_parse(url, host, sizeof(host), &port, &tls, &path, err);
    if (rc)
        return rc;
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/') /* "/api/" is "/api"; "/" is none */
        plen--;
    ig_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&w->addr;
    struct sockaddr_in6 *v6a = (struct sockaddr_in6 *)&w->addr;
    /* numeric addresses need no resolver: getaddrinfo reads nsswitch and
     * hosts files, hundreds of microseconds per admin change */
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        w->addrlen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6a->sin6_addr) == 1) {
        v6a->sin6_family = AF_INET6;
        v6a->sin6_port = htons(port);
        w->addrlen = sizeof(*v6a);
    } else {
        snprintf(portstr, sizeof(portstr), "%u", port);
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(host, portstr, &hints, &res) != 0 || !res) {
            *err = "cannot resolve host";
            free(w);
            return -EHOSTUNREACH;
        }
        memcpy(&w->addr, res->ai_addr, res->ai_addrlen);
        w->addrlen = res->ai_addrlen;
        freeaddrinfo(res);
    }

    size_t scheme = tls ? 8 : 7;
    int ul = url_origin(NULL, 0, host, port, tls);
    w->url = malloc((size_t)ul + plen + 1);
    w->host_header = malloc((size_t)ul + 1);
    w->host = strdup(host);
    w->base_path = strndup(path, plen);
    w->pools = calloc((size_t)pool_count, sizeof(ig_pool));
    if (!w->url || !w->host_header || !w->host || !w->base_path || !w->pools) {
        worker_free(w);
        return -ENOMEM;
    }
    url_origin(w->url, (size_t)ul + 1, host, port, tls);
    memcpy(w->url + ul, path, plen + 1);
    w->url[ul + plen] = '\0';
    w->url_key = XXH3_64bits(w->url, (size_t)ul + plen);
    w->base_path_len = plen;
    w->host_header_len = (size_t)ul - scheme;
    memcpy(w->host_header, w->url + scheme, w->host_header_len);
    w->host_header[w->host_header_len] = '\0';
    w->tls = tls;
    for (int i = 0; i < pool_count; i++)
        ig_list_init(&w->pools[i].idle);
    w->port = port;
    w->any_model = 1;
    atomic_store(&w->refs, REF_OTHER); /* the caller's reference */
    *out = w;
    return 0;
}

int ig_worker_set_key(ig_worker *w, const char *key)
{
    free(w->auth_line);
    w->auth_line = NULL;
    w->auth_line_len = 0;
    if (!key || !*key)
        return 0;
    for (const char *q = key; *q; q++)
        if ((unsigned char)*q < ' ' || *q == 0x7f)
            return -EINVAL;
    size_t n = strlen("authorization: Bearer \r\n") + strlen(key);
    if (!(w->auth_line = malloc(n + 1)))
        return -ENOMEM;
    snprintf(w->auth_line, n + 1, "authorization: Bearer %s\r\n", key);
    w->auth_line_len = n;
    return 0;
}

size_t ig_worker_path_prefix(const ig_worker *w, const char *target, size_t len)
{
    size_t n = w->base_path_len;
    /* a base written as an SDK's base URL ("https://host/api/v1") does not
     * double the API's own "/v1" */
    if (n >= 3 && memcmp(w->base_path + n - 3, "/v1", 3) == 0 && len >= 3 && memcmp(target, "/v1", 3) == 0 &&
        (len == 3 || target[3] == '/' || target[3] == '?'))
        n -= 3;
    return n;
}

void ig_worker_set_models(ig_worker *w, char **models, int n)
{
    for (int i = 0; i < w->n_models; i++)
        free(w->models[i]);
    free(w->models);
    w->models = models;
    w->n_models = n;
    w->any_model = models == NULL;
}

int ig_worker_serves(const ig_worker *w, const char *model, size_t len)
{
    if (w->any_model)
        return 1;
    for (int i = 0; i < w->n_models; i++)
        if (strlen(w->models[i]) == len && memcmp(w->models[i], model, len) == 0)
            return 1;
    return 0;
}

void ig_worker_end(ig_worker *w)
{
    if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
        worker_free(w);
}

void ig_worker_ref(ig_worker *w)
{
    atomic_fetch_add_explicit(&w->refs, REF_OTHER, memory_order_relaxed);
}

void ig_worker_unref(ig_worker *w)
{
    if (atomic_fetch_sub_explicit(&w->refs, REF_OTHER, memory_order_acq_rel) == REF_OTHER)
        worker_free(w);
}

int ig_worker_routable(const ig_worker *w)
{
    ig_worker *m = (ig_worker *)w;
    return !atomic_load_explicit(&m->removed, memory_order_relaxed) &&
           atomic_load_explicit(&m->health, memory_order_relaxed) == IG_HEALTH_UP &&
           atomic_load_explicit(&m->breaker, memory_order_relaxed) != IG_BREAKER_OPEN;
}

/* ---- snapshots ---- */

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a: model names are short */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int find_model(const ig_snapshot *s, const char *name, size_t len)
{
    if (!s->table)
        return -1;
    for (uint32_t i = hash_name(name, len) & s->mask;; i = (i + 1) & s->mask) {
        uint32_t e = s->table[i];
        if (!e)
            return -1;
        const ig_model_set *m = &s->models[e - 1];
        if (m->len == len && memcmp(m->name, name, len) == 0)
            return (int)e - 1;
    }
}

void ig_snapshot_free(void *p)
{
    ig_snapshot *s = p;
    if (!s || s == &empty_snapshot)
        return;
    ig_snapshot_free(s->pd[0]);
    ig_snapshot_free(s->pd[1]);
    for (int i = 0; i < s->n_models; i++) {
        free(s->models[i].workers);
        ig_ring_free(&s->models[i].ring);
        if (s->models[i].registered)
            free((char *)s->models[i].name);
    }
    ig_ring_free(&s->routable_ring);
    ig_ring_free(&s->any_ring);
    free(s->grouped);
    free(s->models);
    free(s->table);
    free(s->routable);
    free(s->any);
    for (int i = 0; i < s->n_all; i++)
        ig_worker_unref(s->all[i]);
    free(s->all);
    free(s);
}

/* The snapshot of the workers of one role (every worker is in all[] of the
 * fleet's, IG_ROLE_REGULAR, whatever its role). */
static ig_snapshot *build(ig_worker **workers, int n, uint64_t ver, int role)
{
    ig_snapshot *s = calloc(1, sizeof(*s));
    int nmodel_entries = 0;
    if (!s)
        return NULL;
    s->version = ver;
    s->role = role;
    s->all = malloc(sizeof(ig_worker *) * (size_t)(n ? n : 1));
    s->routable = malloc(sizeof(ig_worker *) * (size_t)(n ? n : 1));
    s->any = malloc(sizeof(ig_worker *) * (size_t)(n ? n : 1));
    s->grouped = malloc(sizeof(ig_worker *) * (size_t)(n ? n : 1));
    if (!s->all || !s->routable || !s->any || !s->grouped)
        goto fail;
    for (int i = 0; i < n; i++) {
        ig_worker *w = workers[i];
        ig_worker_ref(w);
        s->all[s->n_all++] = w;
        if (takes_requests(w))
            s->n_up++;
        if (w->role != role) /* routed from its pool (pd[]) */
            continue;
        int g = w->group > 0 && w->group < IG_MAX_GROUPS ? w->group : 0;
        s->group_all[g]++;
        if (takes_requests(w))
            s->group_n[g]++;
        if (g) /* a named group's workers take forwarded paths only: no model of theirs counts */
            continue;
        nmodel_entries += w->n_models;
        if (!takes_requests(w))
            continue;
        s->routable[s->n_routable++] = w;
        if (w->any_model)
            s->any[s->n_any++] = w;
    }
    for (int g = 1, off = 0; g < IG_MAX_GROUPS; off += s->group_n[g], g++) {
        s->group_off[g] = off;
        s->group_n[g] = 0;
    }
    for (int i = 0; i < s->n_all; i++) {
        ig_worker *w = s->all[i];
        int g = w->group > 0 && w->group < IG_MAX_GROUPS ? w->group : 0;
        if (g && w->role == role && takes_requests(w))
            s->grouped[s->group_off[g] + s->group_n[g]++] = w;
    }
    /* model table: every model any worker lists (routable or not), so "no
     * healthy worker" (503) and "nobody serves it" (404) stay apart */
    nmodel_entries += n_routes;
    uint32_t size = 8;
    while (size < (uint32_t)nmodel_entries * 2)
        size *= 2;
    s->table = calloc(size, sizeof(uint32_t));
    s->models = calloc((size_t)(nmodel_entries ? nmodel_entries : 1), sizeof(ig_model_set));
    if (!s->table || !s->models)
        goto fail;
    s->mask = size - 1;
    for (int i = 0; i < s->n_all; i++) {
        ig_worker *w = s->all[i];
        for (int m = 0; m < w->n_models && !w->group && w->role == role; m++) {
            size_t len = strlen(w->models[m]);
            if (find_model(s, w->models[m], len) >= 0)
                continue;
            uint32_t slot = hash_name(w->models[m], len) & s->mask;
            while (s->table[slot])
                slot = (slot + 1) & s->mask;
            s->table[slot] = (uint32_t)s->n_models + 1;
            s->models[s->n_models].name = w->models[m];
            s->models[s->n_models].len = len;
            s->n_models++;
        }
    }
    /* registered models: their own name copy (a route may go before this snapshot) */
    for (int r = 0; r < n_routes; r++) {
        size_t len = strlen(routes[r].name);
        int k = find_model(s, routes[r].name, len);
        if (k < 0) {
            char *name = strdup(routes[r].name);
            if (!name)
                goto fail;
            uint32_t slot = hash_name(name, len) & s->mask;
            while (s->table[slot])
                slot = (slot + 1) & s->mask;
            s->table[slot] = (uint32_t)s->n_models + 1;
            s->models[s->n_models] = (ig_model_set){.name = name, .len = len, .registered = 1};
            k = s->n_models++;
        } else if (!s->models[k].registered) {
            char *name = strdup(routes[r].name);
            if (!name)
                goto fail;
            s->models[k].name = name;
            s->models[k].registered = 1;
        }
    }
    /* per model: the routable workers listing it, then the any-model ones */
    int *counts = calloc((size_t)(s->n_models ? s->n_models : 1), sizeof(int));
    if (!counts)
        goto fail;
    for (int i = 0; i < s->n_routable; i++)
        for (int m = 0; m < s->routable[i]->n_models; m++)
            counts[find_model(s, s->routable[i]->models[m], strlen(s->routable[i]->models[m]))]++;
    for (int r = 0; r < n_routes; r++)
        counts[find_model(s, routes[r].name, strlen(routes[r].name))] += routes[r].n;
    for (int k = 0; k < s->n_models; k++) {
        s->models[k].workers = malloc(sizeof(ig_worker *) * (size_t)(counts[k] + s->n_any + 1));
        if (!s->models[k].workers) {
            free(counts);
            goto fail;
        }
    }
    free(counts);
    for (int i = 0; i < s->n_routable; i++) {
        ig_worker *w = s->routable[i];
        for (int m = 0; m < w->n_models; m++) {
            ig_model_set *ms = &s->models[find_model(s, w->models[m], strlen(w->models[m]))];
            if (ms->n == 0 || ms->workers[ms->n - 1] != w) /* a model listed twice by one worker */
                ms->workers[ms->n++] = w;
        }
    }
    for (int r = 0; r < n_routes; r++) {
        ig_model_set *ms = &s->models[find_model(s, routes[r].name, strlen(routes[r].name))];
        for (int i = 0; i < routes[r].n; i++) {
            ig_worker *w = routes[r].workers[i];
            int dup = 0;
            for (int j = 0; j < ms->n && !dup; j++)
                dup = ms->workers[j] == w;
            if (!dup && w->role == role && takes_requests(w) && !atomic_load(&w->removed))
                ms->workers[ms->n++] = w;
        }
    }
    /* a registered model is served by its listed workers only */
    for (int k = 0; k < s->n_models; k++)
        for (int i = 0; i < s->n_any && !s->models[k].registered; i++)
            s->models[k].workers[s->models[k].n++] = s->any[i];
    if (ring_vnodes > 0) { /* membership changed (or might have): the rings follow */
        int rc = ig_ring_build(&s->routable_ring, s->routable, s->n_routable, ring_vnodes) |
                 ig_ring_build(&s->any_ring, s->any, s->n_any, ring_vnodes);
        for (int k = 0; k < s->n_models; k++)
            rc |= ig_ring_build(&s->models[k].ring, s->models[k].workers, s->models[k].n, ring_vnodes);
        if (rc)
            goto fail;
    }
    s->paused_all = paused_all;
    s->fleet_version = fleet_version;
    for (int p = 0; p < n_paused_models; p++) {
        int k = find_model(s, paused_models[p], strlen(paused_models[p]));
        if (k >= 0)
            s->models[k].paused = 1;
    }
    return s;
fail:
    ig_snapshot_free(s);
    return NULL;
}

ig_snapshot *ig_snapshot_build(ig_worker **workers, int n, uint64_t ver)
{
    ig_snapshot *s = build(workers, n, ver, IG_ROLE_REGULAR);
    ig_worker **pool = NULL;
    for (int role = IG_ROLE_PREFILL; s && role <= IG_ROLE_DECODE; role++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (workers[i]->role == role) {
                if (!pool && !(pool = malloc(sizeof(*pool) * (size_t)n)))
                    goto fail;
                pool[k++] = workers[i];
            }
        if (k && !(s->pd[role - 1] = build(pool, k, ver, role)))
            goto fail;
    }
    free(pool);
    return s;
fail:
    free(pool);
    ig_snapshot_free(s);
    return NULL;
}

int ig_snapshot_paused(const ig_snapshot *s, const char *model, size_t len)
{
    if (s->paused_all)
        return 1;
    if (!model || !s->table)
        return 0;
    int m = find_model(s, model, len);
    return m >= 0 && s->models[m].paused;
}

const ig_snapshot *ig_snapshot_get(void)
{
    return atomic_load_explicit(&current, memory_order_acquire);
}

int ig_snapshot_candidates_ring(const ig_snapshot *s, const char *model, size_t len, ig_worker *const **out,
                                int *known, const ig_ring **ring)
{
    if (!model) {
        *known = s->group_all[0] > 0;
        *out = s->routable;
        *ring = &s->routable_ring;
        return s->n_routable;
    }
    int m = find_model(s, model, len);
    if (m >= 0) {
        *known = 1;
        *out = s->models[m].workers;
        *ring = &s->models[m].ring;
        return s->models[m].n;
    }
    /* nobody lists it: only workers that take any model may serve it */
    *known = 0;
    for (int i = 0; i < s->n_all && !*known; i++)
        *known = s->all[i]->any_model && !s->all[i]->group && s->all[i]->role == s->role;
    *out = s->any;
    *ring = &s->any_ring;
    return s->n_any;
}

int ig_snapshot_group(const ig_snapshot *s, int g, ig_worker *const **out, int *known)
{
    if (g <= 0 || g >= IG_MAX_GROUPS) {
        *known = s->group_all[0] > 0;
        *out = s->routable;
        return s->n_routable;
    }
    *known = s->group_all[g] > 0;
    if (!s->grouped || !s->group_n[g]) {
        *out = NULL;
        return 0;
    }
    *out = s->grouped + s->group_off[g];
    return s->group_n[g];
}

int ig_snapshot_candidates(const ig_snapshot *s, const char *model, size_t len, ig_worker *const **out,
                           int *known)
{
    const ig_ring *ring;
    return ig_snapshot_candidates_ring(s, model, len, out, known, &ring);
}

/* ---- the writer ---- */

int ig_registry_count(void)
{
    return list_n;
}

ig_worker *ig_registry_at(int i)
{
    return i >= 0 && i < list_n ? list[i] : NULL;
}

ig_worker *ig_registry_find_url(const char *url)
{
    for (int i = 0; i < list_n; i++)
        if (strcmp(list[i]->url, url) == 0)
            return list[i];
    return NULL;
}

ig_worker *ig_registry_find_id(uint64_t id)
{
    for (int i = 0; i < list_n; i++)
        if (list[i]->id == id)
            return list[i];
    return NULL;
}

int ig_registry_publish(void)
{
    ig_snapshot *s = ig_snapshot_build(list, list_n, ++version);
    if (!s)
        return -ENOMEM;
    ig_snapshot *old = atomic_exchange_explicit(&current, s, memory_order_acq_rel);
    ig_epoch_retire(old, ig_snapshot_free);
    ig_epoch_advance();
    return 0;
}

int ig_registry_add(ig_worker *w)
{
    if (list_n == IG_MAX_WORKERS)
        return -ENOSPC;
    if (list_n == list_cap) {
        int ncap = list_cap ? list_cap * 2 : 16;
        ig_worker **nl = realloc(list, sizeof(*nl) * (size_t)ncap);
        if (!nl)
            return -ENOMEM;
        list = nl;
        list_cap = ncap;
    }
    w->id = next_id++;
    list[list_n++] = w;
    return ig_registry_publish();
}

int ig_registry_remove(ig_worker *w)
{
    for (int i = 0; i < list_n; i++) {
        if (list[i] != w)
            continue;
        memmove(&list[i], &list[i + 1], sizeof(*list) * (size_t)(list_n - i - 1));
        list_n--;
        atomic_store(&w->removed, 1);
        int rc = ig_registry_publish();
        ig_worker_unref(w); /* the registry's reference; snapshots and requests keep theirs */
        return rc;
    }
    return -ENOENT;
}

void ig_registry_shutdown(void)
{
    ig_snapshot *old = atomic_exchange(&current, &empty_snapshot);
    ig_snapshot_free(old);
    ig_epoch_drain();
    for (int i = 0; i < list_n; i++)
        ig_worker_unref(list[i]);
    free(list);
    list = NULL;
    list_n = list_cap = 0;
}
