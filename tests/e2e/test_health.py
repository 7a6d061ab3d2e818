"""Active health checks, the circuit breaker, and workers dying and coming back."""
import threading

import httpx
import pytest

from conftest import chat_body, sse_events, wait_for

FAST_HEALTH = ("--health-check-interval-secs", "0.2", "--health-check-timeout-secs", "1",
               "--health-failure-threshold", "2", "--health-success-threshold", "2")


def worker_state(gw, url):
    for w in httpx.get(gw.base + "/workers", timeout=5).json()["workers"]:
        if w["url"] == url:
            return w
    return None


def test_unhealthy_worker_leaves_and_returns(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], *FAST_HEALTH, "--policy", "round_robin")
    httpx.post(w2.url + "/mock/health?status=503")
    assert wait_for(lambda: worker_state(gw, w2.url)["health"] == "unhealthy")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(20)}
        assert ids == {"w1"}
        assert c.get("/readiness").status_code == 200
        httpx.post(w1.url + "/mock/health?status=500")
        assert wait_for(lambda: worker_state(gw, w1.url)["health"] == "unhealthy")
        r = c.get("/readiness")
        assert r.status_code == 503 and r.json()["routable_workers"] == 0
        r = c.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_workers"
        httpx.post(w1.url + "/mock/health?status=200")
        httpx.post(w2.url + "/mock/health?status=200")
        assert wait_for(lambda: all(w["health"] == "healthy" for w in c.get("/workers").json()["workers"]))
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(20)}
        assert ids == {"w1", "w2"}


def test_health_checks_run_concurrently(procs):
    """Ten workers whose /health takes 1 s each: checked one after another a
    round would take 10 s; all at once, each is checked about every second."""
    ws = [procs.worker(worker_id=f"w{i}") for i in range(10)]
    for w in ws:
        httpx.post(w.url + "/mock/health?status=200&delay_ms=1000")
    gw = procs.gateway(ws, "--health-check-interval-secs", "0.3", "--health-check-timeout-secs", "5")
    assert wait_for(lambda: all(w.stats()["health_checks"] >= 3 for w in ws), timeout=8)
    # the checks reuse their connection: over a quiet second more checks arrive,
    # but no new connection besides the one of this /stats read
    import time
    before = [w.stats() for w in ws]
    time.sleep(1.5)
    after = [w.stats() for w in ws]
    for b, a in zip(before, after):
        assert a["health_checks"] > b["health_checks"]
        assert a["connections"] - b["connections"] == 1
    assert gw.stop() == 0


def test_killed_worker_fails_only_its_streams_and_comes_back(procs):
    w1 = procs.worker("--token-interval-ms", "30", worker_id="w1")
    w2 = procs.worker("--token-interval-ms", "30", worker_id="w2")
    gw = procs.gateway([w1, w2], *FAST_HEALTH, "--policy", "round_robin")
    results = []

    def stream():
        try:
            with httpx.Client(base_url=gw.base, timeout=20) as c:
                with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=40, stream=True)) as s:
                    events = sse_events(s.iter_lines())
                    if not events:  # cut before its first event
                        results.append(("cut", "no events"))
                        return
                    results.append((json.loads(events[0])["worker_id"], events[-1] == "[DONE]"))
        except httpx.HTTPError as e:  # a cut stream: the transfer ends early
            results.append(("cut", str(type(e).__name__)))

    import json
    threads = [threading.Thread(target=stream) for _ in range(6)]
    for t in threads:
        t.start()
    assert wait_for(lambda: w2.stats()["inflight"] >= 1 and w1.stats()["inflight"] >= 1)
    port = w2.port
    w2.kill()
    for t in threads:
        t.join(30)
    finished_on_w1 = [r for r in results if r[0] == "w1"]
    assert finished_on_w1 and all(ok for _, ok in finished_on_w1)
    # streams on w2 ended early and cleanly (no hang): either cut or without [DONE]
    assert len(results) == 6
    assert any(r[0] == "cut" or (r[0] == "w2" and not r[1]) for r in results)
    assert wait_for(lambda: worker_state(gw, f"http://127.0.0.1:{port}")["health"] == "unhealthy")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(10):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
            assert r.status_code == 200 and r.json()["worker_id"] == "w1"
        # restarted on the same port, it comes back
        w2b = procs.worker("--port", str(port), worker_id="w2b")
        assert wait_for(lambda: worker_state(gw, w2b.url)["health"] == "healthy")
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(10)}
        assert "w2b" in ids


@pytest.mark.parametrize("status,flags", [(502, []), (504, []), (500, ["--cb-failure-statuses", "500,502"])])
def test_breaker_opens_on_failure_statuses_and_closes_after_probe(procs, status, flags):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--health-check-interval-secs", "0", "--policy", "round_robin",
                       "--cb-failure-threshold", "3", "--cb-timeout-duration-secs", "0.5",
                       "--cb-success-threshold", "1", *flags)
    httpx.post(w2.url + f"/mock/fail?status={status}")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        statuses = [c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code for _ in range(30)]
        assert statuses.count(status) == 3  # passed through until the circuit opened
        assert statuses.count(200) == 27
        assert worker_state(gw, w2.url)["breaker"] in ("open", "half_open")
        httpx.post(w2.url + "/mock/fail?status=0")
        assert wait_for(lambda: worker_state(gw, w2.url)["breaker"] == "half_open")

        def w2_serves():
            return c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] == "w2"
        assert wait_for(w2_serves)
        assert wait_for(lambda: worker_state(gw, w2.url)["breaker"] == "closed")


def test_client_caused_500s_do_not_eject_healthy_workers(procs):
    """One client's bad requests make every worker answer 500: that says
    nothing about the workers, so no circuit opens (sglang#25811)."""
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--health-check-interval-secs", "0", "--policy", "round_robin",
                       "--cb-failure-threshold", "3")
    for w in (w1, w2):
        httpx.post(w.url + "/mock/fail?status=500")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        statuses = [c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code for _ in range(30)]
        assert statuses == [500] * 30
        for w in (w1, w2):
            st = worker_state(gw, w.url)
            assert st["breaker"] == "closed" and st["responses_5xx"] == 15, st
            httpx.post(w.url + "/mock/fail?status=0")
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_overloaded_503s_do_not_trip_the_breaker(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--health-check-interval-secs", "0", "--policy", "round_robin",
                       "--cb-failure-threshold", "3")
    httpx.post(w2.url + "/mock/fail?status=503")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        statuses = [c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code for _ in range(40)]
    # w2's 503s send requests back to the queue; w1 serves them
    assert statuses == [200] * 40
    st = worker_state(gw, w2.url)
    assert st["breaker"] == "closed" and st["failures"] == 0 and st["responses_5xx"] >= 20


def test_connect_failures_open_the_breaker_and_stop_the_retries(procs):
    w1 = procs.worker(worker_id="w1")
    gw = procs.gateway([w1], "--health-check-interval-secs", "0", "--cb-failure-threshold", "2",
                       "--cb-timeout-duration-secs", "60")
    dead = "http://127.0.0.1:9"
    assert httpx.post(gw.base + "/workers", json={"url": dead, "model_id": "mock-model"}).status_code == 202
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(20):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    st = worker_state(gw, dead)
    assert st["breaker"] == "open" and st["connect_failures"] == 2  # then no more attempts
