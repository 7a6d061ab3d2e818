#include "ig_stats.h"

static const char *const route_names[IG_R_N] = {"chat_completions", "completions", "embeddings", "generate",
                                                "model_api",        "session",     "models",     "probe",
                                                "metrics",          "admin",       "other",      "forward"};

/* the codes a gateway commonly answers; the rest are folded into their class */
static const int status_codes[IG_STATUS_N] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 413,
                                              417, 422, 429, 431, 500, 502, 503, 504, 0,   0};

/* seconds; inference latencies run from milliseconds to many minutes */
const double ig_hist_bounds[IG_HIST_N] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,    5,     10,   30,    60,   300, 1800};

const char *ig_route_name(ig_route r)
{
    return route_names[r];
}

int ig_status_index(int status)
{
    for (int i = 0; i < 18; i++)
        if (status_codes[i] == status)
            return i;
    return status >= 500 ? 19 : 18; /* other 5xx; any other class */
}

void ig_hist_observe(ig_hist *h, uint64_t us)
{
    int i = 0;
    while (i < IG_HIST_N && (double)us > ig_hist_bounds[i] * 1e6)
        i++;
    ig_count(&h->bucket[i], 1);
    ig_count(&h->sum_us, us);
}

int ig_status_code_at(int i)
{
    return i >= 0 && i < IG_STATUS_N ? status_codes[i] : 0;
}
