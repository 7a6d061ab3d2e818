"""Delayed ACKs between a proxy and a worker that writes a response's head
and body separately without TCP_NODELAY (uvicorn on uvloop, many hand-written
servers: uvicorn#3149): the body waits for the head's ACK, and a delayed ACK
costs up to 40 ms per request. 60 sequential requests of an httpx client,
direct to such a worker and through infergate (this build, and an older one
if IG_OLD_BUILD names it), and the same against Debian's uvicorn.

Usage: /usr/bin/python3 bench/ack_bench.py"""
import datetime
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from benchlib import BUILD, free_port, stop, wait_port, write_results

N = 60


def head_then_body_worker(port):
    """A worker that sends the head, then the body, as two writes, Nagle on."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def serve(c):
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                return
            buf += d
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v)
                while len(rest) < n:
                    rest += c.recv(65536)
                buf = rest[n:]
                body = b'{"object":"list","data":[{"id":"m"}]}' if head.startswith(b"GET /v1/models") else b'{"ok":1}'
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
                time.sleep(0.0005)  # the handler's own work between the two writes
                c.sendall(body)

    def accept():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()


UVICORN_APP = '''
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def comp(request):
    await request.body()
    return JSONResponse({"ok": 1})
async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": "m"}]})
app = Starlette(routes=[Route("/v1/completions", comp, methods=["POST"]), Route("/v1/models", models)])
'''


def median_ms(base):
    with httpx.Client(base_url=base, timeout=30) as c:
        c.post("/v1/completions", json={"model": "m", "prompt": "x"})
        ts = []
        for _ in range(N):
            t = time.perf_counter()
            r = c.post("/v1/completions", json={"model": "m", "prompt": "x"})
            ts.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return statistics.median(ts) * 1000


def gateway(build, worker_port):
    port = free_port()
    p = subprocess.Popen([os.path.join(build, "infergate"), "--port", str(port), "--threads", "1", "--log-level",
                          "warn", "--worker-urls", f"http://127.0.0.1:{worker_port}"], start_new_session=True)
    wait_port(port)
    return p, f"http://127.0.0.1:{port}"


def main():
    wport = free_port()
    head_then_body_worker(wport)
    wait_port(wport)
    work = tempfile.mkdtemp(prefix="igack-")
    with open(os.path.join(work, "ackapp.py"), "w") as f:
        f.write(UVICORN_APP)
    uport = free_port()
    uv = subprocess.Popen([sys.executable if sys.executable.startswith("/usr/bin") else "/usr/bin/python3", "-m",
                           "uvicorn", "ackapp:app", "--port", str(uport), "--log-level", "warning"], cwd=work,
                          start_new_session=True)
    wait_port(uport)
    builds = [("infergate", BUILD)]
    if os.environ.get("IG_OLD_BUILD"):
        builds.append(("infergate before (no quick ACK to workers)", os.environ["IG_OLD_BUILD"]))
    rows = []
    try:
        for wname, port in (("head, then body, Nagle on", wport), ("Debian uvicorn (asyncio)", uport)):
            direct = median_ms(f"http://127.0.0.1:{port}")
            rows.append((wname, "httpx direct", direct))
            for bname, build in builds:
                p, base = gateway(build, port)
                try:
                    rows.append((wname, f"httpx through {bname}", median_ms(base)))
                finally:
                    stop(p)
    finally:
        stop(uv)
    best = min(r[2] for r in rows)
    t = ["| worker | path | median per request | vs the fastest |", "|---|---|---:|---:|"]
    for w, path, ms in rows:
        t.append(f"| {w} | {path} | {ms:.2f} ms | {ms / best:.1f}x |")
    meta = (f"{N} sequential POSTs of one pooled httpx client, ~0.5 ms of worker work; measured "
            f"{datetime.date.today().isoformat()}. httpx itself writes head and body separately, so a direct "
            "client pays the worker's delayed ACK too.")
    write_results("ack", "Delayed ACKs to workers", meta + "\n\n" + "\n".join(t) + "\n",
                  {"meta": meta, "rows": [{"worker": w, "path": p, "median_ms": m} for w, p, m in rows]})


if __name__ == "__main__":
    main()
