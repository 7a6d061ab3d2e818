/* Finds the few top-level fields routing needs in a JSON request body, in place:
 * no tree, no copy of the body. Nested values are skipped structurally. */
#ifndef IG_BODY_SCAN_H
#define IG_BODY_SCAN_H
#include <stddef.h>

#define IG_MODEL_MAX 256
#define IG_TEXT_SPANS 4

/* A raw slice of the body: a string's contents without its quotes, or an
 * array or object as written (escapes and all: routing compares bytes, and
 * one client writes the same prompt the same way every time). */
typedef struct ig_span {
    const char *p;
    size_t len;
} ig_span;

typedef struct ig_body_fields {
    const char *model; /* points into the body, or into model_buf when the JSON string had escapes */
    size_t model_len;
    int has_model;      /* 1 when a top-level "model" string was found */
    int stream;         /* 1 for "stream": true, else 0 */
    int return_logprob; /* 1 for SGLang's "return_logprob": true */
    int max_tokens;     /* top-level "max_tokens" when a small non-negative integer, else -1 */
    /* the prompt, for cache-aware routing: the values of "prompt", "text",
     * "input", "input_ids" and "messages" (all messages), in body order */
    ig_span text[IG_TEXT_SPANS];
    int n_text;
    ig_span user; /* top-level "user" string (consistent hashing), len 0 when absent */
    /* (and "return_logprob": a disaggregated answer then merges the prefill's logprobs) */
    char model_buf[IG_MODEL_MAX];
} ig_body_fields;

/**
 * Scan body for top-level "model", "stream", "max_tokens", the prompt spans
 * and "user".
 * Returns 0, -EINVAL when the body is not one well-formed JSON object
 * (the error text is then a static string in *err), or -ENAMETOOLONG for an
 * over-long model name.
 */
int ig_body_scan(const char *body, size_t len, ig_body_fields *out, const char **err);
/**
 * Elements of the JSON array v (a span ig_body_scan found); *first: the first
 * byte of its first element ('"', '[', '{', a digit...; 0 when empty).
 * -1 when v is not an array, -EINVAL when it is malformed.
 */
int ig_json_array_len(ig_span v, char *first);
/**
 * The raw value of the top-level member key of the JSON object body (its
 * first occurrence, as written), without parsing the rest into a tree.
 * 0, -ENOENT (no such member), -EINVAL (not a well-formed object up to it).
 */
int ig_json_member(const char *body, size_t len, const char *key, ig_span *out);
#endif
