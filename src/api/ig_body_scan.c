#include "ig_body_scan.h"

#include <errno.h>
#include <string.h>

#include "ig_json_stop.h"

/* Nesting deeper than this is refused: the scanner is iterative, but a bound
 * keeps hostile bodies from costing more than their length. */
#define MAX_DEPTH 512

typedef struct scan {
    const char *p;
    const char *end;
    const char *err;
} scan;

static void skip_ws(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int fail(scan *s, const char *why)
{
    if (!s->err)
        s->err = why;
    return -EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* the one-letter escapes JSON has (RFC 8259 §7) */
static const unsigned char simple_escape[256] = {
    ['"'] = 1, ['\\'] = 1, ['/'] = 1, ['b'] = 1, ['f'] = 1, ['n'] = 1, ['r'] = 1, ['t'] = 1};

/* At an opening quote: advance past the string, report its raw contents and whether it had escapes. */
static int scan_string(scan *s, const char **start, size_t *len, int *escaped)
{
    s->p++;
    *start = s->p;
    *escaped = 0;
    while ((s->p = ig_json_string_stop(s->p, s->end)) < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            *len = (size_t)(s->p - *start);
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return fail(s, "control character in JSON string");
        if (c == '\\') {
            *escaped = 1;
            if (s->p + 1 >= s->end)
                break;
            char e = s->p[1];
            if (e == 'u') {
                if (s->end - s->p < 6)
                    break;
                for (int i = 2; i < 6; i++)
                    if (hexval(s->p[i]) < 0)
                        return fail(s, "bad \\u escape in JSON string");
                s->p += 6;
                continue;
            }
            if (!simple_escape[(unsigned char)e])
                return fail(s, "bad escape in JSON string");
            s->p += 2;
            continue;
        }
        s->p++; /* not reached: the stop is a quote, a backslash or a control byte */
    }
    return fail(s, "unterminated JSON string");
}

static int scan_literal(scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return fail(s, "invalid JSON value");
    s->p += n;
    return 0;
}

static int scan_number(scan *s)
{
    const char *b = s->p;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    int digits = 0;
    while (s->p < s->end && ((*s->p >= '0' && *s->p <= '9') || *s->p == '.' || *s->p == 'e' || *s->p == 'E' ||
                             *s->p == '+' || *s->p == '-')) {
        digits += (*s->p >= '0' && *s->p <= '9');
        s->p++;
    }
    if (!digits || s->p == b)
        return fail(s, "invalid JSON number");
    return 0;
}

/* Skip one value of any kind. Containers are walked with an explicit stack of
 * their closing brackets, so depth costs no C stack. */
static int skip_value(scan *s)
{
    char stack[MAX_DEPTH];
    int depth = 0;
    const char *str;
    size_t slen;
    int esc;

    for (;;) {
        skip_ws(s);
        if (s->p >= s->end)
            return fail(s, "truncated JSON");
        char c = *s->p;
        int rc = 0;
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH)
                return fail(s, "JSON nested too deeply");
            stack[depth++] = c == '{' ? '}' : ']';
            s->p++;
            skip_ws(s);
            if (s->p < s->end && *s->p == stack[depth - 1]) {
                s->p++;
                depth--;
                goto after_value;
            }
            if (stack[depth - 1] == '}') {
                if (s->p >= s->end || *s->p != '"')
                    return fail(s, "expected a key in JSON object");
                if ((rc = scan_string(s, &str, &slen, &esc)))
                    return rc;
                skip_ws(s);
                if (s->p >= s->end || *s->p != ':')
                    return fail(s, "expected ':' in JSON object");
                s->p++;
            }
            continue;
        }
        if (c == '"')
            rc = scan_string(s, &str, &slen, &esc);
        else if (c == 't')
            rc = scan_literal(s, "true");
        else if (c == 'f')
            rc = scan_literal(s, "false");
        else if (c == 'n')
            rc = scan_literal(s, "null");
        else
            rc = scan_number(s);
        if (rc)
            return rc;
    after_value:
        for (;;) {
            if (depth == 0)
                return 0;
            skip_ws(s);
            if (s->p >= s->end)
                return fail(s, "truncated JSON");
            if (*s->p == stack[depth - 1]) {
                s->p++;
                depth--;
                continue;
            }
            if (*s->p != ',')
                return fail(s, "expected ',' in JSON");
            s->p++;
            if (stack[depth - 1] == '}') {
                skip_ws(s);
                if (s->p >= s->end || *s->p != '"')
                    return fail(s, "expected a key in JSON object");
                if ((rc = scan_string(s, &str, &slen, &esc)))
                    return rc;
                skip_ws(s);
                if (s->p >= s->end || *s->p != ':')
                    return fail(s, "expected ':' in JSON object");
                s->p++;
            }
            break;
        }
    }
}

/* Decode a JSON string with escapes into out; only ASCII \u escapes are kept
 * exact, others become '?', which can never match a registered model name. */
static int unescape(const char *in, size_t n, char *out, size_t cap, size_t *olen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '\\') {
            char e = in[++i];
            if (e == 'u') {
                int v = (hexval(in[i + 1]) << 12) | (hexval(in[i + 2]) << 8) | (hexval(in[i + 3]) << 4) |
                        hexval(in[i + 4]);
                i += 4;
                c = v < 0x80 ? (char)v : '?';
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                c = to[strchr(from, e) - from];
            }
        }
        if (o == cap)
            return -ENAMETOOLONG;
        out[o++] = c;
    }
    *olen = o;
    return 0;
}

static int key_is(const char *k, size_t klen, const char *want)
{
    size_t n = strlen(want);
    return klen == n && memcmp(k, want, n) == 0;
}

static int is_prompt_key(const char *k, size_t klen)
{
    return key_is(k, klen, "messages") || key_is(k, klen, "prompt") || key_is(k, klen, "text") ||
           key_is(k, klen, "input") || key_is(k, klen, "input_ids");
}

int ig_body_scan(const char *body, size_t len, ig_body_fields *out, const char **err)
{
    scan s = {body, body + len, NULL};
    const char *k, *v;
    size_t klen, vlen;
    int kesc, vesc, rc;

    out->model = NULL;
    out->model_len = 0;
    out->has_model = 0;
    out->stream = 0;
    out->return_logprob = 0;
    out->max_tokens = -1;
    out->n_text = 0;
    out->user.p = NULL;
    out->user.len = 0;

    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        rc = fail(&s, "request body must be a JSON object");
        goto done;
    }
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
        goto trailing;
    }
    for (;;) {
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '"') {
            rc = fail(&s, "expected a key in JSON object");
            goto done;
        }
        if ((rc = scan_string(&s, &k, &klen, &kesc)))
            goto done;
        skip_ws(&s);
        if (s.p >= s.end || *s.p != ':') {
            rc = fail(&s, "expected ':' in JSON object");
            goto done;
        }
        s.p++;
        skip_ws(&s);
        if (s.p >= s.end) {
            rc = fail(&s, "truncated JSON");
            goto done;
        }
        if (!kesc && key_is(k, klen, "model") && *s.p == '"') {
            if ((rc = scan_string(&s, &v, &vlen, &vesc)))
                goto done;
            if (vesc) {
                if ((rc = unescape(v, vlen, out->model_buf, sizeof(out->model_buf), &vlen)))
                    goto done;
                v = out->model_buf;
            } else if (vlen > IG_MODEL_MAX) {
                rc = -ENAMETOOLONG;
                goto done;
            }
            out->model = v;
            out->model_len = vlen;
            out->has_model = 1;
        } else if (!kesc && key_is(k, klen, "stream") && (*s.p == 't' || *s.p == 'f')) {
            out->stream = *s.p == 't';
            if ((rc = scan_literal(&s, out->stream ? "true" : "false")))
                goto done;
        } else if (!kesc && key_is(k, klen, "return_logprob") && (*s.p == 't' || *s.p == 'f')) {
            out->return_logprob = *s.p == 't';
            if ((rc = scan_literal(&s, out->return_logprob ? "true" : "false")))
                goto done;
        } else if (!kesc && key_is(k, klen, "max_tokens") && *s.p >= '0' && *s.p <= '9') {
            const char *b = s.p;
            if ((rc = scan_number(&s)))
                goto done;
            long val = 0;
            for (const char *q = b; q < s.p && val <= 1000000000; q++)
                val = (*q >= '0' && *q <= '9') ? val * 10 + (*q - '0') : 1000000001;
            out->max_tokens = val <= 1000000000 ? (int)val : -1;
        } else if (!kesc && key_is(k, klen, "user") && *s.p == '"') {
            if ((rc = scan_string(&s, &v, &vlen, &vesc)))
                goto done;
            out->user.p = v;
            out->user.len = vlen;
        } else if (!kesc && is_prompt_key(k, klen)) {
            const char *b = s.p;
            if ((rc = skip_value(&s)))
                goto done;
            if (out->n_text < IG_TEXT_SPANS) {
                int str = *b == '"';
                out->text[out->n_text].p = b + str;
                out->text[out->n_text].len = (size_t)(s.p - b) - 2 * (size_t)str;
                out->n_text++;
            }
        } else if ((rc = skip_value(&s))) {
            goto done;
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}') {
            s.p++;
            break;
        }
        rc = fail(&s, s.p < s.end ? "expected ',' or '}' in JSON object" : "truncated JSON");
        goto done;
    }
trailing:
    skip_ws(&s);
    rc = s.p == s.end ? 0 : fail(&s, "unexpected data after the JSON object");
done:
    if (err)
        *err = rc == -ENAMETOOLONG ? "model name too long" : s.err;
    return rc;
}

int ig_json_array_len(ig_span v, char *first)
{
    scan s = {v.p, v.p + v.len, NULL};
    *first = 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '[')
        return -1;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == ']')
        return 0;
    for (int n = 0;;) {
        skip_ws(&s);
        if (!n && s.p < s.end)
            *first = *s.p;
        if (skip_value(&s))
            return -EINVAL;
        n++;
        skip_ws(&s);
        if (s.p >= s.end)
            return -EINVAL;
        if (*s.p == ']')
            return n;
        if (*s.p++ != ',')
            return -EINVAL;
    }
}

int ig_json_member(const char *body, size_t len, const char *key, ig_span *out)
{
    scan s = {body, body + len, NULL};
    const char *k;
    size_t klen;
    int kesc;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -EINVAL;
    s.p++;
    for (;;) {
        skip_ws(&s);
        if (s.p < s.end && *s.p == '}')
            return -ENOENT;
        if (s.p >= s.end || *s.p != '"' || scan_string(&s, &k, &klen, &kesc))
            return -EINVAL;
        skip_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return -EINVAL;
        s.p++;
        skip_ws(&s);
        const char *v = s.p;
        if (skip_value(&s))
            return -EINVAL;
        if (!kesc && key_is(k, klen, key)) {
            out->p = v;
            out->len = (size_t)(s.p - v);
            return 0;
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',')
            s.p++;
        else if (s.p >= s.end || *s.p != '}')
            return -EINVAL;
    }
}
