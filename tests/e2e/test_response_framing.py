"""The worker side of the proxy, answers that are well formed but easy to
get wrong (issue 12, classes 1-3 and 5): trailers, bodiless statuses that
claim a body, Connection naming the framing fields, headers infergate sets
itself. Each goes through real clients and a strict raw-socket client; the
client always gets an answer framed by what infergate parsed, nothing of one
answer leaks into the next, and the worker connection that framed a body
where none can be is never reused."""
import asyncio
import socket
import subprocess
import threading

import aiohttp
import httpx
import pytest
import requests

from test_upstream_faults import FaultyWorker

BODY = b'{"a":1}'
TRAILER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
           b"trailer: x-trailer\r\n\r\n7\r\n" + BODY + b"\r\n0\r\nx-trailer: a\r\nx-checksum: 1\r\n\r\n")
TRAILER_ONLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                b"0\r\nx-trailer: a\r\n\r\n")
SMUGGLED = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{"smuggled":1}'
ANSWERS = {
    "trailer": TRAILER,
    "trailer_only": TRAILER_ONLY,
    "no_content_with_length": b"HTTP/1.1 204 No Content\r\ncontent-length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "no_content_chunked": b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "not_modified_with_body": b"HTTP/1.1 304 Not Modified\r\ncontent-length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "connection_names_length": (b"HTTP/1.1 200 OK\r\nconnection: content-length, keep-alive\r\n"
                                b"content-length: 7\r\n\r\n" + BODY),
    "connection_names_te": (b"HTTP/1.1 200 OK\r\nconnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n"
                            b"7\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "own_headers": (b"HTTP/1.1 200 OK\r\nx-weight-version: 999\r\nx-request-id: from-the-worker\r\n"
                    b"content-length: 7\r\n\r\n" + BODY),
}


@pytest.fixture(scope="module")
def setup():
    from conftest import Gateway
    w = FaultyWorker(ANSWERS)
    gw = Gateway([], "--health-check-interval-secs", "0", "--retry-max-retries", "0",
                 "--disable-circuit-breaker", "--upstream-spread", "off")
    assert httpx.post(gw.base + "/workers", json={"url": w.url, "model_id": "m"}).status_code == 202
    yield gw, w
    assert gw.proc.poll() is None, "the gateway died"
    gw.stop()
    w.stop()


REQ = b'{"model":"m","messages":[]}'


def raw_request(fault, version=b"HTTP/1.1", rid=None):
    extra = b"x-request-id: %s\r\n" % rid if rid else b""
    return (b"POST /v1/chat/completions " + version + b"\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"x-fault: " + fault.encode() + b"\r\n" + extra + b"content-length: %d\r\n\r\n" % len(REQ) + REQ)


class RawClient:
    """A strict HTTP/1.1 client on one connection: exact bytes, no leniency."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exchange(self, data):
        """Send data, read one response: (status, [(name, value)], body, raw framing of the body)."""
        self.s.sendall(data)
        status = int(self._line().split(b" ")[1])
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.partition(b":")
            headers.append((k.strip().lower().decode(), v.strip().decode()))
        names = [k for k, _ in headers]
        assert names.count("content-length") <= 1 and names.count("transfer-encoding") <= 1, headers
        assert not ("content-length" in names and "transfer-encoding" in names), headers
        h = dict(headers)
        if status in (204, 304):
            return status, headers, b"", b""
        if "content-length" in h:
            body = self._take(int(h["content-length"]))
            return status, headers, body, body
        if h.get("transfer-encoding") == "chunked":
            body, raw = b"", b""
            while True:
                line = self._line()
                raw += line + b"\r\n"
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    end = self._line()
                    raw += end + b"\r\n"
                    assert end == b"", f"trailer field reached the client: {end!r}"
                    return status, headers, body, raw
                data = self._take(size + 2)
                assert data.endswith(b"\r\n")
                body += data[:-2]
                raw += data
        # close-delimited
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        body, self.buf = self.buf, b""
        return status, headers, body, body

    def closed(self):
        self.s.settimeout(2)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def next_answer_is_genuine(raw, w, faulty):
    """The next request on the same client connection gets its own answer, from another worker connection."""
    status, _, body, _ = raw.exchange(raw_request("ok"))
    assert status == 200 and b"smuggled" not in body, body
    assert b'"conn"' in body
    if faulty is not None:
        assert int(body.split(b":")[1].rstrip(b"}")) != faulty, "the worker connection was reused"


# ---- class 1: trailers ----

@pytest.mark.parametrize("fault", ["trailer", "trailer_only"])
def test_trailers_are_dropped_and_the_chunked_answer_stays_framed(setup, fault):
    gw, w = setup
    raw = RawClient(gw.port)
    status, headers, body, framing = raw.exchange(raw_request(fault))
    assert status == 200
    assert body == (BODY if fault == "trailer" else b"")
    assert framing.endswith(b"0\r\n\r\n")
    assert b"x-trailer" not in framing and b"x-checksum" not in framing
    assert dict(headers)["transfer-encoding"] == "chunked"
    assert "trailer" not in dict(headers)  # hop-by-hop: no trailer follows
    next_answer_is_genuine(raw, w, None)
    raw.close()


def test_trailers_to_an_http10_client_are_dechunked_and_closed(setup):
    gw, w = setup
    raw = RawClient(gw.port)
    status, headers, body, _ = raw.exchange(raw_request("trailer", b"HTTP/1.0"))
    assert status == 200 and body == BODY
    assert "transfer-encoding" not in dict(headers)
    raw.close()


def test_trailers_through_real_clients(setup):
    gw, w = setup
    hdr = {"x-fault": "trailer"}
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(3):  # the same keep-alive connection
            assert c.post("/v1/chat/completions", content=REQ, headers=hdr).content == BODY
        with c.stream("POST", "/v1/chat/completions", content=REQ, headers=hdr) as r:
            assert b"".join(r.iter_bytes()) == BODY
        assert c.post("/v1/chat/completions", content=REQ, headers={"x-fault": "ok"}).status_code == 200
    with requests.Session() as s:
        for _ in range(2):
            assert s.post(gw.base + "/v1/chat/completions", data=REQ, headers=hdr, timeout=10).content == BODY

    async def aio():
        async with aiohttp.ClientSession() as s:
            for _ in range(2):
                async with s.post(gw.base + "/v1/chat/completions", data=REQ, headers=hdr) as r:
                    assert await r.read() == BODY
    asyncio.run(aio())
    out = subprocess.run(["curl", "-sS", "--http1.1", "-H", "x-fault: trailer", "--data-binary", REQ.decode(),
                          gw.base + "/v1/chat/completions", "--next", "-H", "x-fault: trailer",
                          "--data-binary", REQ.decode(), gw.base + "/v1/chat/completions"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == BODY * 2


def test_trailers_under_concurrent_streams(setup):
    """The crash was in the gateway process: many at once, all threads."""
    gw, w = setup
    errors = []

    def one():
        try:
            with httpx.Client(base_url=gw.base, timeout=10) as c:
                for _ in range(10):
                    assert c.post("/v1/chat/completions", content=REQ, headers={"x-fault": "trailer"}).content == BODY
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    ts = [threading.Thread(target=one) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors, errors
    assert gw.proc.poll() is None


# ---- class 2: no body on 204, 304 ----

@pytest.mark.parametrize("fault", ["no_content_with_length", "no_content_chunked", "not_modified_with_body"])
def test_bodiless_status_relays_no_body_and_smuggles_nothing(setup, fault):
    gw, w = setup
    raw = RawClient(gw.port)
    status, headers, body, _ = raw.exchange(raw_request(fault))
    assert status in (204, 304) and body == b""
    h = dict(headers)
    assert "transfer-encoding" not in h
    if status == 204:
        assert "content-length" not in h  # RFC 9110 8.6
    faulty = w.faulty_conn
    # the bytes the worker sent after the head are nobody's answer
    next_answer_is_genuine(raw, w, faulty)
    next_answer_is_genuine(raw, w, faulty)
    raw.close()
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/v1/chat/completions", content=REQ, headers={"x-fault": fault})
        assert r.status_code in (204, 304) and r.content == b""
        after = c.post("/v1/chat/completions", content=REQ, headers={"x-fault": "ok"})
        assert after.status_code == 200 and b"smuggled" not in after.content
        assert after.json()["conn"] != w.faulty_conn


# ---- class 3: Connection naming the framing fields ----

@pytest.mark.parametrize("fault", ["connection_names_length", "connection_names_te"])
def test_connection_naming_framing_fields_keeps_the_answer_framed(setup, fault):
    gw, w = setup
    raw = RawClient(gw.port)
    status, headers, body, _ = raw.exchange(raw_request(fault))
    assert status == 200 and body == BODY
    h = dict(headers)
    assert "content-length" in h or h.get("transfer-encoding") == "chunked", headers
    next_answer_is_genuine(raw, w, None)  # the same client connection goes on
    raw.close()
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(2):
            assert c.post("/v1/chat/completions", content=REQ, headers={"x-fault": fault}).content == BODY


# ---- class 5: what infergate sets itself is replaced ----

def test_gateway_headers_replace_the_workers_own(setup):
    gw, w = setup
    raw = RawClient(gw.port)
    status, headers, body, _ = raw.exchange(raw_request("own_headers", rid=b"client-rid-1"))
    assert status == 200 and body == BODY
    versions = [v for k, v in headers if k == "x-weight-version"]
    rids = [v for k, v in headers if k == "x-request-id"]
    assert versions == ["0"], headers  # the gateway's record, not the worker's claim
    assert rids == ["client-rid-1"], headers
    raw.close()
