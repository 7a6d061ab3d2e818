/* The inner loop of the body scanner: where a JSON string's plain run ends.
 * Prompts are almost all plain string bytes (1 MB agent contexts), so this
 * is where a big body's CPU goes: 16 bytes a step with SSE2 (x86-64's
 * baseline), 32 with AVX2 where the CPU has it (chosen once, at first use),
 * a byte at a time elsewhere. Pure; any thread. */
#ifndef IG_JSON_STOP_H
#define IG_JSON_STOP_H

/** The first byte in [p, end) that is '"', '\\' or below 0x20 (end: none). */
const char *ig_json_string_stop(const char *p, const char *end);
/** The same, a byte at a time (the reference the tests hold the others to). */
const char *ig_json_string_stop_scalar(const char *p, const char *end);
#endif
