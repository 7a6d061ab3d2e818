"""One worker address, K processes behind it sharing one socket: how
requests spread over the processes, and how many requests open a new
connection. On real servers (Debian's `uvicorn --workers 8` and `gunicorn -k
uvicorn.workers.UvicornWorker -w 8` running bench/prefork_app.py, each
process a Semaphore(4) in front of 50 ms of awaited work or 10 ms of CPU, 64
clients after a warm-up burst, 32 requests in flight at most): a connection
per request, HAProxy's keep-alive pool, infergate's plain pool, its default
(--upstream-spread latency) and --upstream-process-header. On the mock
(infergate-mockworker --processes 8, busy or idle processes): keep-alive off,
the plain pool, the default. Writes bench/results/spread.md and the README
section.

Usage: /usr/bin/python3 bench/spread_bench.py [--per-client N] [--runs R]"""
import argparse
import asyncio
import csv
import io
import os
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import aiohttp  # noqa: E402
from benchlib import free_port, haproxy_conf, wait_port, write_results  # noqa: E402
from conftest import Gateway, Worker, chat_body  # noqa: E402
from spread_real_bench import drive, infergate_conns, kill, shares, start_infergate, start_prefork  # noqa: E402

K, CLIENTS, TOKENS, INTERVAL_MS = 8, 64, 5, 10


def run(extra, cpu_us, per_client):
    """Requests per process relative to a fair share, and % of requests on a new connection."""
    w = Worker("--processes", str(K), "--token-interval-ms", str(INTERVAL_MS),
               "--cpu-us-per-token", str(cpu_us), worker_id="w1")
    g = Gateway([w], *extra, threads=2)

    async def main():
        async with aiohttp.ClientSession(g.base) as s:
            async def client():
                for _ in range(per_client):
                    async with s.post("/v1/chat/completions",
                                      json=chat_body(max_tokens=TOKENS, stream=True)) as r:
                        assert r.status == 200
                        async for _ in r.content:
                            pass
            await asyncio.gather(*[client() for _ in range(CLIENTS)])

    before = w.stats()
    asyncio.run(main())
    st = w.stats()
    g.stop()
    w.stop()
    reqs = [p["requests"] - b["requests"] for p, b in zip(st["processes"], before["processes"])]
    total = sum(reqs)
    fair = total / K
    return {"share": [round(r / fair, 2) for r in reqs], "min": min(reqs) / fair, "max": max(reqs) / fair,
            "new_conn_pct": 100 * (st["connections"] - before["connections"]) / total, "requests": total}


REAL_CLIENTS, REAL_INFLIGHT, REAL_WARM, REAL_PER_CLIENT = 64, 32, 8, 40


def haproxy_conns(stats_url):
    """Connections HAProxy opened to the server so far."""
    rows = csv.reader(io.StringIO(httpx.get(stats_url).text.lstrip("# ")))
    head = next(rows)
    for r in rows:
        if r and r[0] == "be" and r[1] == "s1":
            return int(r[head.index("connect")])
    raise RuntimeError("no server row in HAProxy's stats")


def start_haproxy(port):
    hport, sport = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="ighaproxy-")
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(haproxy_conf(hport, f"    server s1 127.0.0.1:{port} maxconn {REAL_INFLIGHT}", queue_timeout=True) +
                f"frontend stats\n    bind 127.0.0.1:{sport}\n    stats enable\n    stats uri /stats\n")
    p = subprocess.Popen(["haproxy", "-f", cfg], start_new_session=True, stdout=subprocess.DEVNULL)
    wait_port(hport)
    return p, f"http://127.0.0.1:{hport}", f"http://127.0.0.1:{sport}/stats;csv"


def run_real(server, mode, config):
    """One real-server run: shares and % of the measured requests on a new connection."""
    env = {"SLOTS": "4", "MODE": mode, "WORK": "0.05" if mode == "sleep" else "0.01"}
    srv, port, _ = start_prefork(server, K, env)
    proxy = None
    try:
        if config == "haproxy":
            proxy, base, stats = start_haproxy(port)
            conns = lambda: haproxy_conns(stats)  # noqa: E731
        else:
            extra = {"per-request": ["--upstream-max-requests-per-conn", "1"], "plain": ["--upstream-spread", "off"],
                     "default": [], "header": ["--upstream-process-header", "x-backend-pid"]}[config]
            proxy, base = start_infergate(port, REAL_INFLIGHT, *extra)
            conns = lambda: infergate_conns(base)  # noqa: E731
        drive(base, REAL_CLIENTS, per_client=REAL_WARM)
        before = conns()
        pids = drive(base, REAL_CLIENTS, per_client=REAL_PER_CLIENT)
        total = sum(pids.values())
        s = shares(pids, K)
        return {"min": s[0], "max": s[-1], "share": [round(x, 2) for x in s],
                "new_conn_pct": 100 * (conns() - before) / total, "requests": total}
    finally:
        kill(proxy)
        kill(srv)


REAL_CONFIGS = [("per-request", "a connection per request (infergate --upstream-max-requests-per-conn 1)"),
                ("haproxy", "HAProxy 2.6 keep-alive pool (http-reuse always, maxconn 32)"),
                ("plain", "infergate plain pool (--upstream-spread off)"),
                ("default", "infergate default (--upstream-spread latency)"),
                ("header", "infergate --upstream-process-header x-backend-pid")]
REAL_SERVERS = [("uvicorn", "sleep", "uvicorn --workers 8, 50 ms awaited"),
                ("uvicorn", "cpu", "uvicorn --workers 8, 10 ms CPU"),
                ("gunicorn", "sleep", "gunicorn UvicornWorker -w 8, 50 ms awaited")]


def span(vals, unit="x", digits=2):
    lo, hi = f"{min(vals):.{digits}f}", f"{max(vals):.{digits}f}"
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-client", type=int, default=100, help="mock rows: requests per client")
    ap.add_argument("--runs", type=int, default=2, help="real-server rows: runs of each, shown as ranges")
    args = ap.parse_args()
    real_rows = ["| server | pooling | min share | max share | requests on a new connection |",
                 "|---|---|---:|---:|---:|"]
    results = []
    for server, mode, label in REAL_SERVERS:
        for key, name in REAL_CONFIGS:
            rs = [run_real(server, mode, key) for _ in range(args.runs)]
            for r in rs:
                r.update(config=name, server=label)
            results.extend(rs)
            line = (f"| {label} | {name} | {span([r['min'] for r in rs])} | {span([r['max'] for r in rs])} | "
                    f"{span([r['new_conn_pct'] for r in rs], '%', 1)} |")
            print(line, flush=True)
            real_rows.append(line)
    configs = [("keep-alive off (a connection per request)", ["--upstream-max-requests-per-conn", "1"]),
               ("plain keep-alive pool", ["--upstream-spread", "off"]),
               ("infergate default (--upstream-spread latency)", [])]
    rows = ["| processes | pooling | min share | max share | requests on a new connection |",
            "|---|---|---:|---:|---:|"]
    for cpu_us, label in ((300, "busy: 300 µs CPU per token"), (0, "idle: no CPU per token")):
        for name, extra in configs:
            r = run(extra, cpu_us, args.per_client)
            r.update(config=name, processes=label)
            results.append(r)
            print(f"{label:28s} {name:46s} {r['min']:.2f}-{r['max']:.2f}x  new {r['new_conn_pct']:.1f}%", flush=True)
            rows.append(f"| {label} | {name} | {r['min']:.2f}x | {r['max']:.2f}x | {r['new_conn_pct']:.1f}% |")
    real_meta = (f"Real servers: {K} processes of Debian's uvicorn or gunicorn (UvicornWorker) running "
                 f"bench/prefork_app.py, each a Semaphore(4) in front of its work, {REAL_CLIENTS} aiohttp clients "
                 f"POSTing /run, {REAL_INFLIGHT} requests in flight at most (infergate --worker-max-inflight, "
                 f"HAProxy maxconn), a warm-up of {REAL_WARM} requests per client, then {REAL_PER_CLIENT} each "
                 f"measured; share = a process's requests / (all / {K}); new connections counted in the measured "
                 f"part; {args.runs} runs each as ranges; measured {time.strftime('%Y-%m-%d')}.")
    meta = (f"Mock: {K} processes sharing one listening socket (infergate-mockworker --processes {K}), {CLIENTS} "
            f"concurrent streaming clients, {args.per_client} requests each ({TOKENS} tokens, {INTERVAL_MS} ms apart).")
    body = real_meta + "\n\n" + "\n".join(real_rows) + "\n\n" + meta + "\n\n" + "\n".join(rows) + "\n"
    write_results("spread", "Spreading over the processes behind one address", body,
                  {"meta": real_meta + " " + meta, "results": results})


if __name__ == "__main__":
    main()
