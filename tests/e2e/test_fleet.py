"""RL fleet control: concurrent broadcasts, gateway-side pause, weight versions."""
import json
import threading
import time

import httpx

from conftest import chat_body, wait_for


def metric(gw, name):
    for line in httpx.get(gw.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_broadcast_reaches_every_worker_at_once(procs):
    """16 workers that each take 300 ms per control call: one after another
    that is 4.8 s; all at once the broadcast takes one worker's time."""
    ws = [procs.worker("--control-delay-ms", "300", worker_id=f"w{i}") for i in range(16)]
    gw = procs.gateway(ws)
    t0 = time.time()
    r = httpx.post(gw.base + "/pause_generation", timeout=30)
    elapsed = time.time() - t0
    assert r.status_code == 200 and r.json()["ok"] is True
    results = r.json()["results"]
    assert len(results) == 16 and all(x["ok"] and x["status"] == 200 and x["error"] is None for x in results)
    assert {x["url"] for x in results} == {w.url for w in ws}
    assert elapsed < 3.0, elapsed  # a sequential fan-out could not be under 4.8 s
    assert all(w.stats()["paused"] == 1 for w in ws)
    r = httpx.post(gw.base + "/continue_generation", timeout=30)
    assert r.status_code == 200 and all(w.stats()["paused"] == 0 for w in ws)
    for path in ("/flush_cache", "/release_memory_occupation", "/resume_memory_occupation"):
        assert httpx.post(gw.base + path, timeout=30).json()["ok"] is True
    assert all(w.stats()["flushes"] == 1 for w in ws)


def test_pause_holds_new_requests_in_the_queue_until_continue(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w])
    assert httpx.post(gw.base + "/pause_generation").status_code == 200
    got = []
    t = threading.Thread(target=lambda: got.append(
        httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)))
    t.start()
    assert wait_for(lambda: metric(gw, "infergate_queue_depth") == 1)
    time.sleep(0.3)
    assert w.stats()["completed"] == 0  # not forwarded while paused
    assert httpx.post(gw.base + "/continue_generation").status_code == 200
    t.join(30)
    assert got[0].status_code == 200 and got[0].json()["choices"][0]["message"]["content"] == "tok0 tok1 "


def test_pause_still_honours_the_queue_timeout(procs):
    gw = procs.gateway([procs.worker()], "--queue-timeout-secs", "0.5")
    httpx.post(gw.base + "/pause_generation")
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_timeout"


def test_pause_by_model_and_by_worker(procs):
    a = procs.worker(worker_id="wa", model="model-a")
    b = procs.worker(worker_id="wb", model="model-b")
    b2 = procs.worker(worker_id="wb2", model="model-b")
    gw = procs.gateway([a, b, b2], "--policy", "round_robin")
    r = httpx.post(gw.base + "/pause_generation", json={"model": "model-a"})
    assert r.status_code == 200 and [x["url"] for x in r.json()["results"]] == [a.url]
    got = []
    t = threading.Thread(target=lambda: got.append(httpx.post(
        gw.base + "/v1/chat/completions", json={"model": "model-a", "max_tokens": 1}, timeout=30)))
    t.start()
    assert wait_for(lambda: metric(gw, "infergate_queue_depth") == 1)
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "model-b", "max_tokens": 1})
    assert r.status_code == 200  # another model is not held
    httpx.post(gw.base + "/continue_generation", json={"model": "model-a"})
    t.join(30)
    assert got[0].status_code == 200 and got[0].json()["worker_id"] == "wa"
    # one worker alone: it leaves routing, the other takes its model
    wid = next(x["id"] for x in httpx.get(gw.base + "/workers").json()["workers"] if x["url"] == b.url)
    assert httpx.post(gw.base + f"/pause_generation/{wid}").json()["results"][0]["url"] == b.url
    ids = {httpx.post(gw.base + "/v1/chat/completions", json={"model": "model-b", "max_tokens": 1}).json()["worker_id"]
           for _ in range(6)}
    assert ids == {"wb2"}
    httpx.post(gw.base + f"/continue_generation/{wid}")
    ids = {httpx.post(gw.base + "/v1/chat/completions", json={"model": "model-b", "max_tokens": 1}).json()["worker_id"]
           for _ in range(6)}
    assert ids == {"wb", "wb2"}
    assert httpx.post(gw.base + "/pause_generation/w999").status_code == 404


def test_weight_versions_tag_every_response(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--exclude-stale-workers")
    r = httpx.post(gw.base + "/set_version", json={"version": 5})
    assert r.status_code == 200 and r.json()["fleet_version"] == 5
    assert all(w.stats()["version"] == 5 for w in (w1, w2))
    with httpx.Client(base_url=gw.base) as c:
        for _ in range(6):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).headers["x-weight-version"] == "5"
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=2, stream=True)) as s:
            assert s.headers["x-weight-version"] == "5"
    versions = {x["url"]: x["version"] for x in httpx.get(gw.base + "/get_version").json()["results"]}
    assert versions == {w1.url: 5, w2.url: 5}
    # a worker joining on old weights is kept out until it reports the fleet's version
    w3 = procs.worker(worker_id="w3")
    wid = httpx.post(gw.base + "/workers", json={"url": w3.url}).json()["worker"]["id"]
    ids = {httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(12)}
    assert "w3" not in ids
    # one worker's set_version/get_version answer with the worker's own reply, like AReaL's gateway
    r = httpx.post(gw.base + f"/set_version/{wid}", json={"version": 5})
    assert r.status_code == 200 and r.json()["version"] == 5 and r.json()["worker_id"] == "w3"
    r = httpx.get(gw.base + f"/get_version/{wid}")
    assert r.status_code == 200 and r.json()["version"] == 5
    ids = {httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(20)}
    assert "w3" in ids


def test_broadcast_partial_failure_is_reported_per_worker(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--broadcast-timeout-secs", "2")
    w2.kill()
    r = httpx.post(gw.base + "/set_version", json={"version": 3}, timeout=10)
    assert r.status_code == 502 and r.json()["ok"] is False
    res = {x["url"]: x for x in r.json()["results"]}
    assert res[w1.url]["ok"] is True and res[w1.url]["version"] == 3
    assert res[w2.url]["ok"] is False and res[w2.url]["status"] == 0 and res[w2.url]["error"]


def test_broadcast_errors_and_auth(procs):
    gw = procs.gateway([procs.worker()], "--admin-api-key", "k")
    assert httpx.post(gw.base + "/pause_generation").status_code == 401
    assert httpx.post(gw.base + "/pause_generation", headers={"authorization": "Bearer x"}).status_code == 403
    h = {"authorization": "Bearer k"}
    assert httpx.post(gw.base + "/set_version", headers=h).json()["error"]["code"] == "missing_version"
    r = httpx.post(gw.base + "/set_version", headers=h, json={"version": "seven"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_version"
    assert httpx.get(gw.base + "/pause_generation", headers=h).status_code == 405


def _stream_through_pause(gw, w):
    """A stream that is running when the fleet pauses: what reaches the client."""
    body = chat_body(stream=True, max_tokens=30)
    events = []
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", gw.base + "/v1/chat/completions", json=body,
                      headers={"x-mock-token-interval-ms": "20"}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    if len(events) == 3:
                        assert httpx.post(gw.base + "/pause_generation").json()["ok"] is True
                        break
            for line in map(str.strip, lines):
                if line.startswith("data: "):
                    events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
    return events


def test_running_streams_follow_the_workers_pause_mode(procs):
    """infergate leaves running requests to the worker: a holding worker
    finishes them, an aborting one ends them with finish_reason "abort";
    either way the client gets a well-formed stream ending in [DONE]."""
    for mode, finish in (("hold", "stop"), ("abort", "abort")):
        w = procs.worker("--pause-mode", mode, worker_id=mode)
        gw = procs.gateway([w])
        events = _stream_through_pause(gw, w)
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == finish
        tokens = [e for e in events[:-1] if e["choices"][0]["finish_reason"] is None]
        if mode == "hold":
            assert len(tokens) == 30  # ran to the end while paused
        else:
            assert 3 <= len(tokens) < 30  # cut by the worker's pause
        httpx.post(gw.base + "/continue_generation")
