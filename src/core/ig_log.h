/* Leveled logging to stderr; the level check is inlined so disabled levels cost a compare. */
#ifndef IG_LOG_H
#define IG_LOG_H
#include <stddef.h>

enum { IG_LOG_ERROR = 0, IG_LOG_WARN = 1, IG_LOG_INFO = 2, IG_LOG_DEBUG = 3 };

extern int ig_log_level;
/** --log-json: every line a JSON object ({"ts","level","msg"}; access lines their fields). */
extern int ig_log_json;

/** Parse "error|warn|info|debug"; returns the level or -1. */
int ig_log_level_from_name(const char *name);
/** Emit one line; control bytes and backslashes in the message come out as \\xHH. */
void ig_log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Copy in[0..n) to out (at most cap bytes, whole escapes only) with control
 * bytes, DEL and backslash as \\xHH, and with spaces set also ' ' and '"' (so a
 * value stays one field of a line). Returns the bytes written. */
size_t ig_log_escape(char *out, size_t cap, const char *in, size_t n, int spaces);

/** Copy in[0..n) to out as the inside of a JSON string (at most cap bytes,
 * whole escapes only): quotes, backslashes and control bytes escaped, valid
 * UTF-8 kept, any other byte as \u00XX. Returns the bytes written. */
size_t ig_log_json_escape(char *out, size_t cap, const char *in, size_t n);

#define ig_log(level, ...)                                                                                   \
    do {                                                                                                     \
        if ((level) <= ig_log_level)                                                                         \
            ig_log_emit((level), __VA_ARGS__);                                                               \
    } while (0)
#define ig_err(...) ig_log(IG_LOG_ERROR, __VA_ARGS__)
#define ig_warn(...) ig_log(IG_LOG_WARN, __VA_ARGS__)
#define ig_info(...) ig_log(IG_LOG_INFO, __VA_ARGS__)
#define ig_debug(...) ig_log(IG_LOG_DEBUG, __VA_ARGS__)
#endif
