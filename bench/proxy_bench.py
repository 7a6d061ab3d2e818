"""Proxy overhead benchmark: wrk posts a small chat request on 64 keep-alive
connections to one fast mock worker, directly and through each proxy, all in
one run and pinned the same way (wrk on core 0; proxy and backend on core 1).
Writes bench/results/proxy.{md,json} and the table into README.md.

Usage: /usr/bin/python3 bench/proxy_bench.py [--duration S] [--connections N] [--only a,b]"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("IG_BUILD", os.path.join(ROOT, "build"))
last_wrk_output = ""
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CORE, SERVER_CORE = "0", "1"
BODY = '{"model":"mock-model","messages":[{"role":"user","content":"Hello, how are you?"}],"max_tokens":8}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree_cpu_ticks(pid):
    """utime+stime of pid and all its descendants (nginx and haproxy may fork)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def pinned(cmd, **kw):
    # output to a file: an unread pipe would fill up and stall a chatty proxy
    log = open(os.path.join(tempfile.gettempdir(), f"igbench-{os.path.basename(cmd[0])}.log"), "w")
    return subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd], stdout=log, stderr=log,
                            start_new_session=True, **kw)


def stop(p):
    if p and p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def start_contender(name, backend_port, work):
    port = free_port()
    up = f"127.0.0.1:{backend_port}"
    if name == "infergate":
        p = pinned([os.path.join(BUILD, "infergate"), "--port", str(port), "--threads", "1",
                    "--log-level", "warn", "--worker-urls", "http://" + up])
    elif name == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 {up}
""")
        p = pinned(["haproxy", "-db", "-f", cfg])
    elif name == "nginx":
        cfg = os.path.join(work, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 9000; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream be {{ server {up}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
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


WRK_LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
""" % BODY


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        raise ValueError(f"unexpected wrk latency {v!r}")
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]


def run_wrk(port, duration, conns, work):
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    global last_wrk_output
    out = last_wrk_output = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
                          "--latency", "-s", lua, url], capture_output=True, text=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "p50_ms": to_ms(re.search(r"50%\s+(\S+)", out).group(1)),
           "p99_ms": to_ms(re.search(r"99%\s+(\S+)", out).group(1))}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    names = ["direct", "infergate", "haproxy", "nginx", "caddy", "python-aiohttp"]
    if args.only:
        names = [n for n in names if n in args.only.split(",") or n == "direct"]
    work = tempfile.mkdtemp(prefix="igbench-")
    backend = subprocess.Popen(["taskset", "-c", SERVER_CORE, os.path.join(BUILD, "infergate-mockworker"),
                                "--port", "0", "--worker-id", "bench", "--tokens", "8"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    bport = int(backend.stdout.readline().split("=")[1])
    results, running = [], []
    try:
        for name in names:
            p, port = (None, bport) if name == "direct" else start_contender(name, bport, work)
            running.append(p)
            run_wrk(port, 1, args.connections, work)  # warm-up: pools, JIT-free but caches
            pid = p.pid if p else backend.pid
            t0 = tree_cpu_ticks(pid)
            try:
                r = run_wrk(port, args.duration, args.connections, work)
            except (AttributeError, ValueError) as e:
                raise SystemExit(f"{name}: cannot read wrk output ({e}):\n{last_wrk_output}")
            ticks = tree_cpu_ticks(pid) - t0
            r["name"] = name
            r["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / max(r["requests"], 1)
            results.append(r)
            print(f"{name:15s} {r['rps']:10.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                  f"  cpu {r['cpu_us_per_req']:.1f} us/req  errors {r['errors']}", flush=True)
            stop(p)
    finally:
        for p in running:
            stop(p)
        stop(backend)
        shutil.rmtree(work, ignore_errors=True)
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
            f"core {SERVER_CORE}; one thread/process/GOMAXPROCS per proxy; measured {time.strftime('%Y-%m-%d')}.")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "proxy.md"), "w") as f:
        f.write(f"# Proxy overhead\n\n{meta}\n\n{table}\n")
    with open(os.path.join(ROOT, "bench", "results", "proxy.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    plot(results)
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    start, end = "<!-- bench:proxy -->", "<!-- /bench:proxy -->"
    if start in text and end in text:
        text = text[:text.index(start) + len(start)] + f"\n{meta}\n\n{table}\n" + text[text.index(end):]
        with open(readme, "w") as f:
            f.write(text)
    print(table)


if __name__ == "__main__":
    main()
