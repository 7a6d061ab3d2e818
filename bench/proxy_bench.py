"""Proxy overhead benchmark: wrk posts a small chat request on 64 keep-alive
connections to one fast mock worker, directly and through each proxy, all in
one run and pinned the same way (wrk on core 0; proxy and backend on core 1).
Writes bench/results/proxy.{md,json} and the table into README.md.

Usage: /usr/bin/python3 bench/proxy_bench.py [--duration S] [--connections N] [--only a,b]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import benchlib
from benchlib import (haproxy_conf, BODY, BUILD, LOAD_CORE, ROOT, SERVER_CORE, free_port, nginx_conf, pinned, run_wrk, stop,
                      update_readme,
                      tree_cpu_ticks, wait_port)
CLK_TCK = benchlib.CLK_TCK


def start_contender(name, backend_port, work, streams=0):
    """streams: room for that many long-lived streams (two connections each)."""
    port = free_port()
    up = f"127.0.0.1:{backend_port}"
    if name in ("infergate", "infergate-log"):
        # -log: the default --log-level info, an access-log line per request (to a file)
        p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                    "--log-level", "info" if name == "infergate-log" else "warn", "--worker-urls", "http://" + up])
    elif name == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_conf(port, f"    server s1 {up}", maxconn=max(9000, streams + 500),
                                 timeout="600s" if streams else "60s"))
        p = pinned(["haproxy", "-db", "-f", cfg])
    elif name == "nginx":
        cfg = os.path.join(work, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(nginx_conf(work, port, f"    upstream be {{ server {up}; keepalive 128; }}",
                               connections=max(9000, 2 * streams + 500)))
        p = pinned(["nginx", "-c", cfg, "-p", work])
    elif name == "caddy":
        cfg = os.path.join(work, "Caddyfile")
        with open(cfg, "w") as f:
            f.write(f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    reverse_proxy {up} {{
        flush_interval -1
        transport http {{
            keepalive_idle_conns 256
            keepalive_idle_conns_per_host 256
        }}
    }}
}}
""")
        p = pinned(["caddy", "run", "--config", cfg, "--adapter", "caddyfile"],
                   env={**os.environ, "GOMAXPROCS": "1", "HOME": work, "XDG_DATA_HOME": work,
                        "XDG_CONFIG_HOME": work})
    elif name == "python-aiohttp":
        p = pinned(["/usr/bin/python3", os.path.join(ROOT, "bench", "py_gateway.py"), str(port),
                    "http://" + up])
    else:
        raise ValueError(name)
    wait_port(port)
    return p, port


def main():
    # the driver (and its churn thread) must not take CPU from the server core
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    names = ["direct", "infergate", "infergate-log", "haproxy", "nginx", "caddy", "python-aiohttp"]
    if args.only:
        names = [n for n in names if n in args.only.split(",") or n == "direct"]
    work = tempfile.mkdtemp(prefix="igbench-")
    backend = subprocess.Popen(["taskset", "-c", SERVER_CORE, os.path.join(BUILD, "infergate-mockworker"),
                                "--port", "0", "--worker-id", "bench", "--tokens", "8"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    bport = int(backend.stdout.readline().split("=")[1])
    # interleaved repetitions, medians: the machine is small and shared
    runs = {name: [] for name in names}
    running = []
    try:
        for rep in range(args.reps):
            for name in names:
                p, port = (None, bport) if name == "direct" else start_contender(name, bport, work)
                running.append(p)
                run_wrk(port, 1, args.connections, work)  # warm-up: pools and caches
                pid = p.pid if p else backend.pid
                t0 = tree_cpu_ticks(pid)
                try:
                    r = run_wrk(port, args.duration, args.connections, work)
                except (AttributeError, ValueError) as e:
                    raise SystemExit(f"{name}: cannot read wrk output ({e}):\n{benchlib.last_wrk_output}")
                ticks = tree_cpu_ticks(pid) - t0
                r["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / max(r["requests"], 1)
                runs[name].append(r)
                print(f"[{rep}] {name:15s} {r['rps']:10.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                      f"p99 {r['p99_ms']:.2f} ms  cpu {r['cpu_us_per_req']:.1f} us/req  errors {r['errors']}",
                      flush=True)
                stop(p)
                running.remove(p)
    finally:
        for p in running:
            stop(p)
        stop(backend)
        shutil.rmtree(work, ignore_errors=True)
    results = []
    for name in names:
        rs = runs[name]
        med = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        results.append({"name": name, **med, "errors": sum(r["errors"] for r in rs),
                        "requests": sum(r["requests"] for r in rs), "runs": rs})
    write(results, args)


def plot(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    proxies = [r for r in results if r["name"] != "direct"]
    names = [r["name"] for r in proxies]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = ["#2a7" if n == "infergate" else "#888" for n in names]
    a.bar(names, [r["rps"] for r in proxies], color=colors)
    a.set_title("requests/s (higher is better)")
    b.bar(names, [r["cpu_us_per_req"] for r in proxies], color=colors)
    b.set_title("proxy CPU µs per request (lower is better)")
    b.set_yscale("log")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "bench", "results", "proxy.png"), dpi=110)


def write(results, args):
    ref = next((r for r in results if r["name"] == "haproxy"), None)
    lines = ["| target | requests/s | vs HAProxy | p50 ms | p99 ms | proxy CPU µs/request | CPU vs HAProxy | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        direct = r["name"] == "direct"
        rps_ratio = f"{r['rps'] / ref['rps']:.2f}x" if ref else "-"
        cpu = "(backend only)" if direct else f"{r['cpu_us_per_req']:.1f}"
        cpu_ratio = "-" if direct or not ref else f"{r['cpu_us_per_req'] / ref['cpu_us_per_req']:.2f}x"
        lines.append(f"| {r['name']} | {r['rps']:.0f} | {rps_ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {cpu} | {cpu_ratio} | {r['errors']} |")
    table = "\n".join(lines)
    meta = (f"wrk -t1 -c{args.connections} -d{args.duration}s, POST /v1/chat/completions ({len(BODY)} B body, "
            f"~0.4 KB JSON answer) to one infergate-mockworker; wrk on core {LOAD_CORE}, proxy and backend on "
            f"core {SERVER_CORE}; one thread/process/GOMAXPROCS per proxy; medians of {args.reps} interleaved "
            f"runs; measured {time.strftime('%Y-%m-%d')}.")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "proxy.md"), "w") as f:
        f.write(f"# Proxy overhead\n\n{meta}\n\n{table}\n")
    with open(os.path.join(ROOT, "bench", "results", "proxy.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    plot(results)
    update_readme("proxy", f"{meta}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
