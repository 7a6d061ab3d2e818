"""Admission control: worker caps, the gateway cap, and the queue."""
import asyncio
import socket
import threading

import aiohttp
import httpx

from conftest import chat_body, sse_events, wait_for


def stream_all(gw, n, max_tokens):
    """n concurrent streaming chat requests; each one's SSE data payloads (asserting 200)."""
    async def main():
        async with aiohttp.ClientSession(gw.base) as s:
            async def stream():
                async with s.post("/v1/chat/completions", json=chat_body(max_tokens=max_tokens, stream=True)) as r:
                    assert r.status == 200, await r.text()
                    events = []
                    async for line in r.content:
                        events += sse_events([line])
                    return events
            return await asyncio.gather(*[stream() for _ in range(n)])
    return asyncio.run(main())


def metric(gw, name):
    for line in httpx.get(gw.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_64_streams_on_8_workers_capped_at_4(procs):
    """Twice the fleet's capacity arrives at once: nothing is refused, and no
    worker ever sees more than its cap (the mock answers 503 above it)."""
    ws = [procs.worker("--max-inflight", "4", "--token-interval-ms", "10", worker_id=f"w{i}") for i in range(8)]
    gw = procs.gateway(ws, "--worker-max-inflight", "4")

    results = stream_all(gw, 64, max_tokens=10)
    assert all(e[-1] == "[DONE]" and len(e) == 12 for e in results)
    stats = [w.stats() for w in ws]
    assert sum(s["completed"] for s in stats) == 64
    assert all(s["rejected"] == 0 and s["max_inflight_seen"] <= 4 for s in stats), stats
    assert metric(gw, "infergate_queue_wait_seconds_count") >= 1  # some had to wait


def _hold(gw, tokens=1000):
    """A stream that occupies a slot until its client closes."""
    c = httpx.Client(base_url=gw.base, timeout=30)
    s = c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=tokens, stream=True))
    r = s.__enter__()
    assert r.status_code == 200
    return c, s


def test_queue_full_is_429_with_retry_after(procs):
    w = procs.worker("--token-interval-ms", "50", worker_id="w1")
    gw = procs.gateway([w], "--worker-max-inflight", "1", "--queue-size", "2")
    c, s = _hold(gw)
    waiting = []

    def queued():
        waiting.append(httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30))

    threads = [threading.Thread(target=queued) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_for(lambda: metric(gw, "infergate_queue_depth") == 2)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1))
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
    s.__exit__(None, None, None)  # free the slot: the queued requests go through, in order
    c.close()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in waiting] == [200, 200]
    assert metric(gw, "infergate_rejected_queue_full_total") == 1
    assert metric(gw, "infergate_queue_depth") == 0


def test_queue_timeout_is_503(procs):
    w = procs.worker("--token-interval-ms", "50", worker_id="w1")
    gw = procs.gateway([w], "--worker-max-inflight", "1", "--queue-timeout-secs", "0.5")
    c, s = _hold(gw)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_timeout"
    assert metric(gw, "infergate_queue_timeouts_total") == 1
    s.__exit__(None, None, None)
    c.close()


def test_queued_client_that_leaves_sends_nothing_upstream(procs):
    w = procs.worker("--token-interval-ms", "50", worker_id="w1")
    gw = procs.gateway([w], "--worker-max-inflight", "1")
    c, s = _hold(gw)
    sock = socket.create_connection(("127.0.0.1", gw.port))
    body = b'{"model":"mock-model","max_tokens":1}'
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert wait_for(lambda: metric(gw, "infergate_queue_depth") == 1)
    sock.close()
    assert wait_for(lambda: metric(gw, "infergate_queue_depth") == 0)
    s.__exit__(None, None, None)
    c.close()
    assert wait_for(lambda: w.stats()["inflight"] == 0)
    st = w.stats()
    assert st["completed"] == 0 and st["aborted"] == 1  # only the holder, aborted by its client
    # the worker saw: discovery, the holder, and these /stats reads; never the queued request
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1))
    assert r.status_code == 200 and w.stats()["completed"] == 1


def test_gateway_wide_cap(procs):
    """--max-concurrent-requests bounds the whole gateway. One worker with
    three processes shares one in-flight counter, so its peak is exact."""
    w = procs.worker("--processes", "3", "--token-interval-ms", "20", worker_id="w1")
    gw = procs.gateway([w], "--max-concurrent-requests", "2")

    async def main():
        async with aiohttp.ClientSession(gw.base) as s:
            async def one():
                async with s.post("/v1/chat/completions", json=chat_body(max_tokens=10)) as r:
                    return r.status
            return await asyncio.gather(*[one() for _ in range(12)])

    assert asyncio.run(main()) == [200] * 12
    assert w.stats()["max_inflight_seen"] == 2


def test_cap_changes_live_through_the_admin_api(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w])
    assert httpx.get(gw.base + "/workers").json()["workers"][0]["max_inflight"] == 0
    wid = httpx.get(gw.base + "/workers").json()["workers"][0]["id"]
    r = httpx.patch(gw.base + f"/workers/{wid}", json={"max_inflight": 3})  # sgl-model-gateway's way
    assert r.status_code == 200 and r.json()["worker"]["max_inflight"] == 3
    assert httpx.get(gw.base + "/workers").json()["workers"][0]["max_inflight"] == 3


def test_worker_503_for_overload_requeues_and_teaches_a_cap(procs):
    """Caps unknown to the gateway: the workers' own 503s are not passed on
    and not counted as failures; the requests wait and get through."""
    ws = [procs.worker("--max-inflight", "2", "--token-interval-ms", "20", worker_id=f"w{i}") for i in range(2)]
    gw = procs.gateway(ws, "--cb-failure-threshold", "2")

    results = stream_all(gw, 16, max_tokens=5)
    assert all(e[-1] == "[DONE]" for e in results)
    stats = [w.stats() for w in ws]
    rejected = sum(s["rejected"] for s in stats)
    assert rejected >= 1  # they did say 503 ...
    assert sum(s["completed"] for s in stats) - rejected == 16  # ... and every request was served once
    assert metric(gw, "infergate_requeued_overload_total") >= 1
    workers = httpx.get(gw.base + "/workers").json()["workers"]
    assert all(w["breaker"] == "closed" for w in workers)  # busy is not broken
    assert any(w["effective_max_inflight"] in (1, 2, 3) for w in workers)


def test_overload_answer_passes_through_after_repeated_requeues(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w])
    httpx.post(w.url + "/mock/fail?status=503")
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "503"  # the worker's own answer
    assert metric(gw, "infergate_requeued_overload_total") == 5
