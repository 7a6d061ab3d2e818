"""A worker that breaks HTTP: malformed heads, wrong lengths, ambiguous
framing, closing mid-body. The client gets a 502 before the first byte, or a
cleanly cut stream after it; the connection to that worker is thrown away,
never reused; the gateway keeps serving."""
import socket
import threading

import httpx
import pytest

OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"

FAULTS = {
    # before the first byte reaches the client: 502
    "garbage": b"NOT HTTP AT ALL\r\n\r\n",
    "bad_status": b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}",
    "bad_header_name": b"HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 2\r\n\r\n{}",
    "cl_and_te": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "two_lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    "bad_length": b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\n{}",
    "close_in_head": b"HTTP/1.1 200 OK\r\ncontent-le",
    "close_silently": b"",
    # issue 12, class 4: what a lenient parser would pass on
    "status_99": b"HTTP/1.1 099 Low\r\ncontent-length: 2\r\n\r\n{}",
    "status_600": b"HTTP/1.1 600 High\r\ncontent-length: 2\r\n\r\n{}",
    "unsolicited_101": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    "bare_cr_status_line": b"HTTP/1.1 200 O\rK\r\ncontent-length: 2\r\n\r\n{}",
    "bare_cr_header": b"HTTP/1.1 200 OK\r\nx-a: b\rc\r\ncontent-length: 2\r\n\r\n{}",
    "bare_lf_header": b"HTTP/1.1 200 OK\nx-a: b\r\ncontent-length: 2\r\n\r\n{}",
    "control_in_reason": b"HTTP/1.1 200 O\x01K\r\ncontent-length: 2\r\n\r\n{}",
    "obs_fold": b"HTTP/1.1 200 OK\r\nx-a: b\r\n folded\r\ncontent-length: 2\r\n\r\n{}",
    "te_gzip": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n{}",
    "te_gzip_chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te_twice": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "length_list": b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\n{}",
    "http2_status": b"HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
}
# after the head: the client sees the stream cut
CUT = {
    "short_body": OK_HEAD + b"content-length: 100\r\n\r\n{\"partial\":",
    "chunked_then_close": OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n",
    "bad_chunk_size": OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n",
    "chunk_without_crlf": OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":XX0\r\n\r\n",
    "bare_cr_chunk_ext": OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5;a\rb\r\n{\"a\":\r\n0\r\n\r\n",
    "bare_cr_trailer": OK_HEAD + b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-t: a\rb\r\n\r\n",
}


class FaultyWorker:
    """Answers by the request's x-fault header from FAULTS, CUT or the
    answers given; 'ok' answers name the connection. Each request's head is
    recorded in heads."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.heads = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = 0
        self.faulty_conn = None  # the connection the last faulty answer went out on
        self.stopped = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(conn, self.conns), daemon=True).start()

    def _serve(self, conn, cid):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = conn.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                fault, length = b"ok", 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"x-fault":
                        fault = v.strip()
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                name = fault.decode()
                if name == "ok":
                    body = b'{"conn":%d}' % cid
                    conn.sendall(OK_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body)
                    continue
                self.faulty_conn = cid
                conn.sendall({**FAULTS, **CUT, **self.answers}[name])
                if name.startswith("close") or name in CUT:
                    return
                # otherwise stay open: a gateway that pooled this connection
                # would send its next request here

    def stop(self):
        from conftest import stop_listener
        self.stopped = True
        stop_listener(self.sock, self.acceptor)


@pytest.fixture(scope="module")
def setup():
    from conftest import Gateway
    w = FaultyWorker()
    gw = Gateway([], "--health-check-interval-secs", "0", "--retry-max-retries", "0",
                 "--disable-circuit-breaker")
    assert httpx.post(gw.base + "/workers", json={"url": w.url, "model_id": "m"}).status_code == 202
    yield gw, w
    gw.stop()
    w.stop()


def ask(c, fault):
    return c.post("/v1/chat/completions", json={"model": "m", "messages": []}, headers={"x-fault": fault})


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_malformed_answer_before_the_first_byte_is_502_and_the_connection_is_dropped(setup, fault):
    gw, w = setup
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert ask(c, "ok").status_code == 200  # a pooled connection exists
        r = ask(c, fault)
        assert r.status_code == 502, (fault, r.status_code, r.text)
        assert r.json()["error"]["type"] == "upstream_error"
        for _ in range(3):  # never on the connection that broke
            after = ask(c, "ok")
            assert after.status_code == 200 and after.json()["conn"] != w.faulty_conn, fault


@pytest.mark.parametrize("fault", sorted(CUT))
def test_broken_body_after_the_head_cuts_the_stream(setup, fault):
    gw, w = setup
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with c.stream("POST", "/v1/chat/completions", json={"model": "m", "messages": []},
                          headers={"x-fault": fault}) as r:
                assert r.status_code == 200  # the head had gone out
                r.read()
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert ask(c, "ok").status_code == 200  # and the gateway goes on
