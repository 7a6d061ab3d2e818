"""The mock's prefill and decode roles (issue 17's test fleet), through real
HTTP clients and no gateway: they must check what a real SGLang engine in
PD mode checks, or the gateway's PD routing could pass against them while
failing against the real thing. A decode generates only once the prefill
named in the request has its room; requests without well-formed bootstrap
fields are refused; a decode whose prefill never saw the room fails like a
KV-transfer timeout."""
import threading
import time

import httpx

from conftest import free_port


def pd_pair(procs, kv_timeout_ms=2000):
    bp = free_port()
    p = procs.worker("--role", "prefill", "--bootstrap-port", str(bp), worker_id="p0")
    d = procs.worker("--role", "decode", "--kv-timeout-ms", str(kv_timeout_ms), worker_id="d0")
    return p, d, bp


def gen(room, bp, **kw):
    return {"text": "hello", "sampling_params": {"max_new_tokens": 3}, "bootstrap_host": "127.0.0.1",
            "bootstrap_port": bp, "bootstrap_room": room, **kw}


def both(p, d, body, prefill_delay=0.0):
    out = {}

    def send(name, url, delay):
        time.sleep(delay)
        out[name] = httpx.post(url + "/generate", json=body, timeout=30)
    ts = [threading.Thread(target=send, args=("p", p.url, prefill_delay)),
          threading.Thread(target=send, args=("d", d.url, 0))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out["p"], out["d"]


def test_a_decode_generates_once_its_prefill_has_the_room(procs):
    p, d, bp = pd_pair(procs)
    rp, rd = both(p, d, gen(12345, bp))
    assert rp.status_code == 200 and rd.status_code == 200, (rp.text, rd.text)
    assert rd.json()["worker_id"] == "d0"
    # the decode may come first: it waits for the prefill
    rp, rd = both(p, d, gen(777, bp), prefill_delay=0.3)
    assert rp.status_code == 200 and rd.status_code == 200, rd.text
    # a batch: one room per prompt
    body = gen([1, 2], bp, text=["a", "b"])
    body["bootstrap_host"] = ["127.0.0.1"] * 2
    body["bootstrap_port"] = [bp, bp]
    rp, rd = both(p, d, body)
    assert rp.status_code == 200 and rd.status_code == 200, (rp.text, rd.text)


def test_a_decode_without_its_prefill_fails_like_a_kv_timeout(procs):
    p, d, bp = pd_pair(procs, kv_timeout_ms=300)
    r = httpx.post(d.url + "/generate", json=gen(4242, bp), timeout=30)
    assert r.status_code == 500 and "KV transfer failed" in r.text
    dead = free_port()
    r = httpx.post(d.url + "/generate", json=gen(4243, dead), timeout=30)
    assert r.status_code == 500 and "KV transfer failed" in r.text
    assert httpx.post(d.url + "/generate", json={"text": "hi"}, timeout=30).status_code == 400
    # the client leaves while the decode waits: the wait is dropped, the decode serves on
    for _ in range(3):
        try:
            httpx.post(d.url + "/generate", json=gen(5151, bp), timeout=0.1)
        except httpx.TimeoutException:
            pass
    time.sleep(0.5)
    rp, rd = both(p, d, gen(5152, bp))
    assert rp.status_code == 200 and rd.status_code == 200


def test_requests_the_engines_would_refuse(procs):
    p, d, bp = pd_pair(procs)
    bad = [{"text": "hi"},                                   # no bootstrap fields at all
           gen("12", bp),                                    # the room is not an integer
           gen(-1, bp),
           gen(5, bp + 1),                                   # another prefill's port
           dict(gen(5, bp), bootstrap_host="10.9.9.9"),     # another prefill's host
           gen([1], bp, text=["a", "b"])]                    # a batch of 2 with one room
    for body in bad:
        r = httpx.post(p.url + "/generate", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
    assert httpx.post(d.url + "/generate", json=gen("x", bp), timeout=30).status_code == 400
    # chat completions take the same fields
    r = httpx.post(p.url + "/v1/chat/completions", json={"model": "mock-model", "messages": [
        {"role": "user", "content": "hi"}], "bootstrap_host": "127.0.0.1", "bootstrap_port": bp,
        "bootstrap_room": 9}, timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.get(f"http://127.0.0.1:{bp}/bootstrap/room/9", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{bp}/bootstrap/room/10", timeout=10).status_code == 404
