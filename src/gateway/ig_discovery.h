#ifndef IG_DISCOVERY_H
#define IG_DISCOVERY_H
#include "../registry/ig_registry.h"

/** Learn each worker's models from GET /v1/models, concurrently; a worker
 * that does not answer keeps serving any model. Blocks until all answered or
 * timed out. */
void ig_discover_models(ig_registry *r, double timeout_secs);
#endif
