"""The spread over a real pre-fork server: `uvicorn --workers K` (or gunicorn
with its UvicornWorker) running bench/prefork_app.py, whose processes each
hold a Semaphore(SLOTS) in front of awaited work (or a busy loop with --cpu),
answering with their pid (also in x-backend-pid). 64 aiohttp clients POST
/run through infergate (--forward-paths /run, --worker-max-inflight): a
warm-up burst, then the measured run (--per-client requests each, or
--duration seconds). Prints each process's share of the fair load, the
measured run's requests that opened a new connection, and with --events the
share of time some process had requests waiting on its semaphore while
another had a free slot. Extra arguments go to infergate, e.g.
--upstream-process-header x-backend-pid. bench/spread_bench.py uses the
same pieces for its table against HAProxy.

Usage: /usr/bin/python3 bench/spread_real_bench.py [--processes 8] [--slots 4]
         [--work 0.05 | --work-min 0.5 --work-max 5] [--per-client 40 | --duration 30]
         [--cpu] [--server gunicorn] [--events] [-- GATEWAY ARGS]"""
import argparse
import asyncio
import collections
import os
import signal
import subprocess
import tempfile
import time

import aiohttp
import httpx

from benchlib import BUILD, free_port
from prefork_app import APP, busy_shares, waiting_while_free


def up(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_prefork(server, processes, env):
    """The pre-fork server with every process up: (Popen, port, work dir)."""
    work = tempfile.mkdtemp(prefix="igspread-")
    with open(os.path.join(work, "semapp.py"), "w") as f:
        f.write(APP)
    port = free_port()
    if server == "uvicorn":
        cmd = ["/usr/bin/python3", "-m", "uvicorn", "semapp:app", "--workers", str(processes),
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = ["/usr/bin/python3", "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", str(processes),
               "-b", f"127.0.0.1:{port}", "--log-level", "warning", "semapp:app"]
    srv = subprocess.Popen(cmd, cwd=work, env={**os.environ, **env}, start_new_session=True)
    seen, end = set(), time.time() + 120
    while len(seen) < processes and time.time() < end:
        try:
            seen.add(httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"connection": "close"},
                               timeout=1).json()["pid"])
        except httpx.HTTPError:
            time.sleep(0.1)
    return srv, port, work


def start_infergate(port, max_inflight, *extra):
    gport = free_port()
    gw = subprocess.Popen([os.path.join(BUILD, "infergate"), "--port", str(gport), "--threads", "2",
                           "--log-level", "error", "--worker-urls", f"http://127.0.0.1:{port}",
                           "--forward-paths", "/run", "--worker-max-inflight", str(max_inflight),
                           "--health-check-endpoint", "/healthz", *extra], start_new_session=True)
    while not up(f"http://127.0.0.1:{gport}/health"):
        time.sleep(0.1)
    return gw, f"http://127.0.0.1:{gport}"


def infergate_conns(base):
    return httpx.get(f"{base}/workers").json()["workers"][0]["connections"]["opened"]


def kill(p):
    if p:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait()


def drive(base, clients, per_client=None, duration=None):
    pids = collections.Counter()

    async def main():
        end = time.time() + duration if duration else None
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=None)) as s:
            async def client():
                n = 0
                while (n < per_client) if per_client else (time.time() < end):
                    async with s.post("/run", data=b"x") as r:
                        pids[(await r.json())["pid"]] += 1
                    n += 1
            await asyncio.gather(*[client() for _ in range(clients)])
    asyncio.run(main())
    return pids


def shares(pids, processes):
    total = sum(pids.values())
    fair = total / processes
    return sorted([pids[p] / fair for p in pids] + [0.0] * (processes - len(pids)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--work", type=float, default=0.05)
    ap.add_argument("--work-min", type=float)
    ap.add_argument("--work-max", type=float)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--server", choices=["uvicorn", "gunicorn"], default="uvicorn")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--warm", type=int, default=8, help="warm-up requests per client")
    ap.add_argument("--per-client", type=int, default=40)
    ap.add_argument("--duration", type=float, help="measure for this long instead of --per-client")
    ap.add_argument("--max-inflight", type=int, default=32)
    ap.add_argument("--events", action="store_true", help="measure waiting while another process has a free slot")
    ap.add_argument("gateway_args", nargs="*")
    a = ap.parse_args()
    env = {"SLOTS": str(a.slots), "WORK": str(a.work), "MODE": "cpu" if a.cpu else "sleep"}
    if a.work_min is not None:
        env.update(WORK_MIN=str(a.work_min), WORK_MAX=str(a.work_max or a.work_min))
    evdir = tempfile.mkdtemp(prefix="igevents-")
    if a.events:
        env["EVDIR"] = evdir
    srv, port, _ = start_prefork(a.server, a.processes, env)
    gw = None
    try:
        gw, base = start_infergate(port, a.max_inflight, *a.gateway_args)
        if a.warm:
            drive(base, a.clients, per_client=a.warm)
        before = infergate_conns(base)
        t = time.time()
        pids = drive(base, a.clients, per_client=None if a.duration else a.per_client, duration=a.duration)
        took = time.time() - t
        total = sum(pids.values())
        s = shares(pids, a.processes)
        waited = ""
        if a.events:
            b = busy_shares(evdir, a.processes, t, t + took)
            waited = (f"; waiting while a slot was free {100 * waiting_while_free(evdir, a.processes, a.slots, t, t + took):.1f}% "
                      f"of the time; shares of the work done {b[0]:.2f}-{b[-1]:.2f}x")
        print(f"shares {s[0]:.2f}-{s[-1]:.2f}x of fair ({', '.join(f'{x:.2f}' for x in s)}); "
              f"new connections {100 * (infergate_conns(base) - before) / total:.1f}% of {total} requests"
              f"{waited}; {took:.1f} s")
    finally:
        kill(gw)
        kill(srv)


if __name__ == "__main__":
    main()
