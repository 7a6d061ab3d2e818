"""sgl-model-gateway's launch lines (issue 16): every flag of its CLI is
implemented, accepted as a documented no-op, or refused with a message that
names the feature, never "unknown option"; docs/sgl-compat.md is the
gateway's own table; real launch lines start."""
import json
import os
import re
import subprocess

import httpx
import pytest

from conftest import GATEWAY, chat_body, wait_for

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

# Every flag of lightseekorg/smg at 73da68c: model_gateway/src/main.rs (#[arg(long)] fields,
# plus --prefill/--encode parsed by hand) and bindings/python/src/smg/router_args.py; and --mini-lb of
# sglang's own sglang_router launcher (its PD test scripts use it).
SGL_FLAGS = """
api-key assignment-mode backend balance-abs-threshold balance-rel-threshold balance-token-usage-threshold
block-size bucket-adjust-interval-secs ca-cert-paths cache-threshold cb-failure-threshold cb-success-threshold
cb-timeout-duration-secs cb-window-duration-secs chat-template client-cert-path client-key-path
control-plane-api-keys control-plane-audit-enabled cors-allowed-origins decode decode-policy decode-selector
disable-audit-logging disable-circuit-breaker disable-health-check disable-retries disable-tokenizer-autoload
dp-aware dp-minimum-tokens-scheduler drain-settle-secs enable-igw enable-mesh enable-trace enable-wasm encode
encode-policy encode-selector engine-metrics epd-disaggregation eviction-interval eviction-interval-secs
health-check-endpoint health-check-interval-secs health-check-port health-check-timeout-secs
health-failure-threshold health-success-threshold history-backend host jwt-audience jwt-issuer jwt-jwks-uri
jwt-role-claim jwt-role-mapping least-load-default-throughput least-load-kv-pressure-weight
least-load-mean-prefill-tokens load-monitor-interval log-dir log-json log-level max-concurrent-requests
max-idle-secs max-payload-size max-tree-size mcp-config-path mini-lb mesh-advertise-host mesh-host mesh-peer-urls
mesh-port mesh-server-name model model-alias model-id-from model-path multimodal-shm-min-bytes
multimodal-tensor-transport oracle-connect-descriptor oracle-dsn oracle-external-auth oracle-password
oracle-pool-max oracle-pool-min oracle-pool-timeout-secs oracle-tns-alias oracle-user oracle-username
oracle-wallet-path otlp-traces-endpoint overload-token-usage-threshold pd-disaggregation policy port
postgres-db-url postgres-pool-max postgres-pool-max-size prefill prefill-policy prefill-selector
prefix-hash-load-factor prefix-token-count priority-scheduler-config priority-scheduler-default-max-class
priority-scheduler-enabled priority-scheduler-tenant-metric-top-n prometheus-duration-buckets prometheus-host
prometheus-port queue-size queue-timeout-secs rate-limit-tokens-per-second reasoning-parser redis-pool-max
redis-pool-max-size redis-retention-days redis-url remove-unhealthy-workers request-id-headers
request-timeout-secs retry-backoff-multiplier retry-initial-backoff-ms retry-jitter-factor retry-max-backoff-ms
retry-max-retries router-selector routing-key-override runtime-worker-threads schema-config selector
service-discovery service-discovery-namespace service-discovery-port shutdown-grace-period-secs
storage-context-headers storage-hook-wasm-path tenant-api-key tenant-header-name tenant-rate-limit-config
tenant-rate-limit-enabled tls-cert-path tls-key-path tokenizer-cache-enable-l0 tokenizer-cache-enable-l1
tokenizer-cache-l0-max-entries tokenizer-cache-l1-max-memory tokenizer-path tool-call-parser
trust-tenant-header webrtc-bind-addr webrtc-stun-server worker-startup-check-interval worker-startup-delay
worker-startup-timeout-secs worker-urls
""".split()


def table():
    out = subprocess.run([GATEWAY, "--sgl-compat-table"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout
    return out.stdout


def rows():
    return {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `--([a-z0-9-]+)` \| ([^|]+?) \| (.*) \|$", table(), re.M)}


def test_docs_hold_the_gateways_own_table():
    with open(os.path.join(ROOT, "docs", "sgl-compat.md")) as f:
        doc = f.read()
    assert table() in doc, "docs/sgl-compat.md is not the output of infergate --sgl-compat-table"


def test_the_table_lists_every_flag_of_sgl_model_gateway():
    r = rows()
    assert sorted(r) == sorted(SGL_FLAGS), (set(SGL_FLAGS) ^ set(r))
    for name, (what, note) in r.items():
        assert what.startswith(("implemented", "accepted, no effect", "refused")), (name, what)
        if what != "implemented, same name":
            assert note or what.startswith("implemented:"), f"--{name}: {what} without a note"


# a value each kind of flag accepts (the refusal comes before any value is used)
VALUES = {"ca-cert-paths": "CA", "client-cert-path": "CCERT", "client-key-path": "CKEY", "tls-cert-path": "CERT",
          "tls-key-path": "KEY", "worker-urls": "http://127.0.0.1:9", "policy": "round_robin", "host": "127.0.0.1",
          "port": "0", "log-level": "info", "health-check-endpoint": "/health", "api-key": "k",
          "runtime-worker-threads": "1", "max-concurrent-requests": "-1", "prefill": "http://127.0.0.1:9",
          "decode": "http://127.0.0.1:9", "prefill-policy": "round_robin", "decode-policy": "cache_aware",
          "log-dir": "LOGDIR", "prometheus-host": "127.0.0.1", "prometheus-port": "0", "backend": "vllm",
          "assignment-mode": "min_load"}
SWITCHES = {"mini-lb", "pd-disaggregation", "routing-key-override", "disable-circuit-breaker", "disable-health-check", "disable-retries", "enable-igw",
            "disable-tokenizer-autoload", "disable-audit-logging", "control-plane-audit-enabled", "log-json"}


def run_with(flag, pki):
    args = [f"--{flag}"]
    if flag not in SWITCHES:
        v = VALUES.get(flag, "1")
        v = {"CA": str(pki / "ca.pem"), "CERT": str(pki / "srv.pem"), "KEY": str(pki / "srv.key"),
             "CCERT": str(pki / "client.pem"), "CKEY": str(pki / "client.key"),
             "LOGDIR": str(pki / "logs")}.get(v, v)
        args.append(v)
    if flag in ("prefill", "decode"):  # sgl's PD workers come with its PD mode
        args.append("--pd-disaggregation")
    if flag in ("tls-cert-path", "tls-key-path"):
        args += ["--tls-key-path" if flag == "tls-cert-path" else "--tls-cert-path",
                 str(pki / ("srv.key" if flag == "tls-cert-path" else "srv.pem"))]
    if flag in ("client-cert-path", "client-key-path"):
        args += ["--client-key-path" if flag == "client-cert-path" else "--client-cert-path",
                 str(pki / ("client.key" if flag == "client-cert-path" else "client.pem"))]
    p = subprocess.Popen([GATEWAY, "--port", "0", *args] if flag != "port" else [GATEWAY, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
    finally:
        if p.poll() is None:
            p.terminate()
        p.wait(30)
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
    return line.startswith("infergate listening on "), p.returncode, err


def test_every_flag_starts_or_is_refused_by_name(pki):
    r = rows()
    for flag in SGL_FLAGS:
        what, note = r[flag]
        started, code, err = run_with(flag, pki)
        assert "unknown option" not in err, (flag, err)
        if what == "refused":
            assert not started and code == 2, (flag, code, err)
            assert f"--{flag}" in err and note.split(" (")[0] in err, (flag, err)
        else:
            assert started, (flag, code, err[-500:])
        if what == "accepted, no effect":
            assert f"--{flag}: accepted, nothing to do" in err, (flag, err[-500:])


def test_mapped_flags_do_what_infergate_does(procs):
    import time
    # --disable-health-check: a worker whose /health fails stays routable (checks would take it out in 0.3 s)
    w = procs.worker()
    gw = procs.gateway([w], "--disable-health-check", "--health-check-interval-secs", "0.1")
    httpx.post(w.url + "/mock/health?status=503")
    time.sleep(1.0)
    assert w.stats()["health_checks"] <= 1  # the discovery at start, no more
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200
    # the same without it: the checks take the worker out
    w2 = procs.worker()
    gw2 = procs.gateway([w2], "--health-check-interval-secs", "0.1", "--health-failure-threshold", "1")
    httpx.post(w2.url + "/mock/health?status=503")
    time.sleep(1.0)
    assert w2.stats()["health_checks"] >= 3
    assert httpx.post(gw2.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 503
    # --max-concurrent-requests -1 is sgl's unlimited, --policy consistent_hashing its name for consistent_hash
    gw3 = procs.gateway([w], "--max-concurrent-requests", "-1", "--policy", "consistent_hashing", "--disable-retries")
    r = httpx.post(gw3.base + "/v1/chat/completions", json=chat_body(max_tokens=1),
                   headers={"x-smg-routing-key": "user-1"}, timeout=30)
    assert r.status_code == 200


@pytest.mark.parametrize("policy", ["prefix_hash", "bucket", "passthrough"])
def test_sgl_policies_infergate_lacks_are_refused_by_name(policy):
    out = subprocess.run([GATEWAY, "--port", "0", "--policy", policy], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and f"--policy {policy} is a policy of sgl-model-gateway" in out.stderr


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v1/responses", "/v1/messages", "/v1/classify",
                                  "/v1/tokenize", "/v1/detokenize"])
def test_sgl_data_paths_are_routed_by_model(procs, path):
    a = procs.worker(worker_id="wa", model="model-a")
    b = procs.worker(worker_id="wb", model="model-b")
    gw = procs.gateway([a, b])
    for model, wid in (("model-a", "wa"), ("model-b", "wb")):
        r = httpx.post(gw.base + path, json={"model": model, "query": "q", "documents": ["d"], "input": "hi",
                                              "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["worker_id"] == wid
    r = httpx.post(gw.base + path, json={"model": "nope"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    text = httpx.get(gw.base + "/metrics").text
    assert 'route="model_api"' in text


def test_one_model_by_its_id(procs):
    w = procs.worker(model="Qwen/Qwen3-8B")
    gw = procs.gateway([w])
    for path in ("/v1/models/Qwen/Qwen3-8B", "/v1/models/Qwen%2FQwen3-8B"):
        r = httpx.get(gw.base + path, timeout=10)
        assert r.status_code == 200 and r.json()["id"] == "Qwen/Qwen3-8B" and r.json()["object"] == "model"
    r = httpx.get(gw.base + "/v1/models/other", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_retry_backoff_waits_before_the_next_worker(procs):
    import time
    ok = procs.worker(worker_id="ok")
    doomed = procs.worker(worker_id="doomed")
    args = ["--policy", "round_robin", "--health-check-interval-secs", "0"]
    quick = procs.gateway([doomed, ok], *args)
    slow = procs.gateway([doomed, ok], *args, "--retry-initial-backoff-ms", "60000", "--request-timeout-secs", "1.5")
    time.sleep(0.5)
    doomed.kill()
    # without a backoff the retry goes at once to the other worker
    codes = [httpx.post(quick.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code
             for _ in range(4)]
    assert codes == [200] * 4
    text = httpx.get(quick.base + "/metrics").text
    assert "infergate_retry_backoffs_total 0" in text
    # with a long one the request waits it out: its deadline passes first (never the other worker's 200)
    got = [httpx.post(slow.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30) for _ in range(2)]
    assert sorted(r.status_code for r in got) == [200, 504], [r.text for r in got]
    text = httpx.get(slow.base + "/metrics").text
    assert "infergate_retry_backoffs_total 1" in text


def test_queue_size_zero_is_no_queue_as_in_sgl(procs):
    """sgl-model-gateway's --queue-size 0: nothing waits; a request that finds
    every worker at its cap is a 429 at once. -1: no limit."""
    w = procs.worker("--token-interval-ms", "50")
    gw = procs.gateway([w], "--worker-max-inflight", "1", "--queue-size", "0")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=40)) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a dropped iterator would close the stream
            next(lines)  # the slot is taken
            r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30)
            assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
    # -1: unlimited (the default cap is 1024)
    gw2 = procs.gateway([w], "--queue-size", "-1")
    assert httpx.post(gw2.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200


def _held_streams(c, n):
    """n streamed chats that hold their slots until closed."""
    held = []
    for _ in range(n):
        cm = c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=200))
        r = cm.__enter__()
        assert r.status_code == 200
        lines = r.iter_lines()
        next(lines)
        held.append((cm, lines))
    return held


def test_rate_limit_is_sgls_token_bucket(procs):
    """--rate-limit-tokens-per-second as sgl-model-gateway: a bucket of
    --max-concurrent-requests tokens, one per request, given back when it ends,
    refilled at the rate. Rate 0: a plain cap; a positive rate admits more
    than the cap once time has refilled the bucket (sgl's meaning); without
    the flag infergate's cap is strict."""
    import time
    w = procs.worker("--token-interval-ms", "50")
    one = chat_body(max_tokens=1)
    capped = procs.gateway([w], "--max-concurrent-requests", "2", "--rate-limit-tokens-per-second", "0",
                           "--queue-size", "0")
    with httpx.Client(base_url=capped.base, timeout=30) as c:
        held = _held_streams(c, 2)
        r = httpx.post(capped.base + "/v1/chat/completions", json=one, timeout=30)
        assert r.status_code == 429, r.text
        held[0][0].__exit__(None, None, None)  # its token comes back
        deadline = time.monotonic() + 10
        while (r := httpx.post(capped.base + "/v1/chat/completions", json=one, timeout=30)).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 200
        held[1][0].__exit__(None, None, None)
    refilled = procs.gateway([w], "--max-concurrent-requests", "2", "--rate-limit-tokens-per-second", "4",
                             "--queue-size", "0")
    strict = procs.gateway([w], "--max-concurrent-requests", "2", "--queue-size", "0")
    for gw, more in ((refilled, True), (strict, False)):
        with httpx.Client(base_url=gw.base, timeout=30) as c:
            held = _held_streams(c, 2)
            deadline, got = time.monotonic() + 3, 429
            while got == 429 and time.monotonic() < deadline:
                got = httpx.post(gw.base + "/v1/chat/completions", json=one, timeout=30).status_code
                time.sleep(0.05)
            assert got == (200 if more else 429)
            for cm, _ in held:
                cm.__exit__(None, None, None)
    # queued requests wait for a token instead of a 429
    queued = procs.gateway([w], "--max-concurrent-requests", "1", "--rate-limit-tokens-per-second", "0")
    with httpx.Client(base_url=queued.base, timeout=30) as c:
        held = _held_streams(c, 1)
        import threading
        out = {}
        t = threading.Thread(target=lambda: out.setdefault(
            "r", httpx.post(queued.base + "/v1/chat/completions", json=one, timeout=30)))
        t.start()
        time.sleep(0.3)
        assert "r" not in out  # waiting
        held[0][0].__exit__(None, None, None)
        t.join(30)
        assert out["r"].status_code == 200


def test_rate_limit_without_a_cap_says_it_does_nothing(procs):
    w = procs.worker()
    gw = procs.gateway([w], "--rate-limit-tokens-per-second", "5")
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200
    gw.stop()
    assert "has no effect without --max-concurrent-requests" in gw.stderr


def test_the_api_key_guards_the_admin_routes_without_an_admin_key(procs):
    """sgl-model-gateway's rule: --api-key alone guards /workers too; and then
    a remote engine holding it may register (infergate's keyless admin API is
    loopback-only)."""
    w = procs.worker()
    gw = procs.gateway([w], "--api-key", "k")
    assert httpx.get(gw.base + "/workers", timeout=10).status_code == 401
    assert httpx.get(gw.base + "/workers", headers={"authorization": "Bearer nope"}, timeout=10).status_code == 403
    r = httpx.get(gw.base + "/workers", headers={"authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 200 and r.json()["workers"][0]["url"] == w.url
    # the data key is still only a client's on the data path: no admin pinning of sessions
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), headers={"authorization": "Bearer k"})
    assert r.status_code == 200


def test_log_json_and_log_dir(procs, tmp_path):
    import json
    w = procs.worker()
    d = tmp_path / "logs"
    gw = procs.gateway([w], "--log-json", "--log-level", "info", "--log-dir", str(d), threads=1)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": 'odd "name"\n\u00e9', "max_tokens": 1}, timeout=30)
    assert r.status_code == 404
    gw.stop()
    lines = (d / "infergate.log").read_text().splitlines()
    recs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"ts", "level"} <= set(x) for x in recs)
    access = [x for x in recs if x.get("event") == "access"]
    ok = next(x for x in access if x["status"] == 200)
    assert ok["method"] == "POST" and ok["path"] == "/v1/chat/completions" and ok["model"] == "mock-model"
    assert ok["worker"] == w.url and ok["bytes"] > 0 and ok["dur_ms"] >= 0
    assert any(x["status"] == 404 and x["model"].startswith('odd "name"') for x in access)
    assert any("listening on" in x.get("msg", "") for x in recs)


def test_prometheus_port_serves_the_scrape(procs):
    from conftest import free_port
    w = procs.worker()
    mport = free_port()
    gw = procs.gateway([w], "--prometheus-port", str(mport), "--api-key", "k")
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1),
                      headers={"authorization": "Bearer k"}, timeout=30).status_code == 200
    m = f"http://127.0.0.1:{mport}"
    r = httpx.get(m + "/metrics", headers={"authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 200 and 'infergate_requests_total{route="chat_completions"' in r.text
    assert httpx.get(m + "/metrics", timeout=10).status_code == 401  # the same key rule as on the main port
    r = httpx.post(m + "/v1/chat/completions", json=chat_body(), headers={"authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 404 and "--prometheus-port" in r.json()["error"]["message"]
    assert httpx.get(m + "/workers", headers={"authorization": "Bearer k"}, timeout=10).status_code == 404


@pytest.mark.parametrize("path", ["/get_model_info", "/get_server_info", "/health_generate"])
def test_sgl_info_endpoints_ask_a_worker(procs, path):
    a = procs.worker(worker_id="wa")
    gw = procs.gateway([a])
    r = httpx.get(gw.base + path, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["path"] == path and got["worker_id"] == "wa" and got["model_path"] == "mock-model"
    # no worker: sgl's no_workers 503
    gw2 = procs.gateway([])
    r = httpx.get(gw2.base + path, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_workers"


def test_engine_metrics_and_loads_ask_every_worker_at_once(procs):
    """sgl's /engine_metrics: every worker's Prometheus page as one, each
    sample labelled worker_addr, read back by the Prometheus client's own
    parser; /get_loads: the engines' load gauges per worker. A dead worker
    drops out of the first and counts as failed in the second."""
    from prometheus_client.parser import text_string_to_metric_families
    ws = [procs.worker("--token-interval-ms", "50", worker_id=f"e{i}") for i in range(3)]
    gw = procs.gateway(ws, "--policy", "round_robin")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=100)) as held:
            lines = held.iter_lines()  # kept: a dropped iterator would close the stream
            first = next(ln for ln in lines if ln.startswith("data: {"))
            busy = next(w for w in ws if w.worker_id == json.loads(first[6:])["worker_id"])
            r = httpx.get(gw.base + "/engine_metrics", timeout=30)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            fams = {f.name: f for f in text_string_to_metric_families(r.text)}
            running = {s.labels["worker_addr"]: s.value for s in fams["sglang:num_running_reqs"].samples}
            assert running == {w.url: (1 if w is busy else 0) for w in ws}
            ttft = fams["sglang:time_to_first_token_seconds"]
            assert ttft.type == "histogram"
            assert {s.labels["worker_addr"] for s in ttft.samples} == {w.url for w in ws}
            assert r.text.count("# TYPE sglang:num_running_reqs gauge") == 1
            loads = httpx.get(gw.base + "/get_loads", timeout=30).json()
            assert loads["total_workers"] == 3 and loads["successful"] == 3 and loads["failed"] == 0
            by = {entry["worker"]: entry for entry in loads["loads"]}
            assert by[busy.url]["details"]["num_running_reqs"] == 1 and by[busy.url]["load"] == 100
            assert by[busy.url]["inflight"] == 1
            assert all(by[w.url]["load"] == 0 for w in ws if w is not busy)
    dead = next(w for w in ws if w is not busy)
    dead.kill()
    loads = httpx.get(gw.base + "/get_loads", timeout=30).json()
    assert loads["failed"] == 1 and {e["worker"]: e["load"] for e in loads["loads"]}[dead.url] == -1
    r = httpx.get(gw.base + "/engine_metrics", timeout=30)
    assert r.status_code == 200 and dead.url not in r.text and busy.url in r.text
    assert httpx.post(gw.base + "/get_loads", timeout=30).status_code == 405
    r = httpx.get(procs.gateway([]).base + "/engine_metrics", timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_engine_metrics"


def test_engine_metrics_keep_the_metrics_key_and_get_loads_the_admin_rule(procs):
    w = procs.worker()
    gw = procs.gateway([w], "--metrics-api-key", "mk", "--admin-api-key", "ak")
    assert httpx.get(gw.base + "/engine_metrics", timeout=30).status_code == 401
    assert httpx.get(gw.base + "/engine_metrics", headers={"authorization": "Bearer mk"}, timeout=30).status_code == 200
    assert httpx.get(gw.base + "/get_loads", headers={"authorization": "Bearer mk"}, timeout=30).status_code == 403
    assert httpx.get(gw.base + "/get_loads", headers={"authorization": "Bearer ak"}, timeout=30).status_code == 200


def test_smg_metric_names_alongside(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    for _ in range(3):
        assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200
    text = httpx.get(gw.base + "/metrics").text
    assert 'smg_http_requests_total{method="POST",path="/v1/chat/completions"} 3' in text
    assert 'smg_http_request_duration_seconds_count{method="POST",path="/v1/chat/completions"} 3' in text
    assert ('smg_router_ttft_seconds_count{router_type="http",backend_type="regular",'
            'endpoint="/v1/chat/completions"} 3') in text
    assert f'smg_worker_health{{worker="{w.url}"}} 1' in text
    assert f'smg_worker_requests_active{{worker="{w.url}"}} 0' in text
    assert f'smg_worker_cb_state{{worker="{w.url}"}} 0' in text


def test_the_workers_api_in_sgl_shapes(procs):
    import urllib.parse
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1])
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        r = c.post("/workers", json={"url": w2.url})
        assert r.status_code == 202
        body = r.json()
        assert body["status"] == "accepted" and body["url"] == w2.url and body["location"] == f"/workers/{body['worker_id']}"
        assert c.post("/workers", json={"url": w2.url}).status_code == 409
        # caps by PUT/PATCH /workers/{id}
        r = c.put(body["location"], json={"max_inflight": 5})
        assert r.status_code == 200 and r.json()["worker"]["max_inflight"] == 5
        assert c.get(body["location"]).json()["max_inflight"] == 5
        # a worker by its URL, percent-encoded, as sgl addresses it
        enc = urllib.parse.quote(w2.url, safe="")
        assert c.get(f"/workers/{enc}").json()["url"] == w2.url
        assert c.delete(f"/workers/{enc}").status_code == 200
        assert [x["url"] for x in c.get("/workers").json()["workers"]] == [w1.url]
        assert c.delete(f"/workers/{enc}").status_code == 404
        # a prefill server registers with its role and bootstrap port (test_pd.py routes to it);
        # the same URL cannot be a regular worker too
        r = c.post("/workers", json={"url": w2.url, "worker_type": "prefill", "bootstrap_port": 8998})
        assert r.status_code == 202 and r.json()["worker"]["worker_type"] == "prefill", r.text
        assert r.json()["worker"]["bootstrap_port"] == 8998
        r = c.post("/workers", json={"url": w2.url, "worker_type": "regular"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "worker_in_other_role", r.text


def test_worker_startup_timeout_waits_for_the_workers(procs):
    import threading
    import time
    from conftest import MOCK, free_port
    port = free_port()
    late = []

    def start_late():
        time.sleep(1.5)
        late.append(subprocess.Popen([MOCK, "--port", str(port), "--worker-id", "late"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    t = threading.Thread(target=start_late)
    t.start()
    try:
        # the gateway is up only once its worker is: ready from its first answer
        gw = procs.gateway([f"http://127.0.0.1:{port}"], "--worker-startup-timeout-secs", "15",
                           "--health-check-interval-secs", "30")
        r = httpx.get(gw.base + "/readiness", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).json()[
            "worker_id"] == "late"
    finally:
        t.join()
        for p in late:
            p.terminate()
            p.wait(10)
    # a worker that never comes: exit 1, said why
    out = subprocess.run([GATEWAY, "--port", "0", "--worker-urls", f"http://127.0.0.1:{free_port()}",
                          "--worker-startup-timeout-secs", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--worker-startup-timeout-secs: 0 of 1 workers healthy" in out.stderr


def _from(addr, base):
    """A client whose connections come from this address (an engine's host)."""
    return httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address=addr))


@pytest.mark.parametrize("shape", ["add_worker", "workers", "workers_by_url"])
def test_engines_on_other_hosts_register_without_a_key(procs, shape):
    """slime's and miles' engine start-up and shutdown, in each sglang-router
    version's shape (sglang_engine.py): POST /add_worker?url= and POST
    /remove_worker?url= (<= 0.2.1 and their own routers), POST /workers
    {url, worker_type} and DELETE /workers/{quoted url} (< 0.3.0), or the id
    found in GET /workers (>= 0.3.0). No key: the engines' host range is in
    --admin-allow (127.0.0.2 stands in for 10.0.0.0/8); a peer outside it
    is refused."""
    from urllib.parse import quote
    gw = procs.gateway([], "--admin-allow", "127.0.0.2/32")
    eng = procs.worker(worker_id="engine0")
    with _from("127.0.0.2", gw.base) as c:
        if shape == "add_worker":
            r = c.post(f"/add_worker?url={eng.url}")
        else:
            r = c.post("/workers", json={"url": eng.url, "worker_type": "regular"})
        r.raise_for_status()
        assert wait_for(lambda: c.get("/readiness").json()["routable_workers"] == 1, 10)
        out = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        assert out.status_code == 200 and out.json()["worker_id"] == "engine0"
        if shape == "add_worker":
            r = c.post(f"/remove_worker?url={eng.url}")
        elif shape == "workers_by_url":
            r = c.delete(f"/workers/{quote(eng.url, safe='')}")
        else:
            wid = next(w["id"] for w in c.get("/workers").json()["workers"] if w["url"] == eng.url)
            r = c.delete(f"/workers/{wid}")
        r.raise_for_status()
        assert c.get("/workers").json()["workers"] == []
    with _from("127.0.0.1", gw.base) as c:
        r = c.post("/workers", json={"url": eng.url})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_not_allowed"
