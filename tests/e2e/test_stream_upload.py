"""Forwarded request bodies stream through (issue 14): a forwarded path's
body that is chunked or longer than the 256 KiB window is sent to the
worker as it arrives, never held whole; the client is read only as fast as
the worker takes it. Real clients (httpx, requests, curl, raw sockets)
against a real uvicorn running a Starlette app that records when the bytes
came."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
import requests

from conftest import SANITIZED, free_port, wait_for

UPLOAD_APP = '''
import asyncio, hashlib, json, os, time
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.routing import Route

EVDIR = os.environ["EVDIR"]

async def upload(request):
    h, n, first = hashlib.sha256(), 0, None
    delay = float(request.query_params.get("delay", "0"))
    try:
        async for chunk in request.stream():
            if chunk and first is None:
                first = time.time()
            h.update(chunk)
            n += len(chunk)
            if delay:
                await asyncio.sleep(delay)
    except ClientDisconnect:
        with open(os.path.join(EVDIR, "cut-%d" % os.getpid()), "w") as f:
            f.write(str(n))
        raise
    return JSONResponse({"len": n, "sha256": h.hexdigest(), "first": first, "end": time.time(),
                         "te": request.headers.get("transfer-encoding"),
                         "cl": request.headers.get("content-length")})

async def early(request):
    # answers without reading the body, as a size check in front of an upload does
    return JSONResponse({"error": {"message": "too large for us", "type": "app"}}, status_code=413)

async def healthz(request):
    return JSONResponse({"ok": True})

app = Starlette(routes=[
    Route("/upload", upload, methods=["POST", "PUT"]),
    Route("/early", early, methods=["POST"]),
    Route("/healthz", healthz),
])
'''

MB = 1 << 20
# big enough that holding it would show in the gateway's memory
BIG = (96 if SANITIZED else 200) * MB


@pytest.fixture
def upload_gw(procs, asgi_server, tmp_path):
    evdir = tmp_path / "ev"
    evdir.mkdir()
    url = asgi_server(UPLOAD_APP, "--workers", "2", env={"EVDIR": str(evdir)})
    gw = procs.gateway([url], "--forward-paths", "/upload", "/early", "--health-check-endpoint", "/healthz",
                       "--max-payload-size", str(1 << 30), threads=1)
    gw.evdir = evdir
    return gw


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def pattern(i):
    return bytes([(i * 7 + j) & 0xFF for j in range(256)]) * (MB // 256)


def test_a_generator_upload_arrives_while_the_client_sends_and_is_never_held(upload_gw):
    gw = upload_gw
    sent = {"last": None}
    digest = hashlib.sha256()
    blocks = [pattern(i) for i in range(4)]

    def body():
        for i in range(BIG // MB):
            b = blocks[i % 4]
            digest.update(b)
            yield b
        sent["last"] = time.time()

    before = peak_rss(gw.proc.pid)
    with httpx.Client(base_url=gw.base, timeout=120) as c:
        r = c.post("/upload", content=body())
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["len"] == BIG and got["sha256"] == digest.hexdigest()
    assert got["te"] == "chunked" and got["cl"] is None  # a length nobody knew stays unknown
    # the worker had the first bytes before the client had sent its last
    assert got["first"] < sent["last"]
    grown = peak_rss(gw.proc.pid) - before
    assert grown < 16 * MB, f"the gateway's peak memory grew by {grown >> 20} MiB for a {BIG >> 20} MiB body"


def test_a_slow_worker_holds_the_client_back(upload_gw):
    """The worker reads 64 KiB pieces with a pause after each: the client
    is read only as fast, and the gateway holds no more than its window."""
    gw = upload_gw
    size = 24 * MB
    data = os.urandom(size)
    before = peak_rss(gw.proc.pid)
    r = requests.post(gw.base + "/upload?delay=0.002", data=iter(data[i:i + MB] for i in range(0, size, MB)),
                      timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["len"] == size and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    grown = peak_rss(gw.proc.pid) - before
    assert grown < 8 * MB, f"the gateway's peak memory grew by {grown >> 20} MiB"


def test_a_known_length_streams_with_its_length_and_the_connection_is_kept(upload_gw, tmp_path):
    gw = upload_gw
    f = tmp_path / "blob"
    data = os.urandom(8 * MB)
    f.write_bytes(data)
    with requests.Session() as s:
        for _ in range(2):  # the same connection carries a streamed body, then another
            with open(f, "rb") as fh:
                r = s.put(gw.base + "/upload", data=fh, timeout=60)
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["len"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()
            assert got["cl"] == str(len(data)) and got["te"] is None
        r = s.get(gw.base + "/health", timeout=10)
        assert r.status_code == 200


def test_expect_100_continue_with_curl(upload_gw, tmp_path):
    gw = upload_gw
    f = tmp_path / "blob"
    data = os.urandom(3 * MB)
    f.write_bytes(data)
    out = subprocess.run(["curl", "-sS", "-v", "--max-time", "60", "-H", "Expect: 100-continue",
                          "--data-binary", f"@{f}", gw.base + "/upload"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 100 Continue" in out.stderr
    got = json.loads(out.stdout)
    assert got["len"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()


def raw(gw):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    return s


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return status, hdrs, rest[:n]


def test_a_client_that_vanishes_mid_upload_cuts_the_workers_request(upload_gw):
    gw = upload_gw
    s = raw(gw)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: g\r\nContent-Length: 52428800\r\n\r\n")
    s.sendall(os.urandom(2 * MB))
    time.sleep(0.2)
    s.close()
    assert wait_for(lambda: any(p.name.startswith("cut-") for p in gw.evdir.iterdir()), 20), \
        "the worker never saw the request cut"
    n = int(next(p for p in gw.evdir.iterdir() if p.name.startswith("cut-")).read_text())
    assert 0 < n < 52428800
    r = httpx.post(gw.base + "/upload", content=b"x" * 1000, timeout=30)
    assert r.status_code == 200 and r.json()["len"] == 1000


def test_an_early_answer_reaches_the_client_and_the_connection_closes(upload_gw):
    gw = upload_gw
    s = raw(gw)
    s.sendall(b"POST /early HTTP/1.1\r\nHost: g\r\nContent-Length: 52428800\r\n\r\n")
    s.sendall(os.urandom(1 * MB))
    status, hdrs, body = read_response(s)
    assert status == 413, (status, body)
    assert json.loads(body)["error"]["message"] == "too large for us"
    # the rest of the body will never be read: the gateway ends the connection
    s.settimeout(10)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    s.close()
    assert httpx.get(gw.base + "/health", timeout=10).status_code == 200


def test_broken_chunk_framing_mid_stream_is_a_400_and_the_worker_sees_the_cut(upload_gw):
    gw = upload_gw
    s = raw(gw)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = os.urandom(512 * 1024)
    s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    time.sleep(0.3)
    s.sendall(b"zz\r\n")
    status, hdrs, body = read_response(s)
    assert status == 400
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and "chunk" in err["message"]
    assert hdrs.get("connection") == "close"
    s.close()
    assert wait_for(lambda: any(p.name.startswith("cut-") for p in gw.evdir.iterdir()), 20)


def test_a_streamed_body_over_the_limit_is_a_413(procs, asgi_server, tmp_path):
    evdir = tmp_path / "ev"
    evdir.mkdir()
    url = asgi_server(UPLOAD_APP, env={"EVDIR": str(evdir)})
    gw = procs.gateway([url], "--forward-paths", "/upload", "--health-check-endpoint", "/healthz",
                       "--max-payload-size", str(4 * MB), threads=1)

    def body():
        for _ in range(8):
            yield b"y" * MB
    try:
        r = httpx.post(gw.base + "/upload", content=body(), timeout=30)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    except httpx.HTTPError:
        pass  # the answer can lose the race with the client's write; the worker still sees the cut
    assert wait_for(lambda: any(p.name.startswith("cut-") for p in evdir.iterdir()), 20)
    assert httpx.get(gw.base + "/health", timeout=10).status_code == 200


def test_a_streamed_body_waits_in_the_queue_then_goes(procs, asgi_server, tmp_path):
    """One worker slot, held by a slow upload: the second upload queues,
    its first window waits in the gateway and the rest in the client's
    socket, and it goes through whole once the slot frees."""
    evdir = tmp_path / "ev"
    evdir.mkdir()
    url = asgi_server(UPLOAD_APP, env={"EVDIR": str(evdir)})
    gw = procs.gateway([url], "--forward-paths", "/upload", "--health-check-endpoint", "/healthz",
                       "--worker-max-inflight", "1", "--max-payload-size", str(1 << 30), threads=1)
    import concurrent.futures
    data = [os.urandom(6 * MB), os.urandom(6 * MB)]

    def up(i, delay):
        gen = (data[i][j:j + MB] for j in range(0, len(data[i]), MB))
        return requests.post(f"{gw.base}/upload?delay={delay}", data=gen, timeout=120)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        first = ex.submit(up, 0, "0.01")
        time.sleep(0.3)
        second = ex.submit(up, 1, "0")
        results = [first.result(), second.result()]
    for i, r in enumerate(results):
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data[i]).hexdigest()
    # the second waited for the first's slot: its bytes reached the worker after the first's ended
    assert results[1].json()["first"] >= results[0].json()["end"] - 0.05


def test_a_streamed_body_fails_over_when_a_worker_refuses_connections(procs, asgi_server, tmp_path):
    """Nothing of the body went out to a worker that refused the connection:
    the same body goes whole to the next worker."""
    evdir = tmp_path / "ev"
    evdir.mkdir()
    url = asgi_server(UPLOAD_APP, env={"EVDIR": str(evdir)})
    port = free_port()
    doomed = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "app_under_test:app", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path), "EVDIR": str(evdir)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    dead = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(dead), 30)
        # no health checks: only the connects find out that it died
        gw = procs.gateway([dead, url], "--forward-paths", "/upload", "--health-check-endpoint", "/healthz",
                           "--policy", "round_robin", "--health-check-interval-secs", "0",
                           "--max-payload-size", str(1 << 30), threads=1)
        assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 2, 10)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    data = os.urandom(4 * MB)
    for _ in range(4):  # round robin: some of them try the dead one first
        r = httpx.post(gw.base + "/upload", content=(data[j:j + MB] for j in range(0, len(data), MB)),
                       timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    text = httpx.get(gw.base + "/metrics").text
    failed = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                 if ln.startswith("infergate_worker_connect_failures_total{") and dead in ln)
    assert failed >= 1, "no upload ever tried the dead worker: the test did not test failover"


def _up(url):
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
