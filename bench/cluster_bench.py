"""Several gateways in front of one fleet (issue 18): the cache bench's
multi-turn chat workload (bench/cache_bench.py: many users, conversations
of growing length, shared system prompts, 8 mock workers with a prefix KV
cache) sent through 1, 2 and 4 infergate gateways that share their workers
through one etcd, each turn to the next gateway in turn (as an L4 balancer
spreads new connections), for consistent_hash and cache_aware. Reports the
cache hit rate, requests/s and the max/min requests per worker, as ratios
to one gateway. Writes bench/results/cluster.{md,json}, the README section
and a plot.

Usage: /usr/bin/python3 bench/cluster_bench.py [--users 32] [--convs 2] [--turns 6]"""
import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time

import aiohttp

import benchlib
import cache_bench
from benchlib import BUILD, free_port, pinned, start_mock, stop, wait_port, write_results


def start_etcd(work):
    client, peer = free_port(), free_port()
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    p = subprocess.Popen(["etcd", "--name", "b0", "--data-dir", os.path.join(work, "etcd"), "--listen-client-urls",
                          url, "--advertise-client-urls", url, "--listen-peer-urls", purl,
                          "--initial-advertise-peer-urls", purl, "--initial-cluster", f"b0={purl}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(client, timeout=30)
    return p, url


async def run_user(session, next_base, convs, out):
    for conv_id, system, msgs in convs:
        history = [{"role": "system", "content": system}]
        for m in msgs:
            history.append({"role": "user", "content": m})
            body = {"model": cache_bench.MODEL, "messages": history, "max_tokens": cache_bench.MAX_TOKENS,
                    "stream": False}
            t0 = time.perf_counter()
            async with session.post(next_base() + "/v1/chat/completions", json=body,
                                    headers={"x-session-id": conv_id}) as r:
                assert r.status == 200, await r.text()
                reply = (await r.json())["choices"][0]["message"]["content"]
            out.append(time.perf_counter() - t0)
            history.append({"role": "assistant", "content": reply})


def start_nats():
    port = free_port()
    p = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, timeout=30)
    return p, f"nats://127.0.0.1:{port}"


VARIANTS = [("consistent_hash", False), ("cache_aware", False), ("cache_aware", True)]


def label(policy, shared):
    return policy + (" + NATS" if shared else "")


def one_run(policy, shared, n_gw, plan, work):
    mocks = [start_mock(*cache_bench.MOCK_ARGS, "--kv-cache-tokens", cache_bench.KV_TOKENS, "--worker-id", f"m{i}")
             for i in range(cache_bench.WORKERS)]
    urls = [f"http://127.0.0.1:{ports[0]}" for _, ports in mocks]
    etcd, eurl = start_etcd(tempfile.mkdtemp(dir=work))
    nats, nurl = start_nats() if shared else (None, None)
    gws, ports = [], []
    try:
        for i in range(n_gw):
            port = free_port()
            gws.append(pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                               "--log-level", "warn", "--health-check-interval-secs", "0", "--policy", policy,
                               "--etcd-endpoints", eurl, *(["--nats-servers", nurl] if shared else []),
                               *(["--worker-urls", *urls] if i == 0 else [])]))
            wait_port(port, timeout=30)
            ports.append(port)
        import urllib.request
        deadline = time.time() + 30
        for port in ports:  # every gateway has the whole fleet before the load starts
            while time.time() < deadline:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=5) as r:
                    if len(json.loads(r.read())["workers"]) == len(urls):
                        break
                time.sleep(0.1)
        turn = itertools.cycle([f"http://127.0.0.1:{p}" for p in ports])

        async def main():
            lat = []
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:
                t0 = time.perf_counter()
                await asyncio.gather(*[run_user(s, lambda: next(turn), convs, lat) for convs in plan])
                return lat, time.perf_counter() - t0

        lat, wall = asyncio.run(main())
        st = cache_bench.stats_of(urls)
        done = [s["completed"] for s in st]
        prompt = sum(s["prompt_tokens"] for s in st)
        cached = sum(s["cached_tokens"] for s in st)
        return {"policy": label(policy, shared), "gateways": n_gw, "requests": len(lat), "rps": len(lat) / wall,
                "hit_rate": cached / prompt if prompt else 0.0, "max_min_load": max(done) / max(1, min(done)),
                "per_worker": done}
    finally:
        for g in gws:
            stop(g)
        stop(etcd)
        if nats:
            stop(nats)
        for p, _ in mocks:
            stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--convs", type=int, default=2)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--only", help="one variant's label (a quick look: no table written)")
    args = ap.parse_args()
    plan = cache_bench.make_workload(args.users, args.convs, args.turns)
    work = tempfile.mkdtemp(prefix="igcluster-")
    res = []
    try:
        for policy, shared in VARIANTS:
            if args.only and label(policy, shared) != args.only:
                continue
            for n in (1, 2, 4):
                r = one_run(policy, shared, n, plan, work)
                res.append(r)
                print(f"{r['policy']:22s} {n} gateways: hit {r['hit_rate']:.3f}  {r['rps']:.0f} req/s  "
                      f"max/min {r['max_min_load']:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.only:
        write(res, args)


def write(res, args):
    one = {r["policy"]: r for r in res if r["gateways"] == 1}
    rows = ["| policy | gateways | cache hit rate (x one gateway) | requests/s (x one gateway) | max/min requests per worker |",
            "|---|---|---|---|---|"]
    for r in res:
        base = one[r["policy"]]
        rows.append(f"| {r['policy']} | {r['gateways']} | {r['hit_rate'] / base['hit_rate']:.2f} | "
                    f"{r['rps'] / base['rps']:.2f} | {r['max_min_load']:.2f} |")
    hit1 = one["cache_aware"]["hit_rate"]
    body = "\n".join(rows) + (
        f"\n\n{args.users} users x {args.convs} conversations x {args.turns} turns (the cache bench's workload, "
        f"not streamed), 8 mock workers with a prefix cache, each turn to the next gateway; the gateways share "
        f"their workers through one etcd. One gateway's cache_aware hit rate is {hit1:.0%} of prompt tokens. "
        f"cache_aware's index is each gateway's own so far (the plan to share it: docs/internals/cluster.md); "
        f"consistent_hash keys the conversation (x-session-id): the gateways share its ring, and lose "
        f"hits only where one's bounded load, counted on its own share of the requests, moves a turn. "
        f"Measured {time.strftime('%Y-%m-%d')} with `/usr/bin/python3 bench/cluster_bench.py`.\n")
    write_results("cluster", "Several gateways, one fleet", body, {"results": res})
    plot(res)


def plot(res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for policy, shared in VARIANTS:
        rs = [r for r in res if r["policy"] == label(policy, shared)]
        ax.plot([r["gateways"] for r in rs], [r["hit_rate"] for r in rs], marker="o", label=label(policy, shared))
    ax.set_xlabel("gateways (turns spread over them)")
    ax.set_ylabel("prefix-cache hit rate")
    ax.set_xticks([1, 2, 4])
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(benchlib.ROOT, "bench", "results", "cluster.png"), dpi=110)


if __name__ == "__main__":
    main()
