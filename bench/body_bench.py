"""Big prompts (issue 19): CPU per request of each proxy for chat bodies of
1 KB to 1 MB (agent contexts), wrk posting on 8 keep-alive connections to
one mock worker, every contender in every round, rounds alternating them,
pinned as proxy_bench does (wrk on core 0; proxy and backend on core 1).
infergate runs with least_load and with cache_aware (which also keys the
prompt); nginx keeps bodies in memory (client_body_buffer_size 2m: its
default spills bodies over 16 KB to a temp file). Reports CPU per request
as a ratio to HAProxy's in the same round. Writes bench/results/body.{md,json},
the README section and bench/results/body.png.

Usage: /usr/bin/python3 bench/body_bench.py [--duration S] [--rounds N] [--only a,b]"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile

import benchlib
from benchlib import (BUILD, LOAD_CORE, free_port, nginx_conf, pinned, start_mock, stop,
                      tree_cpu_ticks, wait_port, write_results)
from proxy_bench import start_contender

SIZES = [1024, 10240, 102400, 1048576]
CONTENDERS = ["infergate", "infergate-cache_aware", "haproxy", "nginx-memory", "caddy"]


def body_of(size):
    head = '{"model":"mock-model","max_tokens":1,"messages":[{"role":"user","content":"'
    tail = '"}]}'
    words = "the quick brown fox jumps over the lazy dog and reads the whole repository again "
    n = size - len(head) - len(tail)
    return head + (words * (n // len(words) + 1))[:n] + tail


def start(name, backend_port, work):
    up = f"127.0.0.1:{backend_port}"
    if name.startswith("infergate"):
        port = free_port()
        policy = "cache_aware" if name.endswith("cache_aware") else "least_load"
        p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1", "--log-level", "warn",
                    "--policy", policy, "--worker-urls", "http://" + up])
        wait_port(port)
        return p, port
    if name == "nginx-memory":
        port = free_port()
        cfg = os.path.join(work, "nginx.conf")
        conf = nginx_conf(work, port, f"    upstream be {{ server {up}; keepalive 128; }}")
        conf = conf.replace("    access_log off;\n", "    access_log off;\n    client_max_body_size 0;\n"
                            "    client_body_buffer_size 2m;\n")
        with open(cfg, "w") as f:
            f.write(conf)
        p = pinned(["nginx", "-c", cfg, "-p", work])
        wait_port(port)
        return p, port
    return start_contender(name, backend_port, work)


def run(port, size, duration, conns, work):
    lua = os.path.join(work, f"post{size}.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = [==[%s]==]\nwrk.headers["Content-Type"] = "application/json"\n'
                % body_of(size))
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", lua,
                          f"http://127.0.0.1:{port}/v1/chat/completions"], capture_output=True, text=True).stdout
    req = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    return req, errors


def main():
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    names = [n for n in CONTENDERS if (not args.only or n in args.only.split(","))]
    if "caddy" in names and not shutil.which("caddy"):
        print("caddy is not installed (bench/run.sh installs it): left out")
        names.remove("caddy")
    work = tempfile.mkdtemp(prefix="igbody-")
    mock, ports = start_mock("--worker-id", "m0")
    res = []
    try:
        for rnd in range(args.rounds):
            for size in SIZES:
                for name in (names if rnd % 2 == 0 else list(reversed(names))):
                    p, port = start(name, ports[0], work)
                    try:
                        run(port, size, 1, args.connections, work)  # warm up: pools, buffers
                        t0 = tree_cpu_ticks(p.pid)
                        req, errors = run(port, size, args.duration, args.connections, work)
                        cpu = (tree_cpu_ticks(p.pid) - t0) * 1e6 / benchlib.CLK_TCK / max(req, 1)
                    finally:
                        stop(p)
                    r = {"round": rnd, "size": size, "proxy": name, "requests": req, "errors": errors,
                         "cpu_us_per_req": cpu}
                    res.append(r)
                    print(f"round {rnd} {size:>8} {name:24s} {cpu:9.1f} us/req  {req} requests  {errors} errors",
                          flush=True)
    finally:
        stop(mock)
        shutil.rmtree(work, ignore_errors=True)
    if not args.only:
        write(res, names, args)


def ratios(res, name, size):
    out = []
    for r in res:
        if r["proxy"] == name and r["size"] == size:
            base = next(b for b in res if b["proxy"] == "haproxy" and b["size"] == size and b["round"] == r["round"])
            out.append(r["cpu_us_per_req"] / base["cpu_us_per_req"])
    return sorted(out)


def write(res, names, args):
    label = {1024: "1 KB", 10240: "10 KB", 102400: "100 KB", 1048576: "1 MB"}
    rows = ["| proxy | " + " | ".join(label[s] for s in SIZES) + " |", "|---|" + "---|" * len(SIZES)]
    summ = {}
    for name in names:
        cells = []
        for s in SIZES:
            v = ratios(res, name, s)
            summ[(name, s)] = statistics.median(v)
            cells.append(f"{min(v):.2f}–{max(v):.2f} ({statistics.median(v):.2f})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    errors = sum(r["errors"] for r in res)
    body = ("CPU per request as a ratio to HAProxy's in the same round (ranges over rounds, medians in brackets; "
            "below 1: cheaper than HAProxy):\n\n" + "\n".join(rows) +
            f"\n\n{args.rounds} rounds alternating the contenders, {args.duration} s each, wrk on "
            f"{args.connections} keep-alive connections posting a chat body of that size to one mock worker; "
            f"one thread or worker process each, proxy and backend on one core. {errors} errors in all. "
            f"`nginx-memory`: `client_body_buffer_size 2m` (its default writes bodies over 16 KB to a temp "
            f"file). Measured with `/usr/bin/python3 bench/body_bench.py`.\n")
    write_results("body", "Big prompts: CPU per request by body size", body, {"results": res})
    plot(summ, names)


def plot(summ, names):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in names:
        ax.plot(SIZES, [summ[(name, s)] for s in SIZES], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(SIZES)
    ax.set_xticklabels(["1 KB", "10 KB", "100 KB", "1 MB"])
    ax.set_xlabel("request body")
    ax.set_ylabel("CPU per request (x HAProxy, median)")
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(benchlib.ROOT, "bench", "results", "body.png"), dpi=110)


if __name__ == "__main__":
    main()
