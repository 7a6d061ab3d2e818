/* At start, ask every worker for its models, all at once. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../core/ig_log.h"
#include "../upstream/ig_fetch.h"
#include "ig_discovery.h"

typedef struct probe {
    ig_worker *w;
} probe;

static void models_cb(void *arg, int status, const char *body, size_t len, const char *err)
{
    ig_worker *w = arg;
    json_error_t jerr;
    if (status != 200) {
        ig_warn("worker %s: /v1/models %s%s; it will be sent any model", w->url,
                err ? err : "answered ", err ? "" : (status == 404 ? "404" : "an error"));
        return;
    }
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
    json_t *data = root ? json_object_get(root, "data") : NULL;
    if (!json_is_array(data)) {
        ig_warn("worker %s: /v1/models is not an OpenAI model list; it will be sent any model", w->url);
        json_decref(root);
        return;
    }
    size_t n = json_array_size(data), k = 0;
    char **models = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; models && i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
        if (id)
            models[k++] = strdup(id);
    }
    json_decref(root);
    if (!models || k == 0) {
        free(models);
        ig_warn("worker %s: /v1/models listed no model; it will be sent any model", w->url);
        return;
    }
    ig_worker_set_models(w, models, (int)k);
    ig_info("worker %s serves %s%s", w->url, models[0], k > 1 ? " and more" : "");
}

void ig_discover_models(ig_registry *r, double timeout_secs)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (int i = 0; i < r->n; i++)
        ig_fetch_get(&loop, (const struct sockaddr *)&r->workers[i]->addr,
                     r->workers[i]->host_header, "/v1/models", timeout_secs, models_cb,
                     r->workers[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}
