/* libFuzzer driver: what another gateway sends over NATS (the prefix
 * index's messages and the load reports), any bytes at all: never a read
 * past the message, inserts only under ids the resolver gave, and a
 * well-formed report's pairs all inside it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../src/balance/ig_prefix.h"
#include "../../src/balance/ig_prefix_share.h"

static uint64_t resolve(uint64_t url_key, void *arg)
{
    (void)arg;
    return url_key % 3 == 0 ? 0 : url_key % 200 + 1; /* some unknown, some beyond 128 */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (ig_prefix_init(1 << 20))
            abort();
        ready = 1;
    }
    /* the message as NATS hands it over: its own copy, exactly its length (ASan sees any overread) */
    uint8_t *msg = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++)
        msg[i] = data[i];
    int applied = ig_prefix_share_apply(msg, size, resolve, NULL, 7);
    if (applied > (int)(size / 24))
        abort(); /* a record is at least three words */
    uint64_t sender, k;
    uint32_t v;
    int n;
    if (ig_load_report_parse(msg, size, &sender, &n) == 0) {
        if (n < 0 || 16 + (size_t)n * 16 != size)
            abort();
        for (int i = 0; i < n; i++)
            ig_load_report_pair(msg, i, &k, &v);
    }
    free(msg);
    return 0;
}
