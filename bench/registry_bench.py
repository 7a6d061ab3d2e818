"""Routing cost and registry churn, end to end. One mock process listens on
100 ports (100 workers); infergate (one thread) and the mock share the server
core, wrk runs on the other. Then requests/s with and without 100 registry
changes per second. Writes bench/results/registry.md and the README section.

Usage: /usr/bin/python3 bench/registry_bench.py [--duration S]"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import shutil
import tempfile
import threading
import time

import benchlib
from benchlib import (BUILD, ROOT, cpu_us_per_request, free_port, pinned, run_wrk, start_mock, stop,
                      update_readme, wait_port)

POLICIES = ["round_robin", "random", "power_of_two", "least_load"]


def start_gateway(urls, policy, extra=()):
    port = free_port()
    p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                "--log-level", "warn", "--policy", policy, "--health-check-interval-secs", "0",
                "--worker-urls", *urls, *extra])
    wait_port(port)
    return p, port


def churn(port, urls, rate, stop_evt, count, model="mock-model"):
    """Add and remove workers at `rate` changes per second through the admin API.
    Requests are prebuilt bytes on one raw keep-alive socket: the driver shares
    the load core with wrk and must cost it as little as possible."""
    adds = []
    for url in urls:
        body = json.dumps({"url": url, "model_id": model}).encode()
        adds.append(b"POST /workers HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""

    def response():
        nonlocal buf
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                if len(rest) >= n:
                    buf = rest[n:]
                    return rest[:n]
            buf += s.recv(65536)

    i, next_t = 0, time.time()
    while not stop_evt.is_set():
        s.sendall(adds[i % len(adds)])
        wid = re.search(rb'"id":"(w\d+)"', response()).group(1)
        s.sendall(b"DELETE /workers/%s HTTP/1.1\r\nHost: x\r\n\r\n" % wid)
        response()
        count[0] += 2
        i += 1
        next_t += 2.0 / rate
        time.sleep(max(0.0, next_t - time.time()))
    s.close()


def median(runs):
    out = {}
    for k in ("rps", "cpu_us_per_req", "changes_per_sec"):
        if k in runs[0]:
            out[k] = statistics.median(r[k] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    out["runs"] = [{k: r[k] for k in ("rps", "cpu_us_per_req")} for r in runs]
    return out


def main():
    # the driver (and its churn thread) must not take CPU from the server core
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--route-only", action="store_true",
                    help="rerun bench/route_bench.c only; keep the end-to-end tables of the last run")
    args = ap.parse_args()
    if args.route_only:
        with open(os.path.join(ROOT, "bench", "results", "registry.json")) as f:
            last = json.load(f)
        write(last["by_size"], last["churn"], run_route_bench(), args, last["meta"])
        return
    work = tempfile.mkdtemp(prefix="igreg-")
    mock, ports = start_mock("--ports", "104", "--tokens", "8")
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    # the machine is small and shared: every configuration runs REPS times,
    # interleaved, and the tables show medians
    size_cfgs = [(n, policy) for n in (1, 100) for policy in POLICIES]
    # no churn; churn of workers for another model (the registry's own cost:
    # snapshots, reclamation, admin requests); churn of workers that take this
    # traffic (which also opens connections to every worker added)
    churn_cfgs = [("none", 0, None), ("other model", 100, "churn-model"), ("same model", 100, "mock-model")]
    size_runs = {c: [] for c in size_cfgs}
    churn_runs = {c: [] for c in churn_cfgs}
    try:
        for rep in range(args.reps):
            for n, policy in size_cfgs:
                gw, gport = start_gateway(urls[:n], policy)
                run_wrk(gport, 1, 64, work)
                r = cpu_us_per_request(gw.pid, lambda: run_wrk(gport, args.duration, 64, work))
                stop(gw)
                size_runs[(n, policy)].append(r)
                print(f"[{rep}] {n:4d} workers {policy:13s} {r['rps']:9.0f} req/s  "
                      f"{r['cpu_us_per_req']:.1f} us/req  errors {r['errors']}", flush=True)
            for cfg in churn_cfgs:
                label, rate, model = cfg
                gw, gport = start_gateway(urls[:8], "least_load")
                run_wrk(gport, 1, 64, work)
                stop_evt, count = threading.Event(), [0]
                t = threading.Thread(target=churn, args=(gport, urls[100:104], rate, stop_evt, count, model))
                if rate:
                    t.start()
                t0 = time.time()
                r = cpu_us_per_request(gw.pid, lambda: run_wrk(gport, args.duration, 64, work))
                elapsed = time.time() - t0
                stop_evt.set()
                if rate:
                    t.join()
                stop(gw)
                r["changes_per_sec"] = count[0] / elapsed
                churn_runs[cfg].append(r)
                print(f"[{rep}] churn {label:12s} {r['changes_per_sec']:5.0f}/s  {r['rps']:9.0f} req/s  "
                      f"{r['cpu_us_per_req']:.1f} us/req  errors {r['errors']}", flush=True)
    finally:
        stop(mock)
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"workers": n, "policy": p, **median(size_runs[(n, p)])} for n, p in size_cfgs]
    churn_rows = [{"churn": c[0], **median(churn_runs[c])} for c in churn_cfgs]
    write(rows, churn_rows, run_route_bench(), args)


def run_route_bench():
    out = subprocess.run(["taskset", "-c", "1", os.path.join(BUILD, "route_bench")],
                         capture_output=True, text=True, check=True).stdout
    return out.strip() + f"\n\n(route_bench measured {time.strftime('%Y-%m-%d')})"


def write(rows, churn_rows, route, args, meta=None):
    base = {r["policy"]: r for r in rows if r["workers"] == 1}
    t1 = ["| workers | policy | requests/s | vs 1 worker | CPU µs/request | vs 1 worker | errors |",
          "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base[r["policy"]]
        t1.append(f"| {r['workers']} | {r['policy']} | {r['rps']:.0f} | {r['rps'] / b['rps']:.2f}x | "
                  f"{r['cpu_us_per_req']:.1f} | {r['cpu_us_per_req'] / b['cpu_us_per_req']:.2f}x | {r['errors']} |")
    c0 = churn_rows[0]
    t2 = ["| churned workers serve | registry changes/s | requests/s | vs no churn | CPU µs/request | vs no churn | errors |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for r in churn_rows:
        t2.append(f"| {r['churn']} | {r['changes_per_sec']:.0f} | {r['rps']:.0f} | {r['rps'] / c0['rps']:.2f}x | "
                  f"{r['cpu_us_per_req']:.1f} | {r['cpu_us_per_req'] / c0['cpu_us_per_req']:.2f}x | {r['errors']} |")
    meta = meta or (f"wrk -t1 -c64 -d{args.duration}s on core 0; infergate (1 thread) and one mock process "
                    f"listening on 100 ports on core 1; health checks off; medians of {args.reps} interleaved "
                    f"runs; measured {time.strftime('%Y-%m-%d')}.")
    body = (f"{meta}\n\nRouting cost by fleet size, end to end:\n\n" + "\n".join(t1) +
            "\n\nRegistry churn under load (8 workers, least_load; the churn adds and removes a ninth "
            "worker through the admin API, serving another model or this one):\n\n" + "\n".join(t2) +
            "\n\nThe routing decision alone (`bench/route_bench.c`: snapshot lookup by model, policy pick, "
            "in-flight count; one thread), then what a request carrying a bearer adds when AReaL sessions "
            "exist (the session-table lookup), what cache_aware adds by prompt size, and the body scanner on big "
            "chat bodies (the whole scan; its string-stop kernel as a byte loop and vectorised, on the same "
            "bytes in the same run):\n\n" + route.strip() + "\n")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "registry.md"), "w") as f:
        f.write("# Registry: routing cost and churn\n\n" + body)
    with open(os.path.join(ROOT, "bench", "results", "registry.json"), "w") as f:
        json.dump({"meta": meta, "by_size": rows, "churn": churn_rows, "route_bench": route}, f, indent=2)
    update_readme("registry", body)
    print(body)


if __name__ == "__main__":
    main()
