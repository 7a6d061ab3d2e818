"""Two infergate builds and HAProxy on the same backend, interleaved, pinned
as bench/proxy_bench.py pins them: is a change slower? Prints each build's
requests/s and proxy CPU per request as ratios to HAProxy in the same run.

Usage: /usr/bin/python3 bench/ab_bench.py OLD_BUILD_DIR NEW_BUILD_DIR [--reps N] [--duration S]"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile

import benchlib
from benchlib import BUILD, LOAD_CORE, SERVER_CORE, free_port, pinned, run_wrk, stop, tree_cpu_ticks, wait_port
from proxy_bench import start_contender


def start_build(build, backend_port):
    port = free_port()
    p = pinned([os.path.join(build, "infergate"), "--port", str(port), "--threads", "1", "--log-level", "warn",
                "--worker-urls", f"http://127.0.0.1:{backend_port}"])
    wait_port(port)
    return p, port


def main():
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="igab-")
    backend = subprocess.Popen(["taskset", "-c", SERVER_CORE, os.path.join(BUILD, "infergate-mockworker"),
                                "--port", "0", "--worker-id", "bench", "--tokens", "8"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    bport = int(backend.stdout.readline().split("=")[1])
    runs = {"old": [], "new": [], "haproxy": []}
    try:
        for rep in range(args.reps):
            for name in runs:
                if name == "haproxy":
                    p, port = start_contender("haproxy", bport, work)
                else:
                    p, port = start_build(getattr(args, name), bport)
                try:
                    run_wrk(port, 1, args.connections, work)
                    t0 = tree_cpu_ticks(p.pid)
                    r = run_wrk(port, args.duration, args.connections, work)
                    r["cpu"] = (tree_cpu_ticks(p.pid) - t0) * 1e6 / benchlib.CLK_TCK / max(r["requests"], 1)
                finally:
                    stop(p)
                runs[name].append(r)
                print(f"[{rep}] {name:8s} {r['rps']:9.0f} req/s  cpu {r['cpu']:.1f} us/req  errors {r['errors']}",
                      flush=True)
    finally:
        stop(backend)
        shutil.rmtree(work, ignore_errors=True)
    ha_rps = statistics.median(r["rps"] for r in runs["haproxy"])
    ha_cpu = statistics.median(r["cpu"] for r in runs["haproxy"])
    for name in ("old", "new"):
        rps = [r["rps"] / ha_rps for r in runs[name]]
        cpu = [r["cpu"] / ha_cpu for r in runs[name]]
        print(f"{name}: requests/s {min(rps):.2f}-{max(rps):.2f}x HAProxy (median {statistics.median(rps):.2f}x), "
              f"CPU per request {min(cpu):.2f}-{max(cpu):.2f}x (median {statistics.median(cpu):.2f}x)")


if __name__ == "__main__":
    main()
