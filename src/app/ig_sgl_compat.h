/* sgl-model-gateway's command line (lightseekorg/smg's CLI and sglang's
 * sglang_router launcher), flag by flag: what infergate does with each one
 * it does not have under the same name. A flag is mapped to infergate's
 * own option, accepted as a no-op where infergate already behaves that
 * way, or refused with a message that names the feature. The table is the
 * source of docs/sgl-compat.md (infergate --sgl-compat-table prints it). */
#ifndef IG_SGL_COMPAT_H
#define IG_SGL_COMPAT_H
#include <stdio.h>

typedef enum {
    IG_SGL_SAME,   /* infergate's own option of that name: same meaning */
    IG_SGL_MAP,    /* sets an infergate option (to: "name" takes the value, "name=v" a fixed one) */
    IG_SGL_NOOP,   /* accepted, nothing to do (why says why) */
    IG_SGL_REFUSE, /* refused: why names the feature */
} ig_sgl_kind;

typedef struct ig_sgl_flag {
    const char *name;
    int nargs; /* 0: a switch; 1: one value; -1: values up to the next --flag */
    ig_sgl_kind kind;
    const char *to;  /* IG_SGL_MAP */
    const char *why; /* the note: a differing default, why nothing is needed, the feature refused */
} ig_sgl_flag;

/** sgl's flag of that name (no leading dashes), or NULL. */
const ig_sgl_flag *ig_sgl_find(const char *name);
/** Every flag of sgl-model-gateway's CLI, and how many. */
const ig_sgl_flag *ig_sgl_flags(int *n);
/** The table of docs/sgl-compat.md, in Markdown. */
void ig_sgl_print_table(FILE *f);
#endif
