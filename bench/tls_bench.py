"""CPU per request over TLS: wrk over HTTPS to each proxy (infergate,
HAProxy, nginx), each proxy speaking HTTPS to the worker (an nginx
terminating TLS in front of the mock, the same for all, not measured), keep-
alive on both sides; the proxy's CPU per request, interleaved runs,
medians. Also the share of infergate's worker handshakes that resumed a
session, from its own counters, in a run where every worker connection
carries 50 requests (--upstream-max-requests-per-conn 50) so that new
connections keep coming. Writes bench/results/tls.md and .json and the
README section.

Usage: /usr/bin/python3 bench/tls_bench.py [--reps 3] [--duration 8]"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import benchlib
import httpx
from benchlib import CLK_TCK, LOAD_CORE, SERVER_CORE, run_wrk, stop, tree_cpu_ticks, write_results
from streams_bench import make_pki, start_tls_backend, start_tls_contender

PROXIES = ["infergate", "haproxy", "nginx"]


def run_wrk_tls(port, duration, conns, work):
    return run_wrk(port, duration, conns, work, scheme="https")


def handshakes(port, ca):
    text = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=ca).text
    get = lambda name: sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{"))  # noqa: E731
    return get("infergate_worker_tls_handshakes_total"), get("infergate_worker_tls_resumed_total")


def main():
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="igtls-")
    pki = make_pki(work)
    mock, ports = benchlib.start_mock("--worker-id", "bench", "--tokens", "8")
    backend, bport = start_tls_backend(ports[0], work, pki, 2000)
    subprocess.run(["taskset", "-p", "-c", SERVER_CORE, str(backend.pid)], capture_output=True)
    runs = {n: [] for n in PROXIES}
    try:
        for rep in range(args.reps):
            for name in PROXIES:
                d = tempfile.mkdtemp(dir=work)
                p, port = start_tls_contender(name, bport, d, pki, 0)
                try:
                    run_wrk_tls(port, 1, args.connections, d)  # warm-up: pools, sessions
                    t0 = tree_cpu_ticks(p.pid)
                    r = run_wrk_tls(port, args.duration, args.connections, d)
                    r["cpu_us_per_req"] = (tree_cpu_ticks(p.pid) - t0) * 1e6 / CLK_TCK / max(r["requests"], 1)
                finally:
                    stop(p)
                runs[name].append(r)
                print(f"[{rep}] {name:10s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                      f"cpu {r['cpu_us_per_req']:.1f} us/req  errors {r['errors']}", flush=True)
        # resumption: infergate with worker connections that keep being replaced
        d = tempfile.mkdtemp(dir=work)
        p, port = start_tls_contender("infergate", bport, d, pki, 0, extra=["--upstream-max-requests-per-conn", "50"])
        try:
            run_wrk_tls(port, args.duration, args.connections, d)
            full, resumed = handshakes(port, pki["ca.pem"])
        finally:
            stop(p)
    finally:
        stop(backend)
        stop(mock)
        shutil.rmtree(work, ignore_errors=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
           for n, rs in runs.items()}
    ref = med["haproxy"]
    t = ["| proxy | requests/s | vs HAProxy | p50 ms | p99 ms | proxy CPU µs/request | CPU vs HAProxy | CPU range over runs |"
         " errors |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in PROXIES:
        m, rs = med[n], runs[n]
        lo, hi = min(r["cpu_us_per_req"] for r in rs), max(r["cpu_us_per_req"] for r in rs)
        t.append(f"| {n} | {m['rps']:.0f} | {m['rps'] / ref['rps']:.2f}x | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                 f"{m['cpu_us_per_req']:.1f} | {m['cpu_us_per_req'] / ref['cpu_us_per_req']:.2f}x | "
                 f"{lo / ref['cpu_us_per_req']:.2f}-{hi / ref['cpu_us_per_req']:.2f}x | {sum(r['errors'] for r in rs)} |")
    share = resumed / max(1, full + resumed)
    meta = (f"wrk -t1 -c{args.connections} -d{args.duration}s over HTTPS (TLS 1.3, ECDSA P-256), POST "
            f"/v1/chat/completions to one mock worker behind an nginx terminating TLS (the proxy checks its "
            f"certificate), keep-alive on both sides; wrk on core {LOAD_CORE}, proxy and backend on core "
            f"{SERVER_CORE}; one thread or process per proxy; medians of {args.reps} interleaved runs; measured "
            f"{time.strftime('%Y-%m-%d')}.")
    res = (f"Worker handshakes that resumed a session, with every worker connection retired after 50 requests: "
           f"{int(resumed)} of {int(full + resumed)} ({share:.1%}).")
    body = meta + "\n\n" + "\n".join(t) + "\n\n" + res + "\n"
    write_results("tls", "CPU per request over TLS", body,
                  {"meta": meta, "runs": runs, "medians": med, "handshakes_full": full,
                   "handshakes_resumed": resumed})


if __name__ == "__main__":
    main()
