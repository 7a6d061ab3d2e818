"""Every error the gateway answers itself: status, OpenAI-shaped JSON, and
whether the connection survives. Raw sockets where clients would refuse to
send the bad input."""
import json
import re
import socket

import httpx
import requests

from conftest import chat_body


def raw(port, data, read_all=True, timeout=5):
    """Send bytes, return everything the gateway sent until it closed (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_all:
                break
    except socket.timeout:
        out += b"<timeout>"
    s.close()
    return out


def parse(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, headers, body


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]
    assert r.headers["x-request-id"]


def test_malformed_http_is_400_and_closed(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    for bad in (b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
        out = raw(gw.port, bad)
        status, headers, body = parse(out)
        assert status == 400, out
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "bad_request"
    # discovery and this /stats: nothing malformed reached the worker
    assert w.stats()["requests"] == 2


def test_unknown_path_and_method(procs):
    gw = procs.gateway([procs.worker()])
    with httpx.Client(base_url=gw.base) as c:
        assert_error(c.get("/nope"), 404, "not_found")
        r = c.get("/v1/chat/completions")
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "POST"
        assert c.get("/health").status_code == 200  # same connection still works


def test_bad_json_is_400_and_never_forwarded(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    body_ok = json.dumps(chat_body(max_tokens=1)).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    for body in (b"{", b"not json", b"[1,2]", b'{"model": "x",}', b'{"a":1} trailing', b"", body_ok):
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        status = int(head.split()[1])
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        payload = b""
        while len(payload) < length:
            payload += s.recv(length - len(payload))
        if body is body_ok:
            assert status == 200
        else:
            # the framing was fine: the error keeps the connection open
            assert status == 400 and json.loads(payload)["error"]["code"] == "invalid_json"
            assert b"connection: close" not in head.lower()
    s.close()
    assert w.stats()["completed"] == 1


def test_body_over_max_payload_is_413(procs):
    w = procs.worker()
    gw = procs.gateway([w], "--max-payload-size", "1000")
    big = {"model": "mock-model", "messages": [{"role": "user", "content": "x" * 2000}]}
    r = requests.post(gw.base + "/v1/chat/completions", json=big)
    assert_error(r, 413, "payload_too_large")
    # chunked body: the limit is enforced while it streams in
    r = requests.post(gw.base + "/v1/chat/completions", data=iter([json.dumps(big).encode()]))
    assert_error(r, 413, "payload_too_large")
    assert requests.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    assert w.stats()["completed"] == 1


def test_413_survives_a_big_unread_body(procs):
    """The 413 goes out before the body is read; lingering close keeps a RST
    from destroying it while the client is still sending."""
    gw = procs.gateway([procs.worker()], "--max-payload-size", "1000")
    for _ in range(3):
        r = requests.post(gw.base + "/v1/chat/completions", data=b"x" * (4 << 20),
                          headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        assert r.headers["connection"] == "close"


def test_large_body_within_limit_passes(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    big = {"model": "mock-model", "messages": [{"role": "user", "content": "y" * (8 << 20)}], "max_tokens": 2}
    r = requests.post(gw.base + "/v1/chat/completions", json=big)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 "


def test_oversized_headers_are_431(procs):
    gw = procs.gateway([procs.worker()], "--max-header-size", "4096")
    r = requests.post(gw.base + "/v1/chat/completions", json=chat_body(), headers={"x-big": "a" * 8000})
    assert_error(r, 431, "headers_too_large")
    many = {f"x-h{i}": "1" for i in range(200)}
    r = requests.post(gw.base + "/v1/chat/completions", json=chat_body(), headers=many)
    assert r.status_code == 431


def test_request_timeout_is_504(procs):
    w = procs.worker("--ttft-ms", "3000")
    gw = procs.gateway([w], "--request-timeout-secs", "0.5")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=chat_body())
        assert_error(r, 504, "upstream_timeout")
        r = c.post("/v1/chat/completions", json=chat_body(), headers={"x-mock-ttft-ms": "0"})
        assert r.status_code == 200


def test_api_key(procs):
    gw = procs.gateway([procs.worker()], "--api-key", "sekret")
    with httpx.Client(base_url=gw.base) as c:
        assert_error(c.post("/v1/chat/completions", json=chat_body()), 401, "invalid_api_key")
        r = c.post("/v1/chat/completions", json=chat_body(), headers={"authorization": "Bearer wrong!"})
        assert_error(r, 401, "invalid_api_key")
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers={"authorization": "Bearer sekret"})
        assert r.status_code == 200
        assert c.get("/health").status_code == 200  # probes stay open


def test_request_id_kept_or_made(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    with httpx.Client(base_url=gw.base) as c:
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1),
                   headers={"x-request-id": "abc-123", "x-mock-echo-headers": "1"})
        assert r.headers["x-request-id"] == "abc-123"
        assert r.json()["received_headers"]["x-request-id"] == "abc-123"
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).headers["x-request-id"]
               for _ in range(10)}
        assert len(ids) == 10
        assert c.get("/nope").headers["x-request-id"]


def test_hop_by_hop_headers_and_host_rewrite(procs):
    w = procs.worker()
    gw = procs.gateway([w])
    body = json.dumps(chat_body(max_tokens=1)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: public.example\r\n"
           b"Connection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
           b"x-secret: hide-me\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nx-mock-echo-headers: 1\r\n"
           b"x-custom: stays\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, headers, resp = parse(raw(gw.port, req, read_all=False))
    assert status == 200
    seen = json.loads(resp)["received_headers"]
    assert seen["host"] == f"127.0.0.1:{w.port}"
    assert seen["x-custom"] == "stays"
    for gone in ("keep-alive", "te", "x-secret", "proxy-authorization", "connection"):
        assert gone not in seen, gone
    assert seen["content-length"] == str(len(body))


def test_expect_100_continue(procs):
    gw = procs.gateway([procs.worker()])
    body = json.dumps(chat_body(max_tokens=2)).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body)
    data = s.recv(65536)
    s.close()
    assert data.startswith(b"HTTP/1.1 200")
    # curl uses it for big bodies; the whole request works
    r = requests.post(gw.base + "/v1/chat/completions", data=body, headers={"Expect": "100-continue"})
    assert r.status_code == 200


def test_expect_other_is_417(procs):
    gw = procs.gateway([procs.worker()])
    status, _, _ = parse(raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                      b"Expect: magic\r\nContent-Length: 2\r\n\r\n{}"))
    assert status == 417


def test_pipelined_requests_answered_in_order(procs):
    gw = procs.gateway([procs.worker()])
    reqs = b""
    for n in (1, 2, 3):
        body = json.dumps(chat_body(max_tokens=n)).encode()
        reqs += (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    reqs += b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(gw.port, reqs)
    parts = out.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"200", b"404"]
    for n, p in zip((1, 2, 3), parts):
        content = json.loads(p.partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"]
        assert content == "".join(f"tok{i} " for i in range(n))


def test_chunked_request_body_is_forwarded_with_length(procs):
    gw = procs.gateway([procs.worker()])
    body = json.dumps(chat_body(max_tokens=3, **{"x-mock": 1})).encode()
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
    r = requests.post(gw.base + "/v1/chat/completions", data=iter(pieces),
                      headers={"x-mock-echo-headers": "1"})
    assert r.status_code == 200
    seen = r.json()["received_headers"]
    assert seen["content-length"] == str(len(body)) and "transfer-encoding" not in seen
    assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "


def test_http10_client_gets_dechunked_stream_and_close(procs):
    gw = procs.gateway([procs.worker()])
    body = json.dumps(chat_body(max_tokens=3, stream=True)).encode()
    out = raw(gw.port, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, headers, resp = parse(out)
    assert status == 200 and headers["connection"] == "close"
    assert "transfer-encoding" not in headers
    events = [l[6:] for l in resp.decode().split("\n") if l.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) == 5


def test_worker_error_status_passes_through(procs):
    gw = procs.gateway([procs.worker()])
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), headers={"x-mock-status": "429"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "429"


def test_request_pipelined_during_a_stream_waits_its_turn(procs):
    """Once a stream runs, the gateway gives the request's memory back and
    reads the client into a scratch buffer: bytes of the next request that
    arrive mid-stream are kept, and answered after the stream, in order."""
    gw = procs.gateway([procs.worker()])
    body = json.dumps(chat_body(max_tokens=5, stream=True)).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-token-interval-ms: 100\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 2:  # the stream is running
        d = s.recv(65536)
        assert d
        got += d
    nxt = json.dumps(chat_body(max_tokens=2)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(nxt)).encode()
              + b"\r\n\r\n" + nxt + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    parts = got.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"404"], got[-600:]
    assert parts[0].count(b"data: ") == 7 and b"data: [DONE]" in parts[0]  # 5 tokens, the final chunk, DONE
    assert json.loads(parts[1].partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"] == "tok0 tok1 "
