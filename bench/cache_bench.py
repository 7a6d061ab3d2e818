"""Cache-aware routing: a synthetic multi-turn chat workload (many users,
conversations of growing length, a few shared system prompts; fixed seed)
against 8 mock workers that simulate a prefix KV cache (an LRU of prompt
blocks, prefill time for the uncached part, one prefill at a time per
worker). Compares round_robin, least_load, power_of_two, consistent_hash
(conversation id in x-session-id) and cache_aware, plus an oracle that pins
each conversation to one worker (the client talks to that worker directly).

Reports the cache hit rate (cached / prompt tokens, from the workers),
requests/s, mean and p99 time to first token, and max/min requests per
worker. Writes bench/results/cache.md and .json and the README section.

With --engine llama the workers are real llama.cpp engines
(tools/llama-server, node-llama-cpp on a tiny random-weight model written
for the run, --slots context sequences each): the hit rate is the engines'
own count of prompt tokens whose KV they reused, and the time to first token
includes their real prefill. Writes bench/results/cache_engine.md and its
README section.

Usage: /usr/bin/python3 bench/cache_bench.py [--users 48] [--convs 3] [--turns 6]
       /usr/bin/python3 bench/cache_bench.py --engine llama [--engines 4] [--slots 2]"""
import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import zlib

import aiohttp

import benchlib
from benchlib import BUILD, free_port, pinned, start_mock, stop, wait_port, write_results

WORKERS = 8
KV_TOKENS = 16000
MOCK_ARGS = ["--prefill-us-per-token", "20", "--token-interval-ms", "2"]
POLICIES = ["round_robin", "least_load", "power_of_two", "consistent_hash", "cache_aware", "oracle"]


SYSTEM_WORDS = 200


def make_workload(users, convs, turns, seed=7, words=None, system_words=SYSTEM_WORDS, turn_words=(40, 160)):
    """Per user, a list of conversations; each is (system prompt, [user messages])."""
    rnd = random.Random(seed)
    words = words or [f"w{i}" for i in range(5000)]

    def text(n):
        return " ".join(rnd.choice(words) for _ in range(n))

    systems = [f"System prompt {k}: " + text(system_words) for k in range(4)]
    plan = []
    for u in range(users):
        mine = []
        for c in range(convs):
            mine.append((f"u{u}c{c}", rnd.choice(systems), [text(rnd.randint(*turn_words)) for _ in range(turns)]))
        plan.append(mine)
    return plan


ENGINE = os.path.join(benchlib.ROOT, "tools", "llama-server")
# words of the tiny model's vocabulary: a token each, so prompts stay short
ENGINE_WORDS = ["the", "a", "of", "and", "to", "is", "in", "it", "you", "that", "hello", "world"]
MODEL, MAX_TOKENS = "mock-model", 16


def start_engines(n, slots, gguf):
    """n llama.cpp engines: [(Popen, url)]."""
    out = []
    for i in range(n):
        p = subprocess.Popen(["node", os.path.join(ENGINE, "server.mjs"), "--model", gguf, "--port", "0",
                              "--id", f"e{i}", "--slots", str(slots)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        line = p.stdout.readline()
        if not line.startswith("READY port="):
            raise RuntimeError(f"engine {i} did not start: {line!r}")
        out.append((p, f"http://127.0.0.1:{int(line.split('=')[1])}"))
    return out


async def run_user(session, base_for, convs, out):
    for conv_id, system, msgs in convs:
        history = [{"role": "system", "content": system}]
        base = base_for(conv_id)
        for m in msgs:
            history.append({"role": "user", "content": m})
            body = {"model": MODEL, "messages": history, "max_tokens": MAX_TOKENS, "stream": True}
            t0 = time.perf_counter()
            ttft, reply = None, []
            async with session.post(base + "/v1/chat/completions", json=body,
                                    headers={"x-session-id": conv_id}) as r:
                assert r.status == 200, await r.text()
                async for line in r.content:
                    if not line.startswith(b"data: {"):
                        continue
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        reply.append(delta)
            out.append(ttft)
            history.append({"role": "assistant", "content": "".join(reply)})


def stats_of(urls):
    import urllib.request
    res = []
    for u in urls:
        with urllib.request.urlopen(u + "/stats", timeout=10) as r:
            res.append(json.loads(r.read()))
    return res


def one_run(policy, plan, engines=None):
    """engines: (count, slots, gguf) for real engines, else the mock workers."""
    if engines:
        mocks = start_engines(*engines)
        urls = [u for _, u in mocks]
    else:
        mocks = [start_mock(*MOCK_ARGS, "--kv-cache-tokens", KV_TOKENS, "--worker-id", f"m{i}")
                 for i in range(WORKERS)]
        urls = [f"http://127.0.0.1:{ports[0]}" for _, ports in mocks]
    nworkers = len(urls)
    gw = None
    try:
        if policy == "oracle":
            def base_for(conv_id):
                return urls[zlib.crc32(conv_id.encode()) % nworkers]
        else:
            port = free_port()
            gw = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                         "--log-level", "warn", "--health-check-interval-secs", "0", "--policy", policy,
                         "--worker-urls", *urls])
            wait_port(port, timeout=30)

            def base_for(conv_id):
                return f"http://127.0.0.1:{port}"

        async def main():
            ttfts = []
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:
                t0 = time.perf_counter()
                await asyncio.gather(*[run_user(s, base_for, convs, ttfts) for convs in plan])
                return ttfts, time.perf_counter() - t0

        ttfts, wall = asyncio.run(main())
        st = stats_of(urls)
        done = [s["completed"] for s in st]
        prompt = sum(s["prompt_tokens"] for s in st)
        cached = sum(s["cached_tokens"] for s in st)
        ttfts.sort()
        return {"policy": policy, "requests": len(ttfts), "rps": len(ttfts) / wall,
                "hit_rate": cached / prompt if prompt else 0.0,
                "ttft_mean_ms": statistics.mean(ttfts) * 1000,
                "ttft_p99_ms": ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))] * 1000,
                "max_min_load": max(done) / max(1, min(done)), "per_worker": done}
    finally:
        if gw:
            stop(gw)
        for p, _ in mocks:
            stop(p)


def main():
    global KV_TOKENS, MODEL, MAX_TOKENS
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=48)
    ap.add_argument("--convs", type=int, default=3)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--kv-tokens", type=int, default=16000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--engine", choices=["mock", "llama"], default="mock")
    ap.add_argument("--engines", type=int, default=4, help="--engine llama: how many")
    ap.add_argument("--slots", type=int, default=2, help="--engine llama: context sequences per engine")
    args = ap.parse_args()
    KV_TOKENS = args.kv_tokens
    engines = None
    if args.engine == "llama":
        gguf = os.path.join(tempfile.mkdtemp(prefix="igmodel-"), "tiny.gguf")
        subprocess.run(["/usr/bin/python3", os.path.join(ENGINE, "tiny_gguf.py"), gguf], check=True)
        engines = (args.engines, args.slots, gguf)
        MODEL, MAX_TOKENS = "tiny", 4
        plan = make_workload(args.users, args.convs, args.turns, words=ENGINE_WORDS, system_words=24,
                             turn_words=(8, 24))
    else:
        os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
        plan = make_workload(args.users, args.convs, args.turns)
    policies = args.policies.split(",")
    runs = {p: [] for p in policies}
    for rep in range(args.reps):
        for p in policies:
            r = one_run(p, plan, engines)
            runs[p].append(r)
            print(f"[{rep}] {p:16s} hit {r['hit_rate']:.3f}  {r['rps']:7.1f} req/s  ttft mean "
                  f"{r['ttft_mean_ms']:6.1f} ms p99 {r['ttft_p99_ms']:6.1f} ms  max/min {r['max_min_load']:.2f}  "
                  f"{r['per_worker']}", flush=True)
    rows = []
    for p in policies:
        rs = runs[p]
        rows.append({k: statistics.median(r[k] for r in rs) if isinstance(rs[0][k], float) else rs[0][k]
                     for k in rs[0]})
    rr = next((r for r in rows if r["policy"] == "round_robin"), rows[0])
    oracle = next((r for r in rows if r["policy"] == "oracle"), None)
    t = ["| policy | cache hit rate | vs round_robin | vs oracle | requests/s | vs round_robin | "
         "TTFT mean ms | TTFT p99 ms | max/min requests per worker |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        vs_o = f"{r['hit_rate'] / oracle['hit_rate']:.2f}x" if oracle else "-"
        t.append(f"| {r['policy']} | {r['hit_rate']:.1%} | {r['hit_rate'] / rr['hit_rate']:.2f}x | {vs_o} | "
                 f"{r['rps']:.0f} | {r['rps'] / rr['rps']:.2f}x | {r['ttft_mean_ms']:.1f} | "
                 f"{r['ttft_p99_ms']:.1f} | {r['max_min_load']:.2f} |")
    if engines:
        meta = (f"{args.users} users, each {args.convs} conversations of {args.turns} turns (4 shared system "
                f"prompts of 24 words, user turns of 8-24 words, {MAX_TOKENS}-token answers), closed loop, streaming "
                f"(aiohttp); {args.engines} real llama.cpp engines (tools/llama-server: node-llama-cpp, a tiny "
                f"random-weight model, {args.slots} context sequences each, a request on the free sequence sharing "
                f"the most of its prompt); hit rate = the engines' own reused prompt tokens / prompt tokens; "
                f"infergate 1 thread; oracle: each conversation sent straight to one engine; engines and gateway "
                f"share the machine's 2 cores; median of {args.reps} run(s); measured {time.strftime('%Y-%m-%d')}.")
        name, title = "cache_engine", "Cache-aware routing on real engines"
    else:
        meta = (f"{args.users} users, each {args.convs} conversations of {args.turns} turns (4 shared system "
                f"prompts of {SYSTEM_WORDS} words, user turns of 40-160 words, 16-token answers), closed loop, "
                f"streaming (aiohttp on core 0); {WORKERS} mock workers with a {KV_TOKENS}-token prefix cache "
                f"each (an LRU of 128-byte blocks of the decoded prompt, keyed apart from the gateway) and 20 µs of "
                f"prefill per uncached token, one prefill at a time per worker; infergate 1 thread; oracle: each "
                f"conversation sent straight to one worker; median of {args.reps} run(s); measured "
                f"{time.strftime('%Y-%m-%d')}.")
        name, title = "cache", "Cache-aware routing"
    body = meta + "\n\n" + "\n".join(t) + "\n"
    write_results(name, title, body, {"meta": meta, "rows": rows, "runs": runs})


if __name__ == "__main__":
    main()
