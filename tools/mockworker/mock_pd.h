/* The mock worker as one side of SGLang's (or, --pd-protocol vllm, vLLM's
 * NIXL) prefill/decode disaggregation,
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
/** Decode: wait for the request's rooms at its prefill, at most timeout_ms
 * (vllm: the blocks its kv_transfer_params name, at its remote_host and
 * remote_port). NULL (why set) when the request names no reachable prefill. */
mock_pd_fetch *mock_pd_fetch_start(uv_loop_t *loop, const char *body, size_t len, int timeout_ms, int vllm,
                                   mock_pd_cb cb, void *arg, char *why, size_t cap);
/** vLLM's prefill (NIXL): the request must ask for one token, no stream, and
 * carry kv_transfer_params {do_remote_decode: true}; the block it keeps for
 * the remote decode is remembered, and the kv_transfer_params the decode
 * needs are written to params (a JSON object). 0, or -1 with why set. */
int mock_pd_vllm_prefill(const char *body, size_t len, const char *engine_id, const char *host, int side_port,
                         char *params, size_t pcap, char *why, size_t wcap);
/** The request went away: cb is not called; the fetch frees itself. */
void mock_pd_fetch_cancel(mock_pd_fetch *f);
#endif
