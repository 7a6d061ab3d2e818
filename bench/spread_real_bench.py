"""The spread over a real pre-fork server: `uvicorn --workers K` running a
Starlette app whose processes each hold a Semaphore(SLOTS) in front of WORK
seconds of awaited work (or a busy loop with --cpu), answering with their pid
(also in x-backend-pid). 64 aiohttp clients POST /run through infergate
(--forward-paths /run, --worker-max-inflight); prints each process's share of
the fair load and the requests that opened a new connection. Extra arguments
go to infergate, e.g. --upstream-process-header x-backend-pid.

Usage: /usr/bin/python3 bench/spread_real_bench.py [--processes 8] [--per-client 40] [--cpu] [-- GATEWAY ARGS]"""
import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp
import httpx

from benchlib import BUILD, free_port

APP = '''
import asyncio, os, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
SLOTS = int(os.environ["SLOTS"]); WORK = float(os.environ["WORK"]); CPU = os.environ.get("CPU") == "1"
sem = asyncio.Semaphore(SLOTS)
async def run(request):
    await request.body()
    async with sem:
        if CPU:
            t = time.perf_counter()
            while time.perf_counter() - t < WORK:
                pass
        else:
            await asyncio.sleep(WORK)
    return JSONResponse({"pid": os.getpid()}, headers={"x-backend-pid": str(os.getpid())})
async def healthz(request):
    return JSONResponse({"ok": True})
app = Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)])
'''


def up(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--work", type=float, default=0.05)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--per-client", type=int, default=40)
    ap.add_argument("--max-inflight", type=int, default=32)
    ap.add_argument("gateway_args", nargs="*")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="igspread-")
    with open(os.path.join(work, "semapp.py"), "w") as f:
        f.write(APP)
    port, gport = free_port(), free_port()
    env = {**os.environ, "SLOTS": str(a.slots), "WORK": str(a.work), "CPU": "1" if a.cpu else "0"}
    srv = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "semapp:app", "--workers", str(a.processes),
                            "--port", str(port), "--log-level", "warning"], cwd=work, env=env, start_new_session=True)
    gw = None
    try:
        while not up(f"http://127.0.0.1:{port}/healthz"):
            time.sleep(0.2)
        time.sleep(1.0)  # every process up
        gw = subprocess.Popen([os.path.join(BUILD, "infergate"), "--port", str(gport), "--threads", "2",
                               "--log-level", "warn", "--worker-urls", f"http://127.0.0.1:{port}",
                               "--forward-paths", "/run", "--worker-max-inflight", str(a.max_inflight),
                               "--health-check-endpoint", "/healthz", *a.gateway_args], start_new_session=True)
        while not up(f"http://127.0.0.1:{gport}/health"):
            time.sleep(0.1)
        pids = collections.Counter()

        async def drive():
            async with aiohttp.ClientSession(f"http://127.0.0.1:{gport}") as s:
                async def client():
                    for _ in range(a.per_client):
                        async with s.post("/run", data=b"x") as r:
                            pids[(await r.json())["pid"]] += 1
                await asyncio.gather(*[client() for _ in range(a.clients)])
        t = time.time()
        asyncio.run(drive())
        took = time.time() - t
        w = httpx.get(f"http://127.0.0.1:{gport}/workers").json()["workers"][0]
        total = sum(pids.values())
        fair = total / a.processes
        shares = sorted([pids[p] / fair for p in pids] + [0.0] * (a.processes - len(pids)))
        print(f"shares {shares[0]:.2f}-{shares[-1]:.2f}x of fair ({', '.join(f'{s:.2f}' for s in shares)}); "
              f"new connections {100 * w['connections']['opened'] / total:.1f}% of {total} requests; "
              f"{took:.1f} s (ideal {total * a.work / (a.processes * a.slots):.1f} s)")
    finally:
        for p in (gw, srv):
            if p:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()


if __name__ == "__main__":
    main()
