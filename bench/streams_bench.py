"""Memory per open stream: N concurrent SSE streams held open through each
proxy (infergate, nginx with proxy_buffering off, HAProxy), one event every
few seconds; resident memory of the proxy's process tree with no streams and
with N, and the difference per stream. N defaults to 4,000; about 9,000 is
the most this machine allows (20,000 descriptors per process, two per stream
in a proxy), and nginx did not get past about 8,700 here. Writes
bench/results/streams.md and .json and the README section.

With --tls every hop is TLS: the clients speak HTTPS to the proxy (its own
certificate, checked against the bench's CA) and the proxy speaks HTTPS to
the worker (an nginx terminating TLS in front of the mock, the same for
every proxy, not measured), so the table is the memory a proxy needs for
two TLS connections per stream: bench/results/streams_tls.md.

Usage: /usr/bin/python3 bench/streams_bench.py [--streams 4000] [--proxies infergate] [--tls]"""
import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time

import benchlib
from benchlib import free_port, haproxy_conf, nginx_conf, pinned, start_mock, stop, tree_rss_kb, wait_port, write_results
from proxy_bench import start_contender

PROXIES = ["infergate", "nginx", "haproxy"]


def make_pki(work):
    """An ECDSA P-256 CA and a certificate for 127.0.0.1 signed by it."""
    def sh(*a):
        subprocess.run(a, cwd=work, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA")
    sh("openssl", "req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(work, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    with open(os.path.join(work, "srv-combined.pem"), "w") as f:  # HAProxy's crt: certificate and key
        f.write(open(os.path.join(work, "srv.pem")).read() + open(os.path.join(work, "srv.key")).read())
    return {k: os.path.join(work, k) for k in ("ca.pem", "srv.pem", "srv.key", "srv-combined.pem")}


def start_tls_backend(mock_port, work, pki, n):
    """nginx terminating TLS in front of the mock: the worker every proxy reaches over TLS."""
    port = free_port()
    d = os.path.join(work, "backend")
    os.makedirs(d, exist_ok=True)
    conf = nginx_conf(d, port, f"    upstream be {{ server 127.0.0.1:{mock_port}; keepalive 256; }}",
                      connections=2 * n + 500)
    conf = conf.replace(f"listen 127.0.0.1:{port};", f"listen 127.0.0.1:{port} ssl; ssl_certificate "
                        f"{pki['srv.pem']}; ssl_certificate_key {pki['srv.key']}; ssl_session_cache shared:B:20m;")
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    p = subprocess.Popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port)
    return p, port


def start_tls_contender(name, backend_port, work, pki, streams, extra=()):
    """The proxy with TLS on both sides: its own certificate to clients, the worker's checked."""
    port = free_port()
    up = f"127.0.0.1:{backend_port}"
    if name == "infergate":
        p = pinned([os.path.join(benchlib.BUILD, "infergate"), "--port", str(port), "--threads", "1",
                    "--log-level", "warn", "--worker-urls", "https://" + up, "--ca-cert-path", pki["ca.pem"],
                    "--tls-cert-path", pki["srv.pem"], "--tls-key-path", pki["srv.key"], *extra])
    elif name == "haproxy":
        cfg = os.path.join(work, "haproxy.cfg")
        conf = haproxy_conf(port, f"    server s1 {up} ssl verify required ca-file {pki['ca.pem']}",
                            maxconn=max(9000, streams + 500), timeout="600s")
        conf = conf.replace(f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port} ssl crt {pki['srv-combined.pem']} "
                            "alpn http/1.1")
        with open(cfg, "w") as f:
            f.write(conf)
        p = pinned(["haproxy", "-db", "-f", cfg])
    elif name == "nginx":
        cfg = os.path.join(work, "nginx.conf")
        conf = nginx_conf(work, port, f"    upstream be {{ server {up}; keepalive 128; }}",
                          connections=max(9000, 2 * streams + 500))
        conf = conf.replace(f"listen 127.0.0.1:{port};", f"listen 127.0.0.1:{port} ssl; ssl_certificate "
                            f"{pki['srv.pem']}; ssl_certificate_key {pki['srv.key']};")
        conf = conf.replace("proxy_pass http://be;", f"proxy_pass https://be; proxy_ssl_verify on; "
                            f"proxy_ssl_trusted_certificate {pki['ca.pem']}; proxy_ssl_name 127.0.0.1; proxy_ssl_session_reuse on;")
        with open(cfg, "w") as f:
            f.write(conf)
        p = pinned(["nginx", "-c", cfg, "-p", work])
    else:
        raise ValueError(name)
    wait_port(port)
    return p, port


async def hold_streams(port, n, ready, release, tls=None):
    body = json.dumps({"model": "mock-model", "stream": True, "max_tokens": 100000,
                       "messages": [{"role": "user", "content": "hold"}]}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           b"x-mock-token-interval-ms: 3000\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    opened = []

    async def one():
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None), 30)
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


def measure(name, mock_port, n, pki=None):
    work = tempfile.mkdtemp(prefix=f"igstreams-{name}-")
    tls = None
    if pki:
        p, port = start_tls_contender(name, mock_port, work, pki, n)
        tls = ssl.create_default_context(cafile=pki["ca.pem"])
    else:
        p, port = start_contender(name, mock_port, work, streams=n)
    try:
        wait_port(port)
        time.sleep(0.5)
        idle = tree_rss_kb(p.pid)

        async def main():
            ready, release = [], asyncio.Event()
            t0 = time.time()
            tasks, failed = await hold_streams(port, n, ready, release, tls)
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
    ap.add_argument("--tls", action="store_true", help="TLS from the clients and to the worker")
    args = ap.parse_args()
    names = args.proxies.split(",")
    os.sched_setaffinity(0, {int(benchlib.LOAD_CORE)})
    mock, ports = start_mock("--tokens", "100000")
    pkidir = tempfile.mkdtemp(prefix="igstreams-pki-") if args.tls else None
    pki = make_pki(pkidir) if args.tls else None
    backend, bport = start_tls_backend(ports[0], pkidir, pki, args.streams) if args.tls else (None, ports[0])
    try:
        rows = []
        for name in names:
            r = measure(name, bport, args.streams, pki)
            rows.append(r)
            print(f"{name:10s} idle {r['idle_kb'] / 1024:6.1f} MB  with {r['streams']} streams ({r['failed']} failed) "
                  f"{r['peak_kb'] / 1024:7.1f} MB  {r['per_stream_kb']:.2f} kB/stream", flush=True)
    finally:
        stop(backend)
        stop(mock)
        if pkidir:
            shutil.rmtree(pkidir, ignore_errors=True)
    if names != PROXIES:
        return
    ig = rows[0]
    hap = next(r for r in rows if r["proxy"] == "haproxy")
    t = ["| proxy | streams open | RSS idle (MB) | RSS with the streams (MB) | per open stream (kB) | vs infergate "
         "| vs HAProxy |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t.append(f"| {r['proxy']} | {r['streams']} | {r['idle_kb'] / 1024:.1f} | {r['peak_kb'] / 1024:.1f} | "
                 f"{r['per_stream_kb']:.2f} | {r['per_stream_kb'] / ig['per_stream_kb']:.2f}x | "
                 f"{r['per_stream_kb'] / hap['per_stream_kb']:.2f}x |")
    tls = (" Every hop is TLS: HTTPS from the clients (ECDSA P-256 certificate, checked by the clients) and HTTPS "
           "to the worker (an nginx terminating TLS in front of the mock, not measured; the proxy checks its "
           "certificate)." if args.tls else "")
    meta = (f"{args.streams} concurrent SSE streams asked for, held open through each proxy (one event every 3 s from "
            f"one mock worker), resident memory of the proxy's processes before and at the peak; one "
            f"thread or process each (about 9,000 streams is this machine's ceiling: 20,000 descriptors per "
            f"process, two per stream in a proxy).{tls} Measured {time.strftime('%Y-%m-%d')}.")
    body = meta + "\n\n" + "\n".join(t) + "\n"
    name = "streams_tls" if args.tls else "streams"
    write_results(name, "Memory per open stream" + (" over TLS" if args.tls else ""), body,
                  {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
