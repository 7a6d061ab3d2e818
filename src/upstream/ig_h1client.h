/* One HTTP/1.1 exchange with a worker over a pooled or new connection
 * (ig_pool): build and send the request, parse the answer with
 * http/ig_h1resp, and report to the owner through ig_exchange_cb
 * (ig_exchange.h). The owner (the proxy) never sees the wire protocol;
 * h2o's httpclient is the model.
 *
 * Threads: the connection's loop thread only. */
#ifndef IG_H1CLIENT_H
#define IG_H1CLIENT_H
#include <stddef.h>
#include <uv.h>

#include "../core/ig_block.h"
#include "../http/ig_h1resp.h"
#include "../http/ig_http.h"
#include "ig_exchange.h"
#include "ig_pool.h"

/* The exchange functions of ig_exchange.h are implemented here: HTTP/1.1 is
 * the one upstream protocol today. One request at a time per connection. */
#endif
