"""Several gateways in front of one fleet (issue 18): the cache bench's
multi-turn chat workload (bench/cache_bench.py: many users, conversations
of growing length, shared system prompts, 8 mock workers with a prefix KV
cache) sent through 1, 2 and 4 infergate gateways that share their workers
through one etcd, each turn to the next gateway in turn (as an L4 balancer
spreads new connections), for consistent_hash and cache_aware, each alone
and with --nats-servers (prefix inserts and loads shared). Reports the
cache hit rate, requests/s and the max/min requests per worker, as ratios
to one gateway. Writes bench/results/cluster.{md,json}, the README section
and a plot.

Usage: /usr/bin/python3 bench/cluster_bench.py [--users 48] [--convs 3] [--turns 8] [--rounds 5]"""
import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
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


VARIANTS = [("consistent_hash", False), ("consistent_hash", True), ("cache_aware", False), ("cache_aware", True)]


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
        aff = {"hits": 0, "misses": 0}
        for port in ports:  # the gateways' own count of affinity routing
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    for k in aff:
                        if line.startswith(f"infergate_affinity_{k}_total "):
                            aff[k] += int(line.split()[1])
        st = cache_bench.stats_of(urls)
        done = [s["completed"] for s in st]
        prompt = sum(s["prompt_tokens"] for s in st)
        cached = sum(s["cached_tokens"] for s in st)
        return {"policy": label(policy, shared), "gateways": n_gw, "requests": len(lat), "rps": len(lat) / wall,
                "hit_rate": cached / prompt if prompt else 0.0, "max_min_load": max(done) / max(1, min(done)),
                "per_worker": done, "affinity": aff}
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
    ap.add_argument("--users", type=int, default=48)
    ap.add_argument("--convs", type=int, default=3)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="each variant this often, rounds alternating them")
    ap.add_argument("--only", help="one variant's label (a quick look: no table written)")
    args = ap.parse_args()
    plan = cache_bench.make_workload(args.users, args.convs, args.turns)
    work = tempfile.mkdtemp(prefix="igcluster-")
    res = []
    try:
        for rnd in range(args.rounds):
            for policy, shared in VARIANTS:
                if args.only and label(policy, shared) != args.only:
                    continue
                for n in (1, 2, 4):
                    r = one_run(policy, shared, n, plan, work)
                    r["round"] = rnd
                    res.append(r)
                    print(f"round {rnd} {r['policy']:22s} {n} gateways: hit {r['hit_rate']:.3f}  {r['rps']:.0f} "
                          f"req/s  max/min {r['max_min_load']:.2f}  affinity {r['affinity']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.only:
        write(res, args)


def summary(res):
    """Per variant and gateway count: each round's ratios to that round's one gateway, median and range."""
    out = []
    for policy, shared in VARIANTS:
        name = label(policy, shared)
        for n in (1, 2, 4):
            hit, rps, mm = [], [], []
            for r in res:
                if r["policy"] == name and r["gateways"] == n:
                    base = next(b for b in res if b["policy"] == name and b["gateways"] == 1 and
                                b["round"] == r["round"])
                    hit.append(r["hit_rate"] / base["hit_rate"])
                    rps.append(r["rps"] / base["rps"])
                    mm.append(r["max_min_load"])
            if hit:
                out.append({"policy": name, "gateways": n, "hit": sorted(hit), "rps": sorted(rps),
                            "max_min": sorted(mm),
                            "hit_rate": statistics.median(r["hit_rate"] for r in res
                                                          if r["policy"] == name and r["gateways"] == n)})
    return out


def cell(v):
    med = statistics.median(v)
    return f"{med:.2f}" if len(v) == 1 else f"{min(v):.2f}–{max(v):.2f} ({med:.2f})"


def write(res, args):
    summ = summary(res)
    rows = ["| policy | gateways | cache hit rate (x one gateway) | requests/s (x one gateway) | "
            "max/min requests per worker |", "|---|---|---|---|---|"]
    for s in summ:
        if s["gateways"] > 1:
            rows.append(f"| {s['policy']} | {s['gateways']} | {cell(s['hit'])} | {cell(s['rps'])} | "
                        f"{cell(s['max_min'])} |")
    hit1 = statistics.median(r["hit_rate"] for r in res if r["policy"] == "cache_aware" and r["gateways"] == 1)
    body = "\n".join(rows) + (
        f"\n\nRanges over {args.rounds} rounds (medians in brackets), each ratio to the same round's one gateway. "
        f"{args.users} users x {args.convs} conversations x {args.turns} turns (the cache bench's workload, "
        f"not streamed), 8 mock workers with a prefix cache, each turn to the next gateway; the gateways share "
        f"their workers through one etcd. One gateway's cache_aware hit rate is {hit1:.0%} of prompt tokens. "
        f"Without NATS each gateway's prefix index and load counts are its own: a conversation's next turn "
        f"reaches a gateway that never saw it, and bounded load, counted on a quarter of the requests, moves "
        f"turns. With `--nats-servers` the gateways publish their prefix inserts and in-flight counts to each "
        f"other (docs/internals/cluster.md). "
        f"Measured {time.strftime('%Y-%m-%d')} with `/usr/bin/python3 bench/cluster_bench.py`.\n")
    write_results("cluster", "Several gateways, one fleet", body, {"results": res, "summary": summ})
    plot(summ)


def plot(summ):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for policy, shared in VARIANTS:
        rs = [s for s in summ if s["policy"] == label(policy, shared)]
        ax.plot([s["gateways"] for s in rs], [s["hit_rate"] for s in rs], marker="o",
                linestyle="-" if shared else "--", label=label(policy, shared))
    ax.set_xlabel("gateways (turns spread over them)")
    ax.set_ylabel("prefix-cache hit rate (median)")
    ax.set_xticks([1, 2, 4])
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(benchlib.ROOT, "bench", "results", "cluster.png"), dpi=110)


if __name__ == "__main__":
    main()
