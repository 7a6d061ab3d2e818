#include "ig_registry.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic(ig_registry *) current;

int ig_url_parse(const char *url, char *host, size_t hostcap, uint16_t *port, const char **err)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://")) {
        *err = "only http:// worker URLs are supported";
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
    memcpy(host, hb, (size_t)(he - hb));
    host[he - hb] = '\0';
    long prt = 80;
    if (*p == ':') {
        char *end;
        prt = strtol(p + 1, &end, 10);
        if (end == p + 1 || prt <= 0 || prt > 65535) {
            *err = "bad port";
            return -EINVAL;
        }
        p = end;
    }
    if (*p && strcmp(p, "/") != 0) {
        *err = "worker URLs take no path";
        return -EINVAL;
    }
    *port = (uint16_t)prt;
    return 0;
}

int ig_worker_new(const char *url, uint32_t idx, ig_worker **out, const char **err)
{
    char host[256], portstr[8];
    uint16_t port;
    struct addrinfo hints = {0}, *res = NULL;
    int rc = ig_url_parse(url, host, sizeof(host), &port, err);
    if (rc)
        return rc;
    ig_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    snprintf(portstr, sizeof(portstr), "%u", port);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || !res) {
        *err = "cannot resolve host";
        rc = -EHOSTUNREACH;
        goto fail;
    }
    memcpy(&w->addr, res->ai_addr, res->ai_addrlen);
    w->addrlen = res->ai_addrlen;
    freeaddrinfo(res);

    w->idx = idx;
    w->port = port;
    w->host = strdup(host);
    size_t ulen = strlen(url);
    while (ulen && url[ulen - 1] == '/')
        ulen--;
    w->url = strndup(url, ulen);
    if (strncmp(w->url ? w->url : "", "http://", 7) != 0 && w->url) {
        char *full = malloc(ulen + 8);
        if (full) {
            memcpy(full, "http://", 7);
            memcpy(full + 7, w->url, ulen + 1);
        }
        free(w->url);
        w->url = full;
    }
    int hl = snprintf(NULL, 0, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    w->host_header = malloc((size_t)hl + 1);
    if (!w->host || !w->url || !w->host_header) {
        rc = -ENOMEM;
        goto fail;
    }
    snprintf(w->host_header, (size_t)hl + 1, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    w->host_header_len = (size_t)hl;
    w->any_model = 1;
    *out = w;
    return 0;
fail:
    ig_worker_free(w);
    return rc;
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

void ig_worker_free(ig_worker *w)
{
    if (!w)
        return;
    ig_worker_set_models(w, NULL, 0);
    free(w->url);
    free(w->host);
    free(w->host_header);
    free(w);
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

void ig_registry_publish(ig_registry *r)
{
    atomic_store_explicit(&current, r, memory_order_release);
}

const ig_registry *ig_registry_get(void)
{
    return atomic_load_explicit(&current, memory_order_acquire);
}

int ig_registry_candidates(const ig_registry *r, const char *model, size_t len, ig_worker **out,
                           int max)
{
    int n = 0;
    for (int i = 0; i < r->n && n < max; i++)
        if (!model || ig_worker_serves(r->workers[i], model, len))
            out[n++] = r->workers[i];
    return n;
}
