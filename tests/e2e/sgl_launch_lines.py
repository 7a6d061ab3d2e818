"""Real sgl-model-gateway launch lines, as their users wrote them, for
test_sgl_launch_lines.py. Each: where it is from, the line after
`python -m sglang_router.launch_router` (or the arguments a framework
builds), and what infergate must do with it: "serves" (it starts and
routes a chat to the workers) or "refused: <the feature named>". In the
lines, {W0} {W1} {W2} are the test's workers, {PORT} and {PROM} free ports;
any other --host is 127.0.0.1 (tests bind to loopback) and worker URLs of
other hosts are the test's workers in order. In a --pd-disaggregation line
{W0} is a prefill and {W1} a decode, and a --prefill's bootstrap port
(written or SGLang's default) is the test prefill's free one. Add a line: append a tuple."""

LAUNCH_LINES = [
    ("sglang docs, router: launch runtimes and router separately",
     "--worker-urls {W0} {W1}", "serves"),
    ("sglang_router launcher --help example",
     "--worker-urls {W0} {W1} --cache-threshold 0.7 --balance-abs-threshold 64 --balance-rel-threshold 1.2",
     "serves"),
    ("benchmark script: round robin behind a long timeout",
     "--worker-urls {W0} {W1} --port {PORT} --policy round_robin --request-timeout-secs 7200", "serves"),
    ("prefix-cache guide: three workers, cache-aware by default",
     "--worker-urls {W0} {W1} {W2} --host 0.0.0.0 --port {PORT}", "serves"),
    ("reward-model server script",
     "--worker-urls {W0} {W1} --port {PORT}", "serves"),
    ("RL job script: the router first, engines register later",
     "--host 127.0.0.1 --port {PORT}", "serves"),
    ("slime rollout.py _start_router (RouterArgs as flags)",
     "--host 127.0.0.1 --port {PORT} --prometheus-port {PROM} --log-level warn --request-timeout-secs 14400 "
     "--disable-circuit-breaker --disable-health-check", "serves"),
    ("slime with --sglang-router-policy consistent_hashing",
     "--host 127.0.0.1 --port {PORT} --prometheus-port {PROM} --log-level warn --request-timeout-secs 14400 "
     "--policy consistent_hashing", "serves"),
    ("miles router_args_to_argv (sticky routing for multi-turn)",
     "--host 127.0.0.1 --port {PORT} --prometheus-port {PROM} --log-level warn --request-timeout-secs 14400 "
     "--policy manual", "serves"),
    ("cache-aware with data-parallel ranks",
     "--host 0.0.0.0 --port {PORT} --worker-urls {W0} --policy cache_aware --dp-aware",
     "refused: data-parallel rank routing"),
    ("sglang docs: PD disaggregation",
     "--pd-disaggregation --prefill {W0} --decode {W1} --host 0.0.0.0 --port {PORT}", "serves"),
    ("dLLM guide: PD through the mini load balancer",
     "--mini-lb --pd-disaggregation --prefill {W0} 30008 --decode {W1} --port {PORT}", "serves"),
    ("PD script with its own scrape port",
     "--pd-disaggregation --prefill {W0} --decode {W1} --host 0.0.0.0 --port {PORT} --prometheus-port {PROM}",
     "serves"),
]
