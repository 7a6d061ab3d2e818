"""Dead workers: traffic moves to the living, clean errors when none is left."""
import httpx

from conftest import chat_body


def test_killed_worker_traffic_moves_to_the_others(procs):
    w1, w2, w3 = (procs.worker(worker_id=f"w{i}") for i in (1, 2, 3))
    gw = procs.gateway([w1, w2, w3], "--policy", "round_robin")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        before = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"]
                  for _ in range(30)}
        assert before == {"w1", "w2", "w3"}
        w2.kill()
        after = []
        for _ in range(60):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
            assert r.status_code == 200, r.text
            after.append(r.json()["worker_id"])
    assert set(after) == {"w1", "w3"}


def test_all_workers_dead_is_502(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2])
    w1.kill()
    w2.kill()
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "worker_unreachable"
    assert r.headers["x-request-id"]


def test_no_workers_is_503(procs):
    gw = procs.gateway([])
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert r.status_code == 503
    assert r.json()["error"] == {"message": "no worker is available", "type": "service_unavailable",
                                 "code": "no_workers"}
    assert httpx.get(gw.base + "/readiness").status_code == 503


def test_worker_unreachable_at_start_gets_no_traffic(procs):
    """A worker that cannot be reached at start is known down: no request is
    sent to it until a health check passes."""
    w = procs.worker(worker_id="w1", model="m-a")
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    gw = procs.gateway([w, dead])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        # only the unknown worker might serve m-b, and it is down: 503, not a doomed try
        r = c.post("/v1/chat/completions", json={"model": "m-b", "messages": []})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_workers"
        for _ in range(10):
            r = c.post("/v1/chat/completions", json={"model": "m-a", "messages": [], "max_tokens": 1})
            assert r.status_code == 200 and r.json()["worker_id"] == "w1"
    assert w.stats()["completed"] == 10


def test_models_route_to_the_workers_that_serve_them(procs):
    wa = procs.worker(worker_id="wa", model="model-a")
    wb = procs.worker(worker_id="wb", model="model-b")
    gw = procs.gateway([wa, wb])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(10):
            assert c.post("/v1/chat/completions", json={"model": "model-a", "max_tokens": 1}).json()["worker_id"] == "wa"
            assert c.post("/v1/chat/completions", json={"model": "model-b", "max_tokens": 1}).json()["worker_id"] == "wb"
        ids = {c.post("/v1/chat/completions", json={"max_tokens": 1}).json()["worker_id"] for _ in range(40)}
        assert ids == {"wa", "wb"}  # no model: any worker
        assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == ["model-a", "model-b"]
        r = c.post("/v1/chat/completions", json={"model": "model-c"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def _blackhole():
    """A loopback listener that never accepts, its backlog full: connects hang."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(s.getsockname())
        fillers.append(f)
    return s, fillers


def test_connect_timeout_moves_on_then_504(procs):
    hole, fillers = _blackhole()
    try:
        url = "http://127.0.0.1:%d" % hole.getsockname()[1]
        w = procs.worker(worker_id="w1")
        # added by the admin API with its model, so no discovery marks it down first
        args = ("--connect-timeout-secs", "0.3", "--health-check-interval-secs", "0",
                "--policy", "round_robin")
        gw = procs.gateway([w], *args)
        r = httpx.post(gw.base + "/workers", json={"url": url, "model_id": "mock-model"})
        assert r.status_code == 202
        with httpx.Client(base_url=gw.base, timeout=10) as c:
            for _ in range(4):
                r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
                assert r.status_code == 200 and r.json()["worker_id"] == "w1"
        gw2 = procs.gateway([], *args)
        assert httpx.post(gw2.base + "/workers", json={"url": url, "model_id": "mock-model"}).status_code == 202
        r = httpx.post(gw2.base + "/v1/chat/completions", json=chat_body(), timeout=10)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_connect_timeout"
    finally:
        for f in fillers:
            f.close()
        hole.close()
