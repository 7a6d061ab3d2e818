"""Overload: offered load twice the fleet's capacity. Four mock workers each
take 4 requests at once (503 beyond, like an inference server with full
batch slots); 32 closed-loop wrk connections post chat requests that take
about 100 ms. infergate (caps + queue) vs HAProxy (maxconn per server + its
queue) vs nginx (max_conns; the queue is an NGINX Plus feature). Writes
bench/results/overload.md and the README section.

Usage: /usr/bin/python3 bench/overload_bench.py [--duration S] [--reps N]"""
import argparse
import json
import os
import re
import statistics
import shutil
import tempfile
import time
import urllib.request

import benchlib
from benchlib import (haproxy_conf, BUILD, ROOT, free_port, nginx_conf, pinned, run_wrk, start_mock, stop, update_readme,
                      wait_port)

CAP, WORKERS, CONNS = 4, 4, 32


def start(name, ports, work, caps):
    port = free_port()
    ups = [f"127.0.0.1:{p}" for p in ports]
    if name == "infergate":
        p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                    "--log-level", "warn", "--worker-max-inflight", str(CAP if caps else 0),
                    "--queue-timeout-secs", "60",
                    "--health-check-interval-secs", "0", "--worker-urls", *["http://" + u for u in ups]])
    elif name == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        servers = "\n".join(f"    server s{i} {u}" + (f" maxconn {CAP}" if caps else "") for i, u in enumerate(ups))
        with open(cfg, "w") as f:
            f.write(haproxy_conf(port, "    balance leastconn\n" + servers, queue_timeout=True))
        p = pinned(["haproxy", "-db", "-f", cfg])
    elif name == "nginx":
        cfg = os.path.join(work, "nginx.conf")
        servers = "\n".join(f"        server {u}" + (f" max_conns={CAP}" if caps else "") + ";" for u in ups)
        with open(cfg, "w") as f:
            f.write(nginx_conf(work, port, f"    upstream be {{\n        least_conn;\n{servers}\n        keepalive 64;\n    }}"))
        p = pinned(["nginx", "-c", cfg, "-p", work])
    wait_port(port)
    return p, port


def queue_wait_p99(port):
    """p99 of infergate's queue-wait histogram (bucket upper bound)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), float(m.group(2)))
               for m in re.finditer(r'infergate_queue_wait_seconds_bucket\{le="([^"]+)"\} (\S+)', text)]
    total = buckets[-1][1] if buckets else 0
    for le, cum in buckets:
        if total and cum >= 0.99 * total:
            return le * 1000
    return 0.0


def main():
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="igover-")
    mocks = [start_mock("--max-inflight", CAP, "--token-interval-ms", 10, "--tokens", 10) for _ in range(WORKERS)]
    ports = [m[1][0] for m in mocks]
    names = ["infergate", "haproxy", "nginx"]
    scenarios = [("caps configured in the proxy", True), ("caps unknown: the workers answer 503 when full", False)]
    runs = {(sc, n): [] for sc, _ in scenarios for n in names}
    try:
        for rep in range(args.reps):
            for sc, caps in scenarios:
                for name in names:
                    p, port = start(name, ports, work, caps)
                    r = run_wrk(port, args.duration, CONNS, work)
                    r["queue_p99_ms"] = queue_wait_p99(port) if name == "infergate" else None
                    r["completed_per_s"] = (r["requests"] - r["errors"]) / args.duration
                    runs[(sc, name)].append(r)
                    print(f"[{rep}] {sc[:12]:12s} {name:10s} completed {r['completed_per_s']:7.1f}/s  "
                          f"errors {r['errors']}  p50 {r['p50_ms']:.0f} ms  p99 {r['p99_ms']:.0f} ms", flush=True)
                    stop(p)
    finally:
        for m, _ in mocks:
            stop(m)
        shutil.rmtree(work, ignore_errors=True)
    rows = ["| scenario | proxy | completed requests/s | vs HAProxy | errors (non-2xx + socket) | p50 ms | p99 ms | p99 queue wait ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for sc, _ in scenarios:
        ref = statistics.median(r["completed_per_s"] for r in runs[(sc, "haproxy")])
        for name in names:
            rs = runs[(sc, name)]
            comp = statistics.median(r["completed_per_s"] for r in rs)
            q = rs[0]["queue_p99_ms"]
            rows.append(f"| {sc} | {name} | {comp:.1f} | {comp / ref:.2f}x | {sum(r['errors'] for r in rs)} | "
                        f"{statistics.median(r['p50_ms'] for r in rs):.0f} | {statistics.median(r['p99_ms'] for r in rs):.0f} | "
                        f"{'≤ %.0f' % q if q is not None else 'n/a'} |")
    meta = (f"{WORKERS} mock workers, each {CAP} requests at once (503 beyond), requests of ~80 ms (10 tokens × 10 ms); "
            f"wrk -t1 -c{CONNS} -d{args.duration}s: offered concurrency {CONNS / (WORKERS * CAP):.0f}x the fleet's "
            f"{WORKERS * CAP} slots; medians of {args.reps} runs, errors summed; queue wait from infergate's histogram "
            f"(bucket bound); measured {time.strftime('%Y-%m-%d')}.")
    body = meta + "\n\n" + "\n".join(rows) + "\n"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    open(os.path.join(ROOT, "bench", "results", "overload.md"), "w").write("# Overload\n\n" + body)
    json.dump({"meta": meta, "runs": {f"{k[0]} / {k[1]}": v for k, v in runs.items()}}, open(os.path.join(ROOT, "bench", "results", "overload.json"), "w"), indent=2)
    update_readme("overload", body)
    print(body)


if __name__ == "__main__":
    main()
