"""The admin API, its auth, and the registry changing under live traffic."""
import concurrent.futures
import threading
import time

import httpx
import requests

from conftest import chat_body, sse_events


def test_add_list_get_remove_workers(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2", model="other-model")
    gw = procs.gateway([w1])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.get("/workers")
        assert r.status_code == 200
        (only,) = r.json()["workers"]
        assert only["url"] == w1.url and only["models"] == ["mock-model"]
        assert only["health"] == "healthy" and only["breaker"] == "closed" and only["inflight"] == 0
        # add: models are discovered from the worker
        r = c.post("/workers", json={"url": w2.url})
        assert r.status_code == 202 and r.json()["created"] is True  # sgl-model-gateway's 202
        assert r.json()["status"] == "accepted" and r.json()["location"] == "/workers/" + r.json()["worker_id"]
        wid = r.json()["worker"]["id"]
        assert r.json()["worker"]["models"] == ["other-model"]
        # a repeat is a conflict, as in sgl-model-gateway (the same URL, normalised)
        r = c.post("/workers", json={"url": w2.url + "/"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "worker_exists" and wid in r.json()["error"]["message"]
        # sgl's fields in the list
        listed = {x["url"]: x for x in c.get("/workers").json()["workers"]}
        assert listed[w2.url]["is_healthy"] is True and listed[w2.url]["worker_type"] == "regular"
        assert listed[w2.url]["load"] == 0
        assert c.get(f"/workers/{wid}").json()["url"] == w2.url
        assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == ["mock-model", "other-model"]
        r = c.post("/v1/chat/completions", json={"model": "other-model", "max_tokens": 1})
        assert r.status_code == 200 and r.json()["worker_id"] == "w2"
        # remove
        r = c.delete(f"/workers/{wid}")
        assert r.status_code == 200 and r.json()["removed"]["url"] == w2.url
        r = c.post("/v1/chat/completions", json={"model": "other-model"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert c.get(f"/workers/{wid}").status_code == 404
        assert c.delete(f"/workers/{wid}").status_code == 404


def test_sgl_style_endpoints(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1])
    s = requests.Session()
    r = s.post(gw.base + "/add_worker", params={"url": w2.url})
    assert r.status_code == 201
    assert sorted(s.get(gw.base + "/list_workers").json()["urls"]) == sorted([w1.url, w2.url])
    assert s.post(gw.base + "/remove_worker", params={"url": w2.url}).status_code == 200
    assert s.get(gw.base + "/list_workers").json()["urls"] == [w1.url]
    assert s.post(gw.base + "/remove_worker", params={"url": w2.url}).status_code == 404


def test_admin_errors_are_clear(procs):
    gw = procs.gateway([procs.worker()])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        cases = [
            (c.post("/workers", content=b"{not json"), 400, "invalid_json"),
            (c.post("/workers", json={"model_id": "x"}), 400, "missing_url"),
            (c.post("/workers", json={"url": "ftp://x:1"}), 400, "invalid_url"),
            (c.post("/workers", json={"url": "http://127.0.0.1:1/v1?k=1"}), 400, "invalid_url"),
            (c.post("/workers", json={"url": "http://127.0.0.1:1", "max_inflight": -3}), 400, "invalid_max_inflight"),
            (c.get("/workers/w999"), 404, "worker_not_found"),
            (c.delete("/workers/nonsense"), 404, "worker_not_found"),
            (c.post("/add_worker"), 400, "missing_url"),
            (c.put("/workers/w1"), 400, "invalid_max_inflight"),
            (c.post("/workers/w1"), 405, "method_not_allowed"),
        ]
        for r, status, code in cases:
            assert r.status_code == status, (r.request.url, r.text)
            assert r.json()["error"]["code"] == code, r.text


def test_admin_key(procs):
    gw = procs.gateway([procs.worker()], "--admin-api-key", "adm1n", "--api-key", "data-key")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.get("/workers")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_admin_key"
        r = c.get("/workers", headers={"authorization": "Bearer adm1m"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_admin_key"
        r = c.get("/workers", headers={"authorization": "Bearer adm1n-longer"})
        assert r.status_code == 403
        assert c.get("/workers", headers={"authorization": "Bearer adm1n"}).status_code == 200
        # the data key is not an admin key; the admin key is also a data key
        # (AReaL's human-in-the-loop session: it can do everything anyway)
        assert c.get("/workers", headers={"authorization": "Bearer data-key"}).status_code == 403
        assert c.post("/v1/chat/completions", json=chat_body(),
                      headers={"authorization": "Bearer adm1n"}).status_code == 200
        assert c.post("/v1/chat/completions", json=chat_body(),
                      headers={"authorization": "Bearer other"}).status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"authorization": "Bearer data-key"}).status_code == 200


def test_churn_under_load_fails_no_request(procs):
    """Hundreds of registry changes per second while clients stream: live
    workers being added and removed lose nothing (removal drains)."""
    stable = [procs.worker("--token-interval-ms", "2", worker_id=f"s{i}") for i in range(2)]
    churn = [procs.worker("--token-interval-ms", "2", worker_id=f"c{i}") for i in range(4)]
    gw = procs.gateway(stable, "--health-check-interval-secs", "0", "--policy", "round_robin")
    stop = threading.Event()
    changes = [0]

    def churner():
        i = 0
        with httpx.Client(base_url=gw.base, timeout=10) as c:
            while not stop.is_set():
                w = churn[i % len(churn)]
                r = c.post("/workers", json={"url": w.url, "model_id": "mock-model"})
                assert r.status_code == 202, r.text
                wid = r.json()["worker"]["id"]
                assert c.delete(f"/workers/{wid}").status_code == 200
                changes[0] += 2
                i += 1

    def client(n):
        done = 0
        with httpx.Client(base_url=gw.base, timeout=20) as c:
            while not stop.is_set():
                if n % 2:
                    r = c.post("/v1/chat/completions", json=chat_body(max_tokens=3))
                    assert r.status_code == 200, r.text
                    assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
                else:
                    with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=10, stream=True)) as s:
                        assert s.status_code == 200
                        events = sse_events(s.iter_lines())
                    assert events[-1] == "[DONE]" and len(events) == 12, events
                done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(5) as ex:
        ch = ex.submit(churner)
        clients = [ex.submit(client, n) for n in range(4)]
        time.sleep(3)
        stop.set()
        ch.result()
        served = sum(f.result() for f in clients)
    assert changes[0] >= 300, changes  # >= 100 changes per second
    completed = sum(w.stats()["completed"] for w in stable + churn)
    assert completed == served
    assert sum(w.stats()["completed"] for w in churn) > 0  # the churning workers did serve
    assert all(w.stats()["aborted"] == 0 for w in stable + churn)
    workers = httpx.get(gw.base + "/workers").json()["workers"]
    assert sorted(w["url"] for w in workers) == sorted(w.url for w in stable)
