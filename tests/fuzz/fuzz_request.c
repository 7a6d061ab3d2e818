/* libFuzzer driver: request framing. The bytes are a request as a client
 * sends it: llhttp parses it (strict settings, as the gateway does), and the
 * gateway's own checks run on the head and on every slice of chunked framing. */
#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../../src/http/ig_framing.h"
#include "../../src/http/ig_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data, *why;
    size_t head = ig_framing_head_len(d, size);
    if (head)
        ig_framing_check_head(d, head, &why);
    /* the rest as chunked framing, in every role */
    for (int role = 0; role < 4; role++)
        ig_framing_check_chunk(d + head, size - head, role & 1, role & 2, &why);
    if (head) {
        const char *v = d, *e = d + head;
        const char *colon = memchr(v, ':', (size_t)(e - v));
        if (colon) {
            ig_framing_field_ok(v, (size_t)(colon - v), colon + 1, (size_t)(e - colon - 1));
            ig_http_header_kind(v, (size_t)(colon - v));
        }
    }
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    llhttp_t parser;
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    llhttp_execute(&parser, d, size);
    return 0;
}
