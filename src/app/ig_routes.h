/* The route table (the top of the house): authentication, the gateway's
 * own answers (probes, models, metrics), data requests to the proxy, admin
 * requests to the control thread and their answers back. The server's
 * on_request and on_message hooks. Loop threads. */
#ifndef IG_ROUTES_H
#define IG_ROUTES_H
#include "ig_config.h"
#include "../core/ig_inbox.h"
#include "../proxy/ig_request.h"

/** The route table, with the forwarded prefixes of cfg. 0 or -ENOMEM. */
int ig_routes_configure(const ig_config *cfg);
void ig_routes_shutdown(void);
/** A request is read: answer it or hand it on. */
void ig_routes_dispatch(ig_request *r);
/** The head is read: 1 when the body streams through as it arrives (a
 * forwarded path, chunked or longer than IG_STREAM_WINDOW). */
int ig_routes_streams_body(ig_request *r);
/** An admin answer came back to this loop thread. */
void ig_routes_deliver(ig_inbox_node *n);
#endif
