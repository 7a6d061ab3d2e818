"""Prefill/decode disaggregation overhead: what a disaggregated request costs
infergate over a plain one, on the same mock workers in one run. Plain: one
regular mock worker. PD: a prefill and a decode mock, in SGLang's protocol
(both halves at once) and vLLM's (the prefill first, then the decode with
its kv_transfer_params). wrk posts a small chat on keep-alive connections
(wrk on core 0, gateway and mocks on core 1); the gateway's own CPU per
request is read from /proc. Then one client sends streaming requests one at
a time and times the first byte, directly to a mock and through each set-up.
No peer proxy does PD (HAProxy, nginx and Caddy have no such mode;
sgl-model-gateway is not in Debian), so the comparison is with infergate's
own plain routing. Writes bench/results/pd.{md,json} and the README table.

Usage: /usr/bin/python3 bench/pd_bench.py [--duration S] [--reps N] [--connections N] [--ttfb N]"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import tempfile
import time

import benchlib
from benchlib import BUILD, CLK_TCK, free_port, pinned, run_wrk, start_mock, stop, tree_cpu_ticks, wait_port

STREAM = json.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "Hello, how are you?"}],
                     "max_tokens": 8, "stream": True})


def start_setup(name):
    """The mocks and the gateway of one set-up: (gateway, [mocks], gateway port)."""
    mocks, gw_args = [], []
    if name == "plain":
        m, (port,) = start_mock("--worker-id", "w0", "--tokens", "8")
        mocks.append(m)
        gw_args = ["--worker-urls", f"http://127.0.0.1:{port}"]
    else:
        proto = "vllm" if name == "pd-vllm" else "sglang"
        bp = free_port()
        p, (pport,) = start_mock("--worker-id", "p0", "--role", "prefill", "--bootstrap-port", bp,
                                 "--pd-protocol", proto)
        d, (dport,) = start_mock("--worker-id", "d0", "--role", "decode", "--tokens", "8", "--pd-protocol", proto)
        mocks += [p, d]
        gw_args = ["--pd-disaggregation", "--pd-protocol", proto, "--prefill", f"http://127.0.0.1:{pport}", str(bp),
                   "--decode", f"http://127.0.0.1:{dport}"]
    port = free_port()
    gw = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1", "--log-level", "warn",
                 "--health-check-interval-secs", "0", *gw_args])
    wait_port(port)
    time.sleep(0.3)  # discovery
    return gw, mocks, port


def ttfb_us(port, n):
    """First-byte times of n streamed chats sent one at a time on one connection, in µs."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        c.request("POST", "/v1/chat/completions", STREAM, {"content-type": "application/json"})
        r = c.getresponse()  # infergate sends the head with the first body bytes
        dt = time.perf_counter() - t
        r.read()
        if r.status != 200:
            raise SystemExit(f"status {r.status} on port {port}")
        if i >= 20:  # warm-up: connections, pools
            out.append(dt * 1e6)
    c.close()
    return out


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--ttfb", type=int, default=400)
    args = ap.parse_args()
    names = ["plain", "pd-sglang", "pd-vllm"]
    work = tempfile.mkdtemp(prefix="igpd-")
    runs = {n: [] for n in names}
    ttfb = {n: [] for n in names + ["direct"]}
    for rep in range(args.reps):
        for name in names:  # interleaved: the machine is small and shared
            gw, mocks, port = start_setup(name)
            try:
                run_wrk(port, 1, args.connections, work)
                t0 = tree_cpu_ticks(gw.pid)
                b0 = sum(tree_cpu_ticks(m.pid) for m in mocks)
                r = run_wrk(port, args.duration, args.connections, work)
                r["cpu_us_per_req"] = (tree_cpu_ticks(gw.pid) - t0) * 1e6 / CLK_TCK / max(r["requests"], 1)
                r["backend_cpu_us_per_req"] = ((sum(tree_cpu_ticks(m.pid) for m in mocks) - b0) * 1e6 / CLK_TCK /
                                               max(r["requests"], 1))
                runs[name].append(r)
                ttfb[name] += ttfb_us(port, args.ttfb)
                if name == "plain":  # the same mock, no gateway
                    mport = int(gw.args[gw.args.index("--worker-urls") + 1].rsplit(":", 1)[1])
                    ttfb["direct"] += ttfb_us(mport, args.ttfb)
                print(f"[{rep}] {name:10s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                      f"gateway {r['cpu_us_per_req']:.1f} us/req  mocks {r['backend_cpu_us_per_req']:.1f} us/req  "
                      f"errors {r['errors']}", flush=True)
            finally:
                stop(gw)
                for m in mocks:
                    stop(m)
    res = []
    for name in names:
        rs = runs[name]
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "backend_cpu_us_per_req")}
        res.append({"name": name, **med, "errors": sum(r["errors"] for r in rs),
                    "ttfb_p50_us": pct(ttfb[name], 0.5), "ttfb_p99_us": pct(ttfb[name], 0.99), "runs": rs})
    shutil.rmtree(work, ignore_errors=True)
    direct = {"p50": pct(ttfb["direct"], 0.5), "p99": pct(ttfb["direct"], 0.99)}
    write(res, direct, args)


def write(res, direct, args):
    plain = res[0]
    rows = ["| set-up | req/s (x plain) | gateway CPU per request (x plain) | mocks' CPU per request (x plain) | "
            "p99 latency (x plain) | first byte p50 (x direct) | first byte p99 (x direct) | errors |",
            "|---|---|---|---|---|---|---|---|"]
    label = {"plain": "plain routing, one worker", "pd-sglang": "PD, SGLang (both halves at once)",
             "pd-vllm": "PD, vLLM (prefill, then decode)"}
    for r in res:
        rows.append(f"| {label[r['name']]} | {r['rps'] / plain['rps']:.2f} | "
                    f"{r['cpu_us_per_req'] / plain['cpu_us_per_req']:.2f} | "
                    f"{r['backend_cpu_us_per_req'] / plain['backend_cpu_us_per_req']:.2f} | "
                    f"{r['p99_ms'] / plain['p99_ms']:.2f} | {r['ttfb_p50_us'] / direct['p50']:.2f} | "
                    f"{r['ttfb_p99_us'] / direct['p99']:.2f} | {r['errors']} |")
    added = {r["name"]: r["ttfb_p50_us"] - plain["ttfb_p50_us"] for r in res[1:]}
    cpu = {r["name"]: r["cpu_us_per_req"] - plain["cpu_us_per_req"] for r in res[1:]}
    body = "\n".join(rows) + (
        f"\n\nOver plain routing a disaggregated request adds {cpu['pd-sglang']:.0f} µs of gateway CPU (SGLang: "
        f"a second exchange) or {cpu['pd-vllm']:.0f} µs (vLLM: a second exchange and reading the prefill's "
        f"answer), and {added['pd-sglang']:.0f} / {added['pd-vllm']:.0f} µs to the first byte at the median, "
        f"most of it the mock decode fetching its KV from the mock prefill (a loopback HTTP request) and, for "
        f"vLLM, the prefill's round trip before the decode's. Throughput is the mocks' here: a pair does ten "
        f"times one mock's work on the same core. wrk, {args.connections} keep-alive connections, small chats "
        f"(8 tokens, not streamed), {args.duration} s x {args.reps} interleaved rounds, medians; first byte: "
        f"{args.ttfb} streamed chats one at a time per round, direct = straight to the regular mock. No peer "
        f"proxy has a PD mode (HAProxy, nginx, Caddy; sgl-model-gateway is not in Debian). Measured "
        f"{time.strftime('%Y-%m-%d')} with `/usr/bin/python3 bench/pd_bench.py`.\n")
    benchlib.write_results("pd", "Prefill/decode disaggregation overhead", body,
                           {"results": res, "direct_ttfb_us": direct})


if __name__ == "__main__":
    main()
