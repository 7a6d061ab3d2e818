/* libFuzzer driver: admin requests (method, target, JSON body) and --config
 * JSON documents. First byte: the method; up to the first newline: the
 * target; the rest: the body, also tried as a config document. */
#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/app/ig_config.h"
#include "../../src/api/ig_admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const int methods[] = {HTTP_GET, HTTP_POST, HTTP_DELETE, HTTP_PUT};
    int method = methods[data[0] % 4];
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    const char *nl = memchr(rest, '\n', n);
    size_t tlen = nl ? (size_t)(nl - rest) : n;
    char *target = malloc(tlen + 1);
    if (!target)
        return 0;
    memcpy(target, rest, tlen);
    target[tlen] = '\0';
    const char *body = nl ? nl + 1 : rest + n;
    size_t blen = (size_t)(rest + n - body);
    ig_admin_request r;
    ig_admin_is_path(target, strlen(target));
    ig_admin_parse(method, target, body, blen, &r);
    ig_admin_request_free(&r);
    char *q = ig_query_get(target, "url");
    free(q);
    free(target);

    ig_config cfg;
    char err[256];
    ig_config_defaults(&cfg);
    ig_config_load_json(&cfg, body, blen, err, sizeof(err));
    ig_config_free(&cfg);
    return 0;
}
