/* The mock worker as one side of SGLang's prefill/decode disaggregation,
 * checking what a real engine checks: every generation request carries
 * bootstrap_host, bootstrap_port and bootstrap_room (integers; arrays of the
 * batch's size for a batch). A prefill serves only requests naming its own
 * bootstrap address and remembers their rooms; its bootstrap server answers
 * GET /bootstrap/room/{room}. A decode generates only once the prefill named
 * in the request has that room (asked on its bootstrap port, again every
 * 20 ms), and fails like a KV-transfer timeout otherwise. */
#ifndef MOCK_PD_H
#define MOCK_PD_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

enum { MOCK_PD_NONE, MOCK_PD_PREFILL, MOCK_PD_DECODE };
#define MOCK_PD_MAX_ROOMS 256
/* SGLang's --disaggregation-bootstrap-port default: a null bootstrap_port means it */
#define MOCK_PD_DEFAULT_BOOTSTRAP_PORT 8998

/** The request's bootstrap fields are well-formed (and, for a prefill, its
 * own: then its rooms are remembered). 0, or -1 with why set. */
int mock_pd_admit(int role, const char *body, size_t len, const char *host, int bootstrap_port, char *why,
                  size_t cap);
/** 1 when this prefill has served the room. */
int mock_pd_room_known(uint64_t room);

typedef struct mock_pd_fetch mock_pd_fetch;
/* ok: every room arrived; else why (a static-lifetime message for the answer) */
typedef void (*mock_pd_cb)(void *arg, int ok, const char *why);
/** Decode: wait for the request's rooms at its prefill, at most timeout_ms.
 * NULL (why set) when the request names no reachable prefill. */
mock_pd_fetch *mock_pd_fetch_start(uv_loop_t *loop, const char *body, size_t len, int timeout_ms,
                                   mock_pd_cb cb, void *arg, char *why, size_t cap);
/** The request went away: cb is not called; the fetch frees itself. */
void mock_pd_fetch_cancel(mock_pd_fetch *f);
#endif
