/* Prometheus text pages (ig_prom.h). */
#include "ig_prom.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct family {
    const char *name; /* into its first page */
    size_t len;
    const char *help, *type; /* whole lines, or NULL */
    size_t help_len, type_len;
    int histo; /* histogram or summary: suffixed samples belong to it */
    ig_buf samples;
} family;

typedef struct {
    family *v;
    int n, cap;
} families;

static size_t name_len(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && *q != '{' && *q != ' ' && *q != '\t')
        q++;
    return (size_t)(q - p);
}

static family *find(families *fs, const char *name, size_t len)
{
    for (int i = 0; i < fs->n; i++)
        if (fs->v[i].len == len && memcmp(fs->v[i].name, name, len) == 0)
            return &fs->v[i];
    return NULL;
}

static family *get(families *fs, const char *name, size_t len)
{
    family *f = find(fs, name, len);
    if (f)
        return f;
    if (fs->n == fs->cap) {
        int cap = fs->cap ? fs->cap * 2 : 32;
        family *v = realloc(fs->v, sizeof(*v) * (size_t)cap);
        if (!v)
            return NULL;
        fs->v = v;
        fs->cap = cap;
    }
    f = &fs->v[fs->n++];
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->len = len;
    ig_buf_init(&f->samples, 256u << 20);
    return f;
}

/* The family a sample belongs to: its own name, or a histogram's or a
 * summary's whose name it extends by a known suffix. */
static family *owner(families *fs, const char *name, size_t len)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count", "_created"};
    for (size_t s = 0; s < sizeof(suffixes) / sizeof(suffixes[0]); s++) {
        size_t sl = strlen(suffixes[s]);
        if (len > sl && memcmp(name + len - sl, suffixes[s], sl) == 0) {
            family *f = find(fs, name, len - sl);
            if (f && f->histo)
                return f;
        }
    }
    return get(fs, name, len);
}

static int put_label(ig_buf *b, const char *label, const char *value)
{
    int rc = ig_buf_puts(b, label);
    rc = rc ? rc : ig_buf_puts(b, "=\"");
    for (const char *v = value; !rc && *v; v++)
        rc = *v == '"' || *v == '\\' ? ig_buf_append(b, "\\", 1) || ig_buf_append(b, v, 1)
             : *v == '\n'            ? ig_buf_puts(b, "\\n")
                                     : ig_buf_append(b, v, 1);
    return rc ? rc : ig_buf_puts(b, "\"");
}

static int add_sample(family *f, const char *line, const char *end, size_t nlen, const char *label,
                      const char *value)
{
    ig_buf *b = &f->samples;
    const char *rest = line + nlen;
    int rc = ig_buf_append(b, line, nlen);
    rc = rc ? rc : ig_buf_puts(b, "{");
    rc = rc ? rc : put_label(b, label, value);
    if (rest < end && *rest == '{') {
        rest++;
        if (rest < end && *rest != '}')
            rc = rc ? rc : ig_buf_puts(b, ",");
    } else {
        rc = rc ? rc : ig_buf_puts(b, "}");
    }
    rc = rc ? rc : ig_buf_append(b, rest, (size_t)(end - rest));
    return rc ? rc : ig_buf_puts(b, "\n");
}

static int meta(families *fs, const char *line, const char *end)
{
    int help = end - line > 7 && memcmp(line, "# HELP ", 7) == 0;
    int type = end - line > 7 && memcmp(line, "# TYPE ", 7) == 0;
    if (!help && !type)
        return 0; /* other comments are dropped */
    const char *name = line + 7;
    size_t nlen = name_len(name, end);
    family *f = get(fs, name, nlen);
    if (!f)
        return -ENOMEM;
    if (help && !f->help) {
        f->help = line;
        f->help_len = (size_t)(end - line);
    } else if (type && !f->type) {
        f->type = line;
        f->type_len = (size_t)(end - line);
        const char *t = name + nlen;
        while (t < end && *t == ' ')
            t++;
        f->histo = (end - t >= 9 && memcmp(t, "histogram", 9) == 0) ||
                   (end - t >= 7 && memcmp(t, "summary", 7) == 0);
    }
    return 0;
}

int ig_prom_merge(const char *const *pages, const size_t *lens, const char *label, const char *const *values,
                  int n, ig_buf *out)
{
    families fs = {0};
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const char *p = pages[i], *end = p + lens[i];
        while (p < end && !rc) {
            const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
            const char *e = le > p && le[-1] == '\r' ? le - 1 : le;
            if (e > p && *p == '#') {
                rc = meta(&fs, p, e);
            } else if (e > p) {
                size_t nlen = name_len(p, e);
                family *f = nlen ? owner(&fs, p, nlen) : NULL;
                rc = !nlen ? 0 : f ? add_sample(f, p, e, nlen, label, values[i]) : -ENOMEM;
            }
            p = nl ? nl + 1 : end;
        }
    }
    for (int i = 0; i < fs.n; i++) {
        family *f = &fs.v[i];
        if (!rc && f->samples.len) {
            if (f->help)
                rc = ig_buf_append(out, f->help, f->help_len) || ig_buf_puts(out, "\n");
            if (!rc && f->type)
                rc = ig_buf_append(out, f->type, f->type_len) || ig_buf_puts(out, "\n");
            rc = rc ? rc : ig_buf_append(out, f->samples.data, f->samples.len);
        }
        ig_buf_free(&f->samples);
    }
    free(fs.v);
    return rc ? -ENOMEM : 0;
}

int ig_prom_sum(const char *page, size_t len, const char *name, double *sum)
{
    size_t want = strlen(name);
    const char *p = page, *end = page + len;
    int n = 0;
    *sum = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        if (le > p && *p != '#' && name_len(p, le) == want && memcmp(p, name, want) == 0) {
            const char *v = p + want;
            if (v < le && *v == '{') { /* label values may hold anything but an unescaped quote */
                int quoted = 0;
                for (v++; v < le && (quoted || *v != '}'); v++) {
                    if (*v == '\\' && quoted)
                        v++;
                    else if (*v == '"')
                        quoted = !quoted;
                }
                v++;
            }
            char num[64];
            while (v < le && *v == ' ')
                v++;
            size_t k = 0;
            while (v < le && *v != ' ' && k < sizeof(num) - 1)
                num[k++] = *v++;
            num[k] = '\0';
            char *ep;
            double x = strtod(num, &ep);
            if (k && *ep == '\0') {
                *sum += x;
                n++;
            }
        }
        p = nl ? nl + 1 : end;
    }
    return n;
}
