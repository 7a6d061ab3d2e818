"""The client side's small ones (issue 12, classes 15 and 16): HEAD answered
by infergate has no body, the head cap holds for a head that arrives in one
read, chunk framing does not count as payload, two Expect lines are one
field, and the body timeout is a deadline for the whole body."""
import json
import socket
import time

import httpx
import pytest

from conftest import chat_body


def raw(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            assert d, self.buf
            self.buf += d
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return h

    def body(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            assert d, self.buf
            self.buf += d
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def rest(self):
        while True:
            d = self.s.recv(65536)
            if not d:
                return self.buf
            self.buf += d


def length(head):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v)
    return None


@pytest.mark.parametrize("path,status", [("/health", 200), ("/liveness", 200), ("/readiness", 200),
                                         ("/v1/models", 200), ("/metrics", 200), ("/nope", 404),
                                         ("/v1/chat/completions", 405)])
def test_head_answered_by_infergate_has_no_body(procs, path, status):
    gw = procs.gateway([procs.worker()])
    s = raw(gw.port)
    r = Reader(s)
    # HEAD, then GET on the same connection: a body after the HEAD answer would be read as the next answer
    s.sendall(b"HEAD " + path.encode() + b" HTTP/1.1\r\nhost: gw\r\n\r\nGET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
    h = r.head()
    assert h.startswith(b"HTTP/1.1 %d " % status), h
    assert length(h) and length(h) > 0  # the length the GET would have had
    h2 = r.head()
    assert h2.startswith(b"HTTP/1.1 200 "), (h, h2, r.buf)
    assert json.loads(r.body(length(h2)))["status"] == "ok"
    s.close()
    assert httpx.head(gw.base + path).content == b""


def test_oversized_head_in_one_read_is_431(procs):
    w = procs.worker()
    gw = procs.gateway([w], "--max-header-size", "1024")
    body = json.dumps(chat_body()).encode()
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-big: " + b"a" * 2000 +
              b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    out = Reader(s).rest()
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    assert b"--max-header-size" in out
    # and a head under the cap still passes
    ok = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), headers={"x-big": "a" * 500})
    assert ok.status_code == 200


def test_chunk_framing_does_not_count_against_the_payload_cap(procs):
    """3,000 bytes of data in 3,000 chunks with extensions: some 50 kB on the
    wire, under a 4,000-byte payload cap."""
    w = procs.worker()
    gw = procs.gateway([w], "--max-payload-size", "4000", "--max-header-size", "1024")
    doc = json.dumps({"model": "mock-model", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 2900}]})
    data = doc.encode()
    assert 2900 < len(data) < 4000
    wire = b"".join(b"1;ext=padding-padding\r\n" + data[i:i + 1] + b"\r\n" for i in range(len(data))) + b"0\r\n\r\n"
    assert len(wire) > 50000
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
              b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + wire)
    out = Reader(s).rest()
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    # the data cap still holds: 4,001 bytes of data is too much, however framed
    big = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "x" * 4000}]}).encode()
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n"
              + b"".join(b"%x\r\n" % 100 + big[i:i + 100] + b"\r\n" for i in range(0, len(big), 100)))
    out = Reader(s).rest()
    assert out.startswith(b"HTTP/1.1 413 "), out[:300]


@pytest.mark.parametrize("first,second,status", [(b"100-continue", b"100-continue", 200),
                                                 (b"100-continue", b"something-else", 417),
                                                 (b"something-else", b"100-continue", 417)])
def test_two_expect_lines_are_one_field(procs, first, second, status):
    gw = procs.gateway([procs.worker()])
    body = json.dumps(chat_body(max_tokens=1)).encode()
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nexpect: " + first + b"\r\nexpect: " + second +
              b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    r = Reader(s)
    h = r.head()
    if status == 200:
        assert h.startswith(b"HTTP/1.1 100 "), h
        s.sendall(body)
        h = r.head()
    assert h.startswith(b"HTTP/1.1 %d " % status), h


def test_trickled_body_meets_the_body_deadline(procs):
    """One byte every 0.2 s never pauses long, but the whole body must arrive in time."""
    w = procs.worker()
    gw = procs.gateway([w], "--client-body-timeout-secs", "1")
    before = w.stats()["requests"]
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n")
    got = b""
    s.settimeout(0.2)
    for _ in range(50):  # up to 10 s of trickling, far past the deadline
        try:
            s.sendall(b" ")
        except OSError:
            break
        try:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got:
                break
        except socket.timeout:
            pass
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"client-body-timeout-secs" in got
    assert w.stats()["requests"] == before + 1  # nothing forwarded


def test_a_body_that_arrives_in_time_is_served(procs):
    gw = procs.gateway([procs.worker()], "--client-body-timeout-secs", "5")
    body = json.dumps(chat_body(max_tokens=1)).encode()
    s = raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
              % len(body))
    for i in range(0, len(body), 10):
        s.sendall(body[i:i + 10])
        time.sleep(0.02)
    assert Reader(s).rest().startswith(b"HTTP/1.1 200 ")
