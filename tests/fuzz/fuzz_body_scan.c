/* libFuzzer driver: the in-place JSON body scanner, the prompt keys
 * cache_aware builds from what it finds, and the PD bootstrap fields put
 * into it (the result must still be one JSON object). */
#include <stddef.h>
#include <stdint.h>

#include "../../src/balance/ig_prefix.h"
#include "../../src/api/ig_body_scan.h"
#include "../../src/api/ig_pd_body.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ig_prefix_query q;
    ig_body_fields f;
    const char *err;
    ig_span m;
    /* any bytes: a member found lies inside them */
    if (ig_json_member((const char *)data, size, "kv_transfer_params", &m) == 0 &&
        (m.p < (const char *)data || m.p + m.len > (const char *)data + size))
        abort();
    if (ig_body_scan((const char *)data, size, &f, &err) != 0)
        return 0;
    ig_prefix_hash(f.text, f.n_text, f.has_model ? f.model : NULL, f.model_len, &q);
    int batch = ig_pd_batch_size(&f);
    if (batch < 0)
        return 0;
    static uint64_t rooms[IG_PD_MAX_BATCH], st;
    for (int i = 0; i < (batch ? batch : 1); i++)
        rooms[i] = ig_pd_room(&st);
    ig_buf out;
    ig_buf_init(&out, 64u << 20);
    if (ig_pd_inject(&out, (const char *)data, size, "10.0.0.1", 8998, rooms, batch) == 0) {
        ig_body_fields again;
        if (ig_body_scan(out.data, out.len, &again, &err) != 0)
            abort(); /* the injected body must scan as the original did */
    }
    out.len = 0;
    size_t at; /* vLLM's fields too: the body still scans */
    if (ig_pd_vllm_prefill_fields(&out, (const char *)data, size, &at) == 0) {
        ig_buf whole;
        ig_buf_init(&whole, 64u << 20);
        ig_buf_append(&whole, data, at);
        ig_buf_append(&whole, out.data, out.len);
        ig_buf_append(&whole, data + at, size - at);
        ig_body_fields again;
        if (ig_body_scan(whole.data, whole.len, &again, &err) != 0)
            abort();
        ig_buf_free(&whole);
    }
    ig_buf_free(&out);
    return 0;
}
