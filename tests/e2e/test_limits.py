"""Limits and timeouts: a head that trickles in (slowloris) or a body that
stalls gets 408 and a close; beyond --max-client-connections new connections
get 503 and a close while the open ones keep working; the open-file limit is
raised at start and reported."""
import asyncio
import json
import socket
import time

import httpx
import pytest

from conftest import SANITIZED, chat_body, rss_kb, wait_for


def raw(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s


def read_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not d:
            break
        out += d
    return out


def test_slowloris_head_gets_408_and_close(procs):
    gw = procs.gateway([procs.worker()], "--client-header-timeout-secs", "1")
    s = raw(gw.port)
    t0 = time.time()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
    for _ in range(20):  # a header line every 0.2 s, never the end of the head
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
        time.sleep(0.2)
        if time.time() - t0 > 3:
            break
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 408 "), out[:100]
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert time.time() - t0 < 5
    # the gateway is fine
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_stalled_body_gets_408(procs):
    gw = procs.gateway([procs.worker()], "--client-body-timeout-secs", "1")
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{\"model\":")
    t0 = time.time()
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 408 "), out[:100]
    assert 0.8 < time.time() - t0 < 4


def test_idle_keep_alive_connection_is_closed(procs):
    gw = procs.gateway([procs.worker()], "--client-idle-timeout-secs", "1")
    s = raw(gw.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    t0 = time.time()
    out = read_all(s)  # the answer, then the close once idle
    assert out.startswith(b"HTTP/1.1 200") and 0.8 < time.time() - t0 < 4


def read_until(s, end):
    out = b""
    while not out.endswith(end):
        d = s.recv(65536)
        assert d, out[-200:]
        out += d
    return out


def test_each_phase_keeps_its_own_deadline_on_one_connection(procs):
    """Timers are re-armed lazily (a later deadline only moves a field): a
    stream that outlives the head's 1 s timeout still ends whole, the
    connection then stays open through most of its 3 s idle timeout, serves
    again, and is closed once idle that long."""
    gw = procs.gateway([procs.worker()], "--client-header-timeout-secs", "1",
                       "--client-idle-timeout-secs", "3", threads=1)
    s = raw(gw.port)
    body = json.dumps(chat_body(stream=True, max_tokens=8)).encode()
    t0 = time.time()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nx-mock-token-interval-ms: 250\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    out = read_until(s, b"0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in out
    assert time.time() - t0 > 1.5  # longer than the head timeout, and not cut by it
    time.sleep(2)  # idle, but less than 3 s
    s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    t1 = time.time()
    out = read_all(s)  # the answer, then the close once idle 3 s
    assert out.startswith(b"HTTP/1.1 200"), out[:100]
    assert 2.5 < time.time() - t1 < 6


def test_connections_beyond_the_limit_are_refused_and_the_others_keep_working(procs):
    gw = procs.gateway([procs.worker()], "--max-client-connections", "4", threads=1)
    held = [raw(gw.port) for _ in range(4)]
    time.sleep(0.2)
    extra = raw(gw.port)
    out = read_all(extra)
    assert out.startswith(b"HTTP/1.1 503 "), out[:100]
    assert b"too_many_connections" in out
    # the four open connections still work
    for s in held:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    held.pop().close()
    time.sleep(0.2)
    # one left: a new connection fits again
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1),
                   headers={"connection": "close"})
    assert r.status_code == 200
    metrics = [l for l in httpx.get(gw.base + "/metrics", headers={"connection": "close"}).text.splitlines()
               if l.startswith("infergate_client_connections_refused_total")]
    assert metrics and float(metrics[0].split()[1]) >= 1
    for s in held:
        s.close()


def test_open_file_limit_is_reported_at_start(procs):
    gw = procs.gateway([procs.worker()], "--log-level", "info")
    gw.stop()
    assert "open-file limit" in gw.stderr and "client connections" in gw.stderr


def test_a_client_that_stops_reading_stops_the_worker_not_memory(procs):
    """Bounded buffering: a client that reads nothing of a fast, long stream
    makes the gateway stop reading that worker; its memory does not grow
    with the stream."""
    w = procs.worker()
    gw = procs.gateway([w], threads=1)

    base = rss_kb(gw.proc.pid)
    s = raw(gw.port)
    body = json.dumps(chat_body(max_tokens=100000, stream=True)).encode()  # ~23 MB of events
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(2.0)  # the worker could send it all by now; nobody reads
    grown = rss_kb(gw.proc.pid) - base
    assert grown < 4096, grown  # kB: a few buffers, not the stream (the kernel holds a few MB more)
    # and the stream is intact once the client reads again
    s.settimeout(30)
    got = bytearray()
    while b"data: [DONE]" not in got[-64:]:
        d = s.recv(1 << 20)
        assert d, "the stream ended early"
        got += d
    assert got.count(b'"finish_reason":null') == 100000
    s.close()


@pytest.mark.skipif(SANITIZED, reason="sanitizers keep freed memory in quarantine")
def test_open_streams_hold_little_memory_not_their_requests(procs):
    """Once a stream runs, the request (here a 16 kB prompt), its header
    tables and both heads go back to the thread: 1,000 open streams grow the
    gateway by a few kB each (bench/streams_bench.py measures it), not by
    their requests' size."""
    n, prompt = 1000, "x" * 16384
    gw = procs.gateway([procs.worker()], threads=1)

    body = json.dumps(chat_body(max_tokens=100000, stream=True,
                                messages=[{"role": "user", "content": prompt}])).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
           b"x-mock-token-interval-ms: 1000\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def hold():
        base = rss_kb(gw.proc.pid)
        conns = []
        for i in range(0, n, 200):  # in batches: no backlog overflows
            batch = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", gw.port) for _ in range(200)])
            for _, wr in batch:
                wr.write(req)
            for rd, _ in batch:
                await asyncio.wait_for(rd.readuntil(b"data: "), 30)  # live end to end
            conns += batch
        grown = rss_kb(gw.proc.pid) - base
        for _, wr in conns:
            wr.close()
        return grown

    grown = asyncio.run(hold())
    assert grown < n * 8, f"{grown} kB for {n} streams"  # holding the requests would be over 16 MB
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def big_chat(n):
    return json.dumps({"model": "mock-model", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "x" * n}]}).encode()


@pytest.mark.skipif(SANITIZED, reason="sanitizers keep freed memory in quarantine")
def test_body_flood_stays_within_the_buffered_body_budget(procs):
    """16 clients each sending a 16 MB prompt at once, under a 48 MB budget:
    every request is served, and the gateway's peak memory stays near the
    budget instead of growing by the sum of the bodies (issue 12: 773 MB for
    16 x 48 MB)."""
    import threading
    budget = 48 << 20
    gw = procs.gateway([procs.worker()], "--max-buffered-body-bytes", str(budget))
    body = big_chat(16 << 20)
    base = peak_rss_kb(gw.proc.pid)
    results = []

    def one():
        with httpx.Client(base_url=gw.base, timeout=60) as c:
            r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            results.append(r.status_code)
    ts = [threading.Thread(target=one) for _ in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert results == [200] * 16, results
    grew_mb = (peak_rss_kb(gw.proc.pid) - base) / 1024
    assert grew_mb < budget / (1 << 20) + 24, f"peak grew by {grew_mb:.0f} MB"  # 16 x 16 MB would be 256
    # and the gateway serves small requests as before
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_body_that_cannot_get_room_in_time_is_503_not_408(procs):
    """While one huge body holds the whole budget and its worker is slow to
    answer, a second body waits; when its deadline passes it is told the
    gateway was full (503 with Retry-After), not that it was slow."""
    w = procs.worker("--ttft-ms", "3000")
    gw = procs.gateway([w], "--max-buffered-body-bytes", str(1 << 20), "--client-body-timeout-secs", "1")
    import threading
    first = []
    t = threading.Thread(target=lambda: first.append(
        httpx.post(gw.base + "/v1/chat/completions", content=big_chat(4 << 20),
                   headers={"content-type": "application/json"}, timeout=30).status_code))
    before = w.stats()["requests"]
    t.start()
    # the first body is all in (the worker has it) and waits for its first token, holding the budget
    assert wait_for(lambda: w.stats()["requests"] >= before + 2, 30)
    s = raw(gw.port)
    second = big_chat(2 << 20)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % len(second))
    try:
        s.sendall(second)
    except OSError:
        pass
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 503 "), out[:200]
    assert b"retry-after: 1" in out.lower() and b"body_buffer_full" in out
    t.join()
    assert first == [200]


def test_pipelined_flood_behind_a_stream_is_not_buffered(procs):
    """A client that pipelines megabytes of requests behind a long stream:
    the gateway holds a bounded amount and the rest waits in the kernel."""
    w = procs.worker("--token-interval-ms", "20", "--tokens", "100")
    gw = procs.gateway([w], threads=1)
    s = raw(gw.port)
    stream = json.dumps(chat_body(stream=True)).encode()
    small = json.dumps(chat_body(max_tokens=1)).encode()
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
    s.sendall(req % len(stream) + stream)
    time.sleep(0.3)  # the stream is out
    base = rss_kb(gw.proc.pid)
    s.setblocking(False)
    sent, flood = 0, (req % len(small) + small) * 130000  # some 20 MB
    deadline = time.time() + 3
    while sent < len(flood) and time.time() < deadline:
        try:
            sent += s.send(flood[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    grew = rss_kb(gw.proc.pid) - base
    assert grew < 8 * 1024, f"grew by {grew} kB with {sent} bytes pipelined"
    s.close()
