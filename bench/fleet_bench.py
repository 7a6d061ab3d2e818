"""Fleet control: broadcast time for 16/256/1024 workers that each take 100 ms
per control call (one mock process listening on N ports), and pause ->
continue with 1000 streaming requests held: time from continue to the last
first token. Writes bench/results/fleet.md and the README section.

Usage: /usr/bin/python3 bench/fleet_bench.py"""
import asyncio
import os
import statistics
import time

import aiohttp
import httpx

import benchlib
from benchlib import BUILD, ROOT, free_port, pinned, start_mock, stop, update_readme, wait_port


def gateway(urls):
    port = free_port()
    p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "2", "--log-level", "warn",
                "--health-check-interval-secs", "0", "--worker-urls", *urls])
    wait_port(port, timeout=60)
    return p, port


def broadcast_times(n, reps=3):
    mock, ports = start_mock("--ports", n, "--control-delay-ms", 100)
    gw, port = gateway([f"http://127.0.0.1:{p}" for p in ports])
    base = f"http://127.0.0.1:{port}"
    try:
        walls = []
        with httpx.Client(base_url=base, timeout=60) as c:
            for _ in range(reps):
                t0 = time.time()
                r = c.post("/pause_generation")
                walls.append((time.time() - t0) * 1000)
                assert r.status_code == 200 and len(r.json()["results"]) == n, r.text[:300]
                c.post("/continue_generation")
        return statistics.median(walls)
    finally:
        stop(gw)
        stop(mock)


async def held_then_continue(base, n):
    first = []

    async def one(s):
        async with s.post("/v1/chat/completions",
                          json={"model": "mock-model", "stream": True, "max_tokens": 4}) as r:
            async for _ in r.content:
                first.append(time.time())
                break
            async for _ in r.content:
                pass

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        async with s.post("/pause_generation") as r:
            assert r.status == 200
        tasks = [asyncio.create_task(one(s)) for _ in range(n)]
        while True:
            async with s.get("/metrics") as r:
                text = await r.text()
            depth = [l for l in text.splitlines() if l.startswith("infergate_queue_depth ")]
            if depth and float(depth[0].split()[1]) >= n:
                break
            await asyncio.sleep(0.05)
        t0 = time.time()
        async with s.post("/continue_generation") as r:
            assert r.status == 200
        await asyncio.gather(*tasks)
    firsts = sorted(t - t0 for t in first)
    return firsts[len(firsts) // 2] * 1000, firsts[-1] * 1000


def main():
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    rows = ["| workers (100 ms each) | broadcast wall time ms | vs one worker's 100 ms |", "|---:|---:|---:|"]
    for n in (16, 256, 1024):
        ms = broadcast_times(n)
        rows.append(f"| {n} | {ms:.0f} | {ms / 100:.2f}x |")
        print(rows[-1], flush=True)
    mock, ports = start_mock("--ports", 8, "--token-interval-ms", 10)
    gw, port = gateway([f"http://127.0.0.1:{p}" for p in ports])
    try:
        p50, last = asyncio.run(held_then_continue(f"http://127.0.0.1:{port}", 1000))
    finally:
        stop(gw)
        stop(mock)
    held = ["| requests held while paused | continue → median first token ms | continue → last first token ms |",
            "|---:|---:|---:|", f"| 1000 | {p50:.0f} | {last:.0f} |"]
    print(held[-1])
    meta = (f"One mock process listening on N ports answers every control call after 100 ms; infergate 2 threads; "
            f"wall time of POST /pause_generation from the client, median of 3; held requests: 8 workers, streaming, "
            f"1000 concurrent aiohttp clients; measured {time.strftime('%Y-%m-%d')}.")
    body = meta + "\n\n" + "\n".join(rows) + "\n\n" + "\n".join(held) + "\n"
    with open(os.path.join(ROOT, "bench", "results", "fleet.md"), "w") as f:
        f.write("# Fleet control\n\n" + body)
    update_readme("fleet", body)
    print(body)


if __name__ == "__main__":
    main()
