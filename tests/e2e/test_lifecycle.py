"""Client aborts reaching the worker, and graceful shutdown."""
import signal
import socket
import threading
import time

import httpx

from conftest import chat_body, sse_events, wait_for


def test_client_abort_mid_stream_reaches_the_worker(procs):
    w = procs.worker("--token-interval-ms", "100", worker_id="w1")
    gw = procs.gateway([w])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=200, stream=True)) as s:
            lines = s.iter_lines()
            got = [l for _, l in zip(range(3), (l for l in lines if l.startswith("data: ")))]
            assert len(got) == 3
        # leaving the block closes the client connection mid-stream
    assert wait_for(lambda: w.stats()["aborted"] == 1), w.stats()
    st = w.stats()
    assert st["inflight"] == 0 and st["completed"] == 0
    # the gateway carries on
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_client_abort_while_waiting_for_first_token(procs):
    w = procs.worker("--ttft-ms", "5000", worker_id="w1")
    gw = procs.gateway([w])
    s = socket.create_connection(("127.0.0.1", gw.port))
    body = b'{"model":"mock-model","stream":true}'
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert wait_for(lambda: w.stats()["inflight"] == 1)
    s.close()
    assert wait_for(lambda: w.stats()["aborted"] == 1)


def test_graceful_shutdown_finishes_streams_then_exits_0(procs):
    w = procs.worker("--token-interval-ms", "50", worker_id="w1")
    gw = procs.gateway([w])
    result = {}

    def stream():
        with httpx.Client(base_url=gw.base, timeout=20) as c:
            with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=20, stream=True)) as s:
                result["events"] = sse_events(s.iter_lines())

    t = threading.Thread(target=stream)
    t.start()
    assert wait_for(lambda: w.stats()["inflight"] == 1)
    gw.proc.send_signal(signal.SIGTERM)
    # new connections are refused once the listeners are closed
    assert wait_for(lambda: _refused(gw.port), timeout=5)
    t.join(20)
    assert result["events"][-1] == "[DONE]" and len(result["events"]) == 22
    assert gw.proc.wait(20) == 0  # exits by itself once drained
    assert gw.stop() == 0


def test_shutdown_with_idle_keepalive_clients_is_prompt(procs):
    gw = procs.gateway([procs.worker()])
    c = httpx.Client(base_url=gw.base)
    assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    t0 = time.time()
    assert gw.stop() == 0
    assert time.time() - t0 < 10  # idle keep-alive connections do not hold the drain
    c.close()


def test_drain_timeout_cuts_long_streams(procs):
    w = procs.worker("--token-interval-ms", "200", worker_id="w1")
    gw = procs.gateway([w], "--drain-timeout-secs", "0.5")
    c = httpx.Client(base_url=gw.base, timeout=20)
    s = c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=1000, stream=True))
    r = s.__enter__()
    assert r.status_code == 200
    assert gw.stop() == 0
    assert wait_for(lambda: w.stats()["aborted"] == 1)
    c.close()


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True
