"""Shared pieces of the benchmarks: ports, pinning, CPU time from /proc, wrk."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("IG_BUILD", os.path.join(ROOT, "build"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CORE, SERVER_CORE = "0", "1"
BODY = '{"model":"mock-model","messages":[{"role":"user","content":"Hello, how are you?"}],"max_tokens":8}'
last_wrk_output = ""


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


def tree_pids(pid):
    """pid and all its descendants (nginx and haproxy fork)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        yield p
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass


def tree_cpu_ticks(pid):
    """utime+stime of pid and all its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def tree_rss_kb(pid):
    """Resident memory of pid and all its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
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


def run_wrk(port, duration, conns, work, scheme="http"):
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    url = f"{scheme}://127.0.0.1:{port}/v1/chat/completions"
    global last_wrk_output
    out = last_wrk_output = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
                          "--latency", "-s", lua, url], capture_output=True, text=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "p50_ms": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
           "p99_ms": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    return res




def start_mock(*args):
    """One infergate-mockworker on the server core; returns (process, [ports])."""
    p = subprocess.Popen(["taskset", "-c", SERVER_CORE, os.path.join(BUILD, "infergate-mockworker"),
                          "--port", "0", *map(str, args)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    ports = []
    for line in p.stdout:
        if line.startswith("PORTS "):
            ports = [int(x) for x in line.split()[1:]]
        if line.startswith("READY port="):
            return p, ports or [int(line.split("=")[1])]
    raise RuntimeError("mock worker did not start")


def cpu_us_per_request(pid, fn):
    """Run fn() (returns a wrk result) and add the CPU microseconds per request of pid's tree."""
    t0 = tree_cpu_ticks(pid)
    r = fn()
    r["cpu_us_per_req"] = (tree_cpu_ticks(pid) - t0) * 1e6 / CLK_TCK / max(r["requests"], 1)
    return r


def nginx_conf(work, port, upstream_block, connections=9000):
    """An nginx.conf for one worker process proxying to upstream `be` without buffering."""
    return f"""worker_processes 1;
worker_rlimit_nofile {max(connections + 200, 1024)};
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log crit;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{upstream_block}
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
"""


def haproxy_conf(port, servers, queue_timeout=False, maxconn=9000, timeout="60s"):
    """A haproxy.cfg with one thread and reused server connections; servers are 'server ...' lines."""
    queue = "    timeout queue 60s\n" if queue_timeout else ""
    return f"""global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client {timeout}
    timeout server {timeout}
{queue}    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
{servers}
"""


def update_readme(section, body):
    """Replace what stands between <!-- bench:SECTION --> and <!-- /bench:SECTION -->."""
    readme = os.path.join(ROOT, "README.md")
    text = open(readme).read()
    a, b = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    if a in text and b in text:
        text = text[:text.index(a) + len(a)] + "\n" + body + text[text.index(b):]
        with open(readme, "w") as f:
            f.write(text)


def write_results(name, title, body, data):
    """bench/results/NAME.md and .json, the README section NAME, and the console."""
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", f"{name}.md"), "w") as f:
        f.write(f"# {title}\n\n" + body)
    with open(os.path.join(ROOT, "bench", "results", f"{name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    update_readme(name, body)
    print(body)
