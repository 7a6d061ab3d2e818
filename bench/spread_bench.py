"""One worker address, K processes behind it sharing one socket (like
`uvicorn --workers K`): how requests spread over the processes, and how many
requests open a new connection, for keep-alive off, a plain keep-alive pool,
and infergate's default (--upstream-spread latency). Writes
bench/results/spread.md and the README section.

Usage: /usr/bin/python3 bench/spread_bench.py [--per-client N]"""
import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import aiohttp  # noqa: E402
from benchlib import write_results  # noqa: E402
from conftest import Gateway, Worker, chat_body  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-client", type=int, default=100)
    args = ap.parse_args()
    configs = [("keep-alive off (a connection per request)", ["--upstream-max-requests-per-conn", "1"]),
               ("plain keep-alive pool", ["--upstream-spread", "off"]),
               ("infergate default (--upstream-spread latency)", [])]
    rows = ["| processes | pooling | min share | max share | requests on a new connection |",
            "|---|---|---:|---:|---:|"]
    results = []
    for cpu_us, label in ((300, "busy: 300 µs CPU per token"), (0, "idle: no CPU per token")):
        for name, extra in configs:
            r = run(extra, cpu_us, args.per_client)
            r.update(config=name, processes=label)
            results.append(r)
            print(f"{label:28s} {name:46s} {r['min']:.2f}-{r['max']:.2f}x  new {r['new_conn_pct']:.1f}%", flush=True)
            rows.append(f"| {label} | {name} | {r['min']:.2f}x | {r['max']:.2f}x | {r['new_conn_pct']:.1f}% |")
    meta = (f"{K} processes sharing one listening socket (infergate-mockworker --processes {K}), {CLIENTS} "
            f"concurrent streaming clients, {args.per_client} requests each ({TOKENS} tokens, {INTERVAL_MS} ms apart); "
            f"share = a process's requests / (all requests / {K}); measured {time.strftime('%Y-%m-%d')}.")
    body = meta + "\n\n" + "\n".join(rows) + "\n"
    write_results("spread", "Spreading over the processes behind one address", body,
                  {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
