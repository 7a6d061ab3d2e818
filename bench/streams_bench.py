"""Memory per open stream: N concurrent SSE streams held open through each
proxy (infergate, nginx with proxy_buffering off, HAProxy), one event every
few seconds; resident memory of the proxy's process tree with no streams and
with N, and the difference per stream. N defaults to 4,000; about 9,000 is
the most this machine allows (20,000 descriptors per process, two per stream
in a proxy), and nginx did not get past about 8,700 here. Writes
bench/results/streams.md and .json and the README section.

Usage: /usr/bin/python3 bench/streams_bench.py [--streams 4000] [--proxies infergate]"""
import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time

import benchlib
from benchlib import start_mock, stop, tree_rss_kb, wait_port, write_results
from proxy_bench import start_contender

PROXIES = ["infergate", "nginx", "haproxy"]


async def hold_streams(port, n, ready, release):
    body = json.dumps({"model": "mock-model", "stream": True, "max_tokens": 100000,
                       "messages": [{"role": "user", "content": "hold"}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           b"x-mock-token-interval-ms: 3000\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    opened = []

    async def one():
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            w.write(req)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            await asyncio.wait_for(r.readuntil(b"data: "), 10)  # the first event: live end to end
            ready.append(1)
            opened.append(w)
            await release.wait()
        except Exception:  # noqa: BLE001 - a stream that could not open is counted, not fatal
            failed.append(1)
        finally:
            if w:
                w.close()

    tasks, failed = [], []
    for i in range(0, n, 250):  # in batches, so no backlog overflows
        tasks += [asyncio.create_task(one()) for _ in range(min(250, n - i))]
        while len(ready) + len(failed) < len(tasks):
            await asyncio.sleep(0.05)
    return tasks, len(failed)


def measure(name, mock_port, n):
    work = tempfile.mkdtemp(prefix=f"igstreams-{name}-")
    p, port = start_contender(name, mock_port, work, streams=n)
    try:
        wait_port(port)
        time.sleep(0.5)
        idle = tree_rss_kb(p.pid)

        async def main():
            ready, release = [], asyncio.Event()
            t0 = time.time()
            tasks, failed = await hold_streams(port, n, ready, release)
            opened_s = time.time() - t0
            peak = 0
            for _ in range(10):  # a few events go by on every stream
                peak = max(peak, tree_rss_kb(p.pid))
                await asyncio.sleep(0.5)
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return peak, opened_s, n - failed

        peak, opened_s, live = asyncio.run(main())
        return {"proxy": name, "streams": live, "failed": n - live, "idle_kb": idle, "peak_kb": peak,
                "per_stream_kb": (peak - idle) / max(1, live), "open_secs": opened_s}
    finally:
        stop(p)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=4000)
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated; the table is written only for all")
    args = ap.parse_args()
    names = args.proxies.split(",")
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    mock, ports = start_mock("--tokens", "100000")
    try:
        rows = []
        for name in names:
            r = measure(name, ports[0], args.streams)
            rows.append(r)
            print(f"{name:10s} idle {r['idle_kb'] / 1024:6.1f} MB  with {r['streams']} streams ({r['failed']} failed) "
                  f"{r['peak_kb'] / 1024:7.1f} MB  {r['per_stream_kb']:.2f} kB/stream", flush=True)
    finally:
        stop(mock)
    if names != PROXIES:
        return
    ig = rows[0]
    t = ["| proxy | streams open | RSS idle (MB) | RSS with the streams (MB) | per open stream (kB) | vs infergate |",
         "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t.append(f"| {r['proxy']} | {r['streams']} | {r['idle_kb'] / 1024:.1f} | {r['peak_kb'] / 1024:.1f} | "
                 f"{r['per_stream_kb']:.2f} | {r['per_stream_kb'] / ig['per_stream_kb']:.2f}x |")
    meta = (f"{args.streams} concurrent SSE streams asked for, held open through each proxy (one event every 3 s from "
            f"one mock worker), resident memory of the proxy's processes before and at the peak; one "
            f"thread or process each (about 9,000 streams is this machine's ceiling: 20,000 descriptors per "
            f"process, two per stream in a proxy); measured {time.strftime('%Y-%m-%d')}.")
    body = meta + "\n\n" + "\n".join(t) + "\n"
    write_results("streams", "Memory per open stream", body, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
