"""Request framing (RFC 9112): every request with ambiguous or invalid framing
is refused with 400 and a close, and nothing of it reaches a worker. Each case
goes over a raw socket to a gateway whose only worker records every byte it
receives."""
import socket
import threading
import time

import httpx
import pytest

BODY = b'{"model":"m","messages":[]}'  # 27 bytes
ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


class RecordingWorker:
    """Answers every request 200 and keeps every byte it received."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received = bytearray()
        self.lock = threading.Lock()
        self.stopped = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    self.received += data
                buf += data
                # one answer per complete request (head, then a Content-Length body)
                while b"\r\n\r\n" in buf:
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                    if len(rest) < length:
                        break
                    buf = rest[length:]
                    conn.sendall(ANSWER)

    def take(self):
        with self.lock:
            data = bytes(self.received)
            self.received.clear()
        return data

    def stop(self):
        from conftest import stop_listener
        self.stopped = True
        stop_listener(self.sock, self.acceptor)


@pytest.fixture(scope="module")
def gateway_and_worker():
    from conftest import Gateway
    w = RecordingWorker()
    gw = Gateway([], "--health-check-interval-secs", "0")
    r = httpx.post(gw.base + "/workers", json={"url": w.url, "model_id": "m"})
    assert r.status_code == 202, r.text
    yield gw, w
    gw.stop()
    w.stop()


def exchange(port, raw, timeout=3.0):
    """Send raw bytes; return (everything answered, closed by the gateway)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    s.sendall(raw)
    out, closed = b"", False
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not d:
            closed = True
            break
        out += d
    s.close()
    return out, closed


def req(extra=b"", body=BODY, line=b"POST /v1/chat/completions HTTP/1.1", host=b"Host: gw\r\n"):
    return line + b"\r\n" + host + extra + b"\r\n" + body


CL = b"Content-Length: 27\r\n"
CHUNKED_BODY = b"1b\r\n" + BODY + b"\r\n0\r\n\r\n"
TE = b"Transfer-Encoding: chunked\r\n"

BAD = {
    # Content-Length and Transfer-Encoding together, either order
    "cl_and_te": req(CL + TE, CHUNKED_BODY),
    "te_and_cl": req(TE + CL, CHUNKED_BODY),
    "te_and_cl_zero": req(TE + b"Content-Length: 0\r\n", CHUNKED_BODY),
    # differing or malformed Content-Length
    "cl_twice_differing": req(CL + b"Content-Length: 28\r\n", BODY + b"x"),
    "cl_twice_same": req(CL + CL),
    "cl_list": req(b"Content-Length: 27, 27\r\n"),
    "cl_list_differing": req(b"Content-Length: 27, 28\r\n"),
    "cl_plus": req(b"Content-Length: +27\r\n"),
    "cl_minus": req(b"Content-Length: -27\r\n"),
    "cl_inner_space": req(b"Content-Length: 2 7\r\n"),
    "cl_trailing_junk": req(b"Content-Length: 27abc\r\n"),
    "cl_hex": req(b"Content-Length: 0x1b\r\n"),
    "cl_empty": req(b"Content-Length: \r\n"),
    "cl_overflow": req(b"Content-Length: 99999999999999999999999999\r\n"),
    "cl_decimal": req(b"Content-Length: 27.0\r\n"),
    "cl_vtab": req(b"Content-Length:\x0b27\r\n"),
    # Transfer-Encoding other than one final chunked
    "te_gzip": req(b"Transfer-Encoding: gzip\r\n", CHUNKED_BODY),
    "te_chunked_gzip": req(b"Transfer-Encoding: chunked, gzip\r\n", CHUNKED_BODY),
    "te_gzip_chunked": req(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_BODY),
    "te_chunked_twice": req(TE + TE, CHUNKED_BODY),
    "te_chunked_chunked_list": req(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED_BODY),
    "te_identity": req(b"Transfer-Encoding: identity\r\n" + CL),
    "te_xchunked": req(b"Transfer-Encoding: xchunked\r\n", CHUNKED_BODY),
    "te_chunkedx": req(b"Transfer-Encoding: chunkedx\r\n", CHUNKED_BODY),
    "te_vtab": req(b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_BODY),
    "te_empty": req(b"Transfer-Encoding: \r\n" + CL),
    "te_http10": req(TE, CHUNKED_BODY, line=b"POST /v1/chat/completions HTTP/1.0"),
    # obsolete line folding
    "obs_fold": req(CL + b"X-Foo: a\r\n b\r\n"),
    "obs_fold_tab": req(CL + b"X-Foo: a\r\n\tb\r\n"),
    "obs_fold_cl": req(b"Content-Length:\r\n 27\r\n"),
    "obs_fold_te": req(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_BODY),
    "fold_after_request_line": b"POST /v1/chat/completions HTTP/1.1\r\n Host: gw\r\n" + CL + b"\r\n" + BODY,
    # whitespace before the colon
    "space_before_colon_cl": req(b"Content-Length : 27\r\n"),
    "space_before_colon_te": req(b"Transfer-Encoding : chunked\r\n", CHUNKED_BODY),
    "tab_before_colon": req(CL + b"X-Foo\t: a\r\n"),
    # invalid bytes in names or values
    "name_at_sign": req(CL + b"X@Foo: a\r\n"),
    "name_space": req(CL + b"X Foo: a\r\n"),
    "name_empty": req(CL + b": a\r\n"),
    "name_nul": req(CL + b"X\x00Foo: a\r\n"),
    "name_non_ascii": req(CL + b"X\xc3\xa9: a\r\n"),
    "value_nul": req(CL + b"X-Foo: a\x00b\r\n"),
    "value_del": req(CL + b"X-Foo: a\x7fb\r\n"),
    "value_bare_cr": req(CL + b"X-Foo: a\rb\r\n"),
    "value_ctl": req(CL + b"X-Foo: a\x01b\r\n"),
    "no_colon": req(CL + b"X-Foo a\r\n"),
    # line endings
    "bare_lf_headers": b"POST /v1/chat/completions HTTP/1.1\nHost: gw\nContent-Length: 27\n\n" + BODY,
    "bare_lf_request_line": b"POST /v1/chat/completions HTTP/1.1\nHost: gw\r\n" + CL + b"\r\n" + BODY,
    "bare_cr_line_end": b"POST /v1/chat/completions HTTP/1.1\rHost: gw\r\n" + CL + b"\r\n" + BODY,
    "bare_lf_end_of_head": req(CL)[:-len(BODY) - 2] + b"\n" + BODY,
    # chunked bodies
    "chunk_size_junk": req(TE, b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_plus": req(TE, b"+1b\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_minus": req(TE, b"-1b\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_overflow": req(TE, b"fffffffffffffffffffff\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_leading_space": req(TE, b" 1b\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_0x": req(TE, b"0x1b\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_size_bare_lf": req(TE, b"1b\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_data_too_long": req(TE, b"5\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_data_no_crlf": req(TE, b"1b\r\n" + BODY + b"XX0\r\n\r\n"),
    "chunk_ext_ctl": req(TE, b"1b;\x01ext\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_ext_bare_cr": req(TE, b"1b;a\rb\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_ext_bad_name": req(TE, b"1b;@\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk_trailer_bad_name": req(TE, b"1b\r\n" + BODY + b"\r\n0\r\nX@: a\r\n\r\n"),
    "chunk_trailer_fold": req(TE, b"1b\r\n" + BODY + b"\r\n0\r\nX-A: a\r\n b\r\n\r\n"),
    # request line and target
    "absolute_form": req(CL, line=b"POST http://evil.example/v1/chat/completions HTTP/1.1"),
    "absolute_form_https": req(CL, line=b"POST https://gw/v1/chat/completions HTTP/1.1"),
    "connect": req(b"", b"", line=b"CONNECT evil.example:443 HTTP/1.1"),
    "asterisk_form": req(CL, line=b"POST * HTTP/1.1"),
    "no_version": req(CL, line=b"POST /v1/chat/completions"),
    "bad_version": req(CL, line=b"POST /v1/chat/completions HTTP/1.x"),
    "version_2": req(CL, line=b"POST /v1/chat/completions HTTP/2.0"),
    "lowercase_method": req(CL, line=b"post /v1/chat/completions HTTP/1.1"),
    "double_space": req(CL, line=b"POST  /v1/chat/completions HTTP/1.1"),
    "space_in_target": req(CL, line=b"POST /v1/chat completions HTTP/1.1"),
    "nul_in_target": req(CL, line=b"POST /v1/chat/\x00completions HTTP/1.1"),
    "trailing_space_version": req(CL, line=b"POST /v1/chat/completions HTTP/1.1 "),
    # Host: exactly one, and well-formed, in HTTP/1.1
    "no_host": req(CL, host=b""),
    "two_hosts": req(CL, host=b"Host: gw\r\nHost: other\r\n"),
    "host_with_space": req(CL, host=b"Host: g w\r\n"),
    "host_with_slash": req(CL, host=b"Host: gw/evil\r\n"),
}


def test_there_are_at_least_60_cases():
    assert len(BAD) >= 60


def test_a_valid_request_reaches_the_worker(gateway_and_worker):
    gw, w = gateway_and_worker
    w.take()
    out, _ = exchange(gw.port, req(CL + b"Connection: close\r\n"))
    assert out.startswith(b"HTTP/1.1 200"), out
    assert BODY in w.take()
    out, _ = exchange(gw.port, req(TE + b"Connection: close\r\n", CHUNKED_BODY))
    assert out.startswith(b"HTTP/1.1 200"), out
    assert BODY in w.take()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_framing_is_refused_and_never_forwarded(gateway_and_worker, name):
    gw, w = gateway_and_worker
    w.take()
    out, closed = exchange(gw.port, BAD[name])
    assert out.startswith(b"HTTP/1.1 400 "), (name, out[:200])
    assert b'"error"' in out  # OpenAI-shaped
    assert closed, name
    time.sleep(0.05)
    assert w.take() == b"", name


def test_pipelined_valid_then_invalid_is_answered_in_order_then_closed(gateway_and_worker):
    gw, w = gateway_and_worker
    w.take()
    out, closed = exchange(gw.port, req(CL) + req(CL + TE, CHUNKED_BODY))
    first, _, rest = out.partition(b"HTTP/1.1 400")
    assert first.startswith(b"HTTP/1.1 200") and b'{"ok":true}' in first, out
    assert rest and closed
    assert w.take().count(b"POST /v1/chat/completions") == 1  # only the first went on
