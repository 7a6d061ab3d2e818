/* Admin request parsing and query decoding. */
#include <llhttp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/api/ig_admin.h"

static void list_get_delete(void **state)
{
    ig_admin_request r;
    assert_int_equal(ig_admin_parse(HTTP_GET, "/workers", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_LIST);
    assert_int_equal(ig_admin_parse(HTTP_GET, "/list_workers", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_LIST);
    assert_int_equal(ig_admin_parse(HTTP_GET, "/workers/w17", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_GET);
    assert_int_equal(r.id, 17);
    assert_int_equal(ig_admin_parse(HTTP_DELETE, "/workers/3", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_DELETE);
    assert_int_equal(r.id, 3);
    assert_int_not_equal(ig_admin_parse(HTTP_GET, "/workers/abc", NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_not_equal(ig_admin_parse(HTTP_POST, "/workers/3", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    /* sgl-model-gateway's forms: a cap by PUT/PATCH, a worker by its URL */
    assert_int_not_equal(ig_admin_parse(HTTP_PUT, "/workers/3", NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    const char *cap = "{\"max_inflight\":7}";
    assert_int_equal(ig_admin_parse(HTTP_PATCH, "/workers/w3", cap, strlen(cap), &r), 0);
    assert_int_equal(r.op, IG_ADMIN_UPDATE);
    assert_int_equal(r.id, 3);
    assert_int_equal(r.max_inflight, 7);
    ig_admin_request_free(&r);
    assert_int_equal(ig_admin_parse(HTTP_DELETE, "/workers/http%3A%2F%2F10.0.0.1%3A8000", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_DELETE);
    assert_string_equal(r.url, "http://10.0.0.1:8000");
    ig_admin_request_free(&r);
}

static void add_by_json(void **state)
{
    ig_admin_request r;
    const char *b = "{\"url\":\"http://10.0.0.1:8000\",\"model_id\":\"qwen\",\"max_inflight\":4}";
    assert_int_equal(ig_admin_parse(HTTP_POST, "/workers", b, strlen(b), &r), 0);
    assert_int_equal(r.op, IG_ADMIN_ADD);
    assert_string_equal(r.url, "http://10.0.0.1:8000");
    assert_string_equal(r.model_id, "qwen");
    assert_int_equal(r.max_inflight, 4);
    ig_admin_request_free(&r);
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"model_id\":\"x\"}",
                         "{\"url\":3}",
                         "{\"url\":\"http://a:1\",\"max_inflight\":-1}",
                         "{\"url\":\"http://a:1\",\"model_id\":7}"};
    const int status[] = {400, 400, 400, 400, 400, 400, 400};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_not_equal(ig_admin_parse(HTTP_POST, "/workers", bad[i], strlen(bad[i]), &r), 0);
        assert_int_equal(r.status, status[i]);
        assert_non_null(r.code);
        ig_admin_request_free(&r);
    }
}

static void sgl_query_style(void **state)
{
    ig_admin_request r;
    assert_int_equal(ig_admin_parse(HTTP_POST, "/add_worker?url=http%3A%2F%2F127.0.0.1%3A9000", NULL, 0, &r),
                     0);
    assert_int_equal(r.op, IG_ADMIN_ADD);
    assert_string_equal(r.url, "http://127.0.0.1:9000");
    ig_admin_request_free(&r);
    assert_int_equal(ig_admin_parse(HTTP_POST, "/remove_worker?x=1&url=http://h:1", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_DELETE);
    assert_string_equal(r.url, "http://h:1");
    ig_admin_request_free(&r);
    assert_int_not_equal(ig_admin_parse(HTTP_POST, "/add_worker", NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    assert_int_not_equal(ig_admin_parse(HTTP_GET, "/add_worker?url=x", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
}

static void broadcasts(void **state)
{
    ig_admin_request r;
    assert_int_equal(ig_admin_parse(HTTP_POST, "/pause_generation", NULL, 0, &r), 0);
    assert_int_equal(r.op, IG_ADMIN_BROADCAST);
    assert_int_equal(r.bc, IG_BC_PAUSE);
    assert_string_equal(r.bc_path, "/pause_generation");
    assert_false(r.has_worker);
    ig_admin_request_free(&r);
    assert_int_equal(ig_admin_parse(HTTP_POST, "/continue_generation/w4", NULL, 0, &r), 0);
    assert_int_equal(r.bc, IG_BC_CONTINUE);
    assert_true(r.has_worker);
    assert_int_equal(r.id, 4);
    ig_admin_request_free(&r);
    const char *b = "{\"version\": 12, \"model\": \"qwen\"}";
    assert_int_equal(ig_admin_parse(HTTP_POST, "/set_version", b, strlen(b), &r), 0);
    assert_int_equal(r.bc, IG_BC_SET_VERSION);
    assert_int_equal(r.version, 12);
    assert_string_equal(r.model, "qwen");
    ig_admin_request_free(&r);
    assert_int_equal(ig_admin_parse(HTTP_GET, "/get_version", NULL, 0, &r), 0);
    assert_int_equal(r.bc, IG_BC_GET_VERSION);
    ig_admin_request_free(&r);
    assert_int_not_equal(ig_admin_parse(HTTP_POST, "/set_version", NULL, 0, &r), 0);
    assert_string_equal(r.code, "missing_version");
    ig_admin_request_free(&r);
    assert_int_not_equal(ig_admin_parse(HTTP_POST, "/set_version", "{\"version\":\"x\"}", 15, &r), 0);
    assert_string_equal(r.code, "invalid_version");
    ig_admin_request_free(&r);
    assert_int_not_equal(ig_admin_parse(HTTP_GET, "/flush_cache", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    ig_admin_request_free(&r);
    assert_true(ig_admin_is_path("/pause_generation/w1", 20));
    assert_true(ig_admin_is_path("/release_memory_occupation", 26));
    assert_false(ig_admin_is_path("/pause_generations", 18));
}

static size_t len_of(const char *s)
{
    return s ? strlen(s) : 0;
}
#define PARSE(m, t, b) ig_admin_parse(m, t, b, len_of(b), &r)

static void areal_router_and_gateway(void **state)
{
    ig_admin_request r;
    assert_int_equal(PARSE(HTTP_POST, "/route", "{\"api_key\":\"k\",\"model\":null}"), 0);
    assert_int_equal(r.op, IG_ADMIN_ROUTE);
    assert_string_equal(r.key, "k");
    assert_null(r.model);
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/route", "{}"), 0);
    assert_int_equal(r.status, 422);
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/route", "{\"session_id\":3}"), 0);
    assert_int_equal(r.status, 422);
    ig_admin_request_free(&r);

    const char *reg = "{\"session_api_key\":\"sk\",\"session_id\":\"s1\",\"worker_addr\":\"http://h:1\"}";
    assert_int_equal(PARSE(HTTP_POST, "/register_session", reg), 0);
    assert_int_equal(r.op, IG_ADMIN_REGISTER_SESSION);
    assert_string_equal(r.key, "sk");
    assert_string_equal(r.session_id, "s1");
    assert_string_equal(r.url, "http://h:1");
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/register_session", "{\"session_api_key\":\"sk\"}"), 0);
    assert_int_equal(r.status, 422);
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/remove_session", "[]"), 0);
    assert_int_equal(r.status, 422);
    ig_admin_request_free(&r);

    assert_int_equal(PARSE(HTTP_GET, "/resolve_worker/w7", NULL), 0);
    assert_int_equal(r.op, IG_ADMIN_RESOLVE_WORKER);
    assert_int_equal(r.id, 7);
    assert_int_not_equal(PARSE(HTTP_GET, "/resolve_worker/x", NULL), 0);
    assert_int_equal(r.status, 404);
    assert_int_not_equal(PARSE(HTTP_POST, "/models", NULL), 0);
    assert_int_equal(r.status, 405);

    const char *model = "{\"model\":\"p\",\"url\":\"\",\"data_proxy_addrs\":[\"http://a:1\",\"http://b:2\"]}";
    assert_int_equal(PARSE(HTTP_POST, "/register_model", model), 0);
    assert_int_equal(r.op, IG_ADMIN_REGISTER_MODEL);
    assert_int_equal(r.n_addrs, 2);
    assert_string_equal(r.addrs[1], "http://b:2");
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/register_model", "{\"url\":\"x\"}"), 0);
    assert_int_equal(r.status, 400);
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/register_model", "{\"model\":\"p\",\"data_proxy_addrs\":[1]}"),
                         0);
    assert_int_equal(r.status, 422);
    ig_admin_request_free(&r);
    assert_int_equal(PARSE(HTTP_POST, "/remove_model", "{\"name\":\"p\"}"), 0);
    assert_string_equal(r.model, "p");
    ig_admin_request_free(&r);

    /* export: a model naming the session is rewritten into session_id */
    assert_int_equal(PARSE(HTTP_POST, "/export_trajectories", "{\"model\":\"s9\",\"discount\":1}"), 0);
    assert_int_equal(r.op, IG_ADMIN_EXPORT);
    assert_string_equal(r.session_id, "s9");
    assert_non_null(strstr(r.body_out, "\"session_id\":\"s9\""));
    assert_non_null(strstr(r.body_out, "\"discount\":1"));
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/export_trajectories", "{"), 0);
    assert_int_equal(r.status, 400);
    ig_admin_request_free(&r);
    assert_int_not_equal(PARSE(HTTP_POST, "/export_trajectories", "{}"), 0);
    assert_int_equal(r.status, 400);
    ig_admin_request_free(&r);
    assert_int_equal(PARSE(HTTP_POST, "/rl/start_session", "anything"), 0);
    assert_int_equal(r.op, IG_ADMIN_START_SESSION);

    /* RolloutCallback's /callback aliases */
    assert_int_equal(PARSE(HTTP_POST, "/callback/pause_generation/w2", NULL), 0);
    assert_int_equal(r.op, IG_ADMIN_BROADCAST);
    assert_int_equal(r.bc, IG_BC_PAUSE);
    assert_int_equal(r.id, 2);
    assert_true(ig_admin_is_path("/callback/continue_generation/w1", 32));
    assert_false(ig_admin_is_path("/callback/online_ready", 22));
    assert_true(ig_admin_is_path("/route", 6));
    assert_false(ig_admin_is_path("/rl/set_reward", 14)); /* a data request: the session's worker */
}

static void query_get(void **state)
{
    char *v = ig_query_get("a=1&b=x%20y+z&c=%zz", "b");
    assert_string_equal(v, "x y z");
    free(v);
    v = ig_query_get("a=1&b=2", "c");
    assert_null(v);
    v = ig_query_get("c=%zz", "c");
    assert_string_equal(v, "%zz");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(list_get_delete),          cmocka_unit_test(add_by_json),
        cmocka_unit_test(sgl_query_style),          cmocka_unit_test(broadcasts),
        cmocka_unit_test(areal_router_and_gateway), cmocka_unit_test(query_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
