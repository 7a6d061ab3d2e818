/* Finds the few top-level fields routing needs in a JSON request body, in place:
 * no tree, no copy of the body. Nested values are skipped structurally. */
#ifndef IG_BODY_SCAN_H
#define IG_BODY_SCAN_H
#include <stddef.h>

#define IG_MODEL_MAX 256

typedef struct ig_body_fields {
    const char *model; /* points into the body, or into model_buf when the JSON string had escapes */
    size_t model_len;
    int has_model;     /* 1 when a top-level "model" string was found */
    int stream;        /* 1 for "stream": true, else 0 */
    int max_tokens;    /* top-level "max_tokens" when a small non-negative integer, else -1 */
    char model_buf[IG_MODEL_MAX];
} ig_body_fields;

/**
 * Scan body for top-level "model", "stream" and "max_tokens".
 * Returns 0, -EINVAL when the body is not one well-formed JSON object
 * (the error text is then a static string in *err), or -ENAMETOOLONG for an
 * over-long model name.
 */
int ig_body_scan(const char *body, size_t len, ig_body_fields *out, const char **err);
#endif
