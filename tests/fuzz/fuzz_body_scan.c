/* libFuzzer driver: the in-place JSON body scanner and the prompt keys
 * cache_aware builds from what it finds. */
#include <stddef.h>
#include <stdint.h>

#include "../../src/balance/ig_prefix.h"
#include "../../src/api/ig_body_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ig_prefix_query q;
    ig_body_fields f;
    const char *err;
    if (ig_body_scan((const char *)data, size, &f, &err) == 0)
        ig_prefix_hash(f.text, f.n_text, f.has_model ? f.model : NULL, f.model_len, &q);
    return 0;
}
