"""HTTPS from clients (issue 15): --tls-cert-path/--tls-key-path, with
real clients (httpx, requests, aiohttp, curl, openssl s_client, the OpenAI
Node SDK) that check the certificate against the test's CA. Keep-alive and
streaming as over plain HTTP; plain HTTP to the port never gets a 200; old
protocols refused; sessions resumed; client certificates when asked for;
the certificate reloaded on SIGHUP while open connections stay."""
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess

import aiohttp
import httpx
import pytest
import requests

from conftest import GATEWAY, chat_body, sse_events, wait_for

TOKENS20 = "".join(f"tok{i} " for i in range(20))


def tls_gateway(procs, pki, workers, *args, cert="srv", **kw):
    return procs.gateway(workers, "--tls-cert-path", str(pki / f"{cert}.pem"), "--tls-key-path",
                         str(pki / f"{cert}.key"), *args, **kw)


def metric(gw, ca, name):
    text = httpx.get(gw.base + "/metrics", verify=ca).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + " "))


def test_httpx_streams_and_keeps_the_connection(procs, pki):
    w = procs.worker()
    gw = tls_gateway(procs, pki, [w])
    assert gw.base.startswith("https://")
    ca = str(pki / "ca.pem")
    with httpx.Client(base_url=gw.base, verify=ca, timeout=30) as c:
        for _ in range(5):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=3))
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=20)) as r:
            events = sse_events(r.iter_lines())
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == TOKENS20
    # one TLS connection carried all six requests (the /metrics read below is the second)
    assert metric(gw, ca, "infergate_client_connections_total") == 2


def test_requests_and_aiohttp_and_curl(procs, pki):
    w = procs.worker()
    gw = tls_gateway(procs, pki, [w])
    ca = str(pki / "ca.pem")
    with requests.Session() as s:
        for _ in range(3):
            r = s.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), verify=ca, timeout=30)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 "

    async def go():
        ctx = ssl.create_default_context(cafile=ca)
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.post(gw.base + "/v1/chat/completions", json=chat_body(stream=True, max_tokens=4),
                                  ssl=ctx) as r:
                    assert r.status == 200
                    body = await r.text()
                    assert body.rstrip().endswith("data: [DONE]")
    asyncio.run(go())
    out = subprocess.run(["curl", "-sS", "--cacert", ca, gw.base + "/health", gw.base + "/health", "-w",
                          "%{num_connects}\n"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('{"status":"ok",') == 2
    assert out.stdout.strip().splitlines()[-1] == "0"  # curl reused its connection for the second


def test_openai_node_sdk_over_https(procs, pki):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = tls_gateway(procs, pki, [w1, w2], "--policy", "round_robin")
    script = os.path.join(os.path.dirname(__file__), "..", "node", "openai_client.mjs")
    out = subprocess.run(["node", script, gw.base + "/v1"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NODE_EXTRA_CA_CERTS": str(pki / "ca.pem")})
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["plain"] == "tok0 tok1 tok2 tok3 tok4 " and "".join(res["stream"]) == TOKENS20
    assert res["error"]["status"] == 404


def test_a_big_upload_and_a_big_answer_over_tls(procs, pki, asgi_server, tmp_path):
    app = '''
import hashlib
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

async def upload(request):
    h, n = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return JSONResponse({"len": n, "sha256": h.hexdigest()})

async def blob(request):
    return Response(bytes(range(256)) * (int(request.query_params["kb"]) * 4), media_type="application/octet-stream")

async def healthz(request):
    return JSONResponse({"ok": True})

app = Starlette(routes=[Route("/upload", upload, methods=["POST"]), Route("/blob", blob), Route("/healthz", healthz)])
'''
    url = asgi_server(app)
    gw = tls_gateway(procs, pki, [url], "--forward-paths", "/upload", "/blob", "--health-check-endpoint",
                     "/healthz", "--max-payload-size", str(1 << 28), threads=1)
    data = os.urandom(24 << 20)
    with httpx.Client(base_url=gw.base, verify=str(pki / "ca.pem"), timeout=120) as c:
        r = c.post("/upload", content=(data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)))
        assert r.status_code == 200 and r.json() == {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        r = c.get("/blob?kb=16384")  # 16 MiB back through TLS, the client slower than the worker
        assert r.status_code == 200 and r.content == bytes(range(256)) * (16384 * 4)


def test_plain_http_to_the_tls_port_is_never_a_200(procs, pki):
    gw = tls_gateway(procs, pki, [procs.worker()])
    port = gw.port
    r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "tls_required"
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body(), timeout=10)
    assert r.status_code == 400
    # garbage that is not even HTTP: closed
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"\x00\x01\x02hello")
    s.settimeout(10)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    assert b" 200 " not in data
    assert httpx.get(gw.base + "/health", verify=str(pki / "ca.pem")).status_code == 200
    assert metric(gw, str(pki / "ca.pem"), "infergate_client_tls_failures_total") >= 3


def s_client(port, *args, stdin=b"", cafile=None):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if cafile:
        cmd += ["-CAfile", cafile, "-verify_return_error"]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=20)


def test_tls_versions_alpn_and_resumption(procs, pki, tmp_path):
    gw = tls_gateway(procs, pki, [procs.worker()])
    ca = str(pki / "ca.pem")
    old = s_client(gw.port, "-tls1_1", cafile=ca)
    assert old.returncode != 0  # TLS 1.1: refused
    for v in ("-tls1_2", "-tls1_3"):
        ok = s_client(gw.port, v, "-alpn", "h2,http/1.1", cafile=ca)
        assert ok.returncode == 0, ok.stderr
        assert b"ALPN protocol: http/1.1" in ok.stdout
        sess = tmp_path / f"sess{v}"
        first = s_client(gw.port, v, "-ign_eof", "-sess_out", str(sess), cafile=ca,
                         stdin=b"GET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        assert b'{"status":"ok",' in first.stdout
        again = s_client(gw.port, v, "-sess_in", str(sess), cafile=ca)
        assert b"Reused," in again.stdout, again.stdout[-800:]


def test_client_certificates_when_asked_for(procs, pki):
    gw = tls_gateway(procs, pki, [procs.worker()], "--tls-client-ca-path", str(pki / "ca.pem"))
    ca = str(pki / "ca.pem")
    with pytest.raises((httpx.HTTPError, ssl.SSLError)):
        httpx.get(gw.base + "/health", verify=ca, timeout=10)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    r = httpx.get(gw.base + "/health", verify=ctx, timeout=10)
    assert r.status_code == 200
    # a certificate from another CA is not one
    bad = ssl.create_default_context(cafile=ca)
    bad.load_cert_chain(str(pki / "rogue.pem"), str(pki / "rogue.key"))
    with pytest.raises((httpx.HTTPError, ssl.SSLError)):
        httpx.get(gw.base + "/health", verify=bad, timeout=10)


def peer_cn(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


def test_sighup_reloads_the_certificate_and_keeps_open_connections(procs, pki, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki / "srv.pem", cert)
    shutil.copy(pki / "srv.key", key)
    w = procs.worker("--token-interval-ms", "50")
    gw = procs.gateway([w], "--tls-cert-path", str(cert), "--tls-key-path", str(key))
    ca = str(pki / "ca.pem")
    assert peer_cn(gw.port, ca) == "localhost"
    with httpx.Client(base_url=gw.base, verify=ca, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=20)) as r:
            lines = r.iter_lines()
            first = next(lines)
            shutil.copy(pki / "srv2.pem", cert)
            shutil.copy(pki / "srv2.key", key)
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: peer_cn(gw.port, ca) == "reloaded", 10)
            rest = sse_events([first, *lines])  # the stream under way finished on the old certificate
        assert rest[-1] == "[DONE]"
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))  # the kept connection still works
        assert r.status_code == 200
    # a reload that fails keeps the certificate in use
    key.write_text("not a key")
    gw.proc.send_signal(signal.SIGHUP)
    assert peer_cn(gw.port, ca) == "reloaded"
    assert httpx.get(gw.base + "/health", verify=ca).status_code == 200
    gw.stop()
    assert "the old certificate stays" in gw.stderr


@pytest.mark.parametrize("args,says", [
    (["--tls-cert-path", "/nonexistent.pem", "--tls-key-path", "KEY"], "/nonexistent.pem"),
    (["--tls-cert-path", "CERT"], "go together"),
    (["--tls-cert-path", "CERT", "--tls-key-path", "ROGUEKEY"], "does not match"),
    (["--tls-client-ca-path", "CA"], "--tls-cert-path"),
])
def test_bad_server_certificate_files_refuse_to_start(pki, args, says):
    sub = {"CERT": str(pki / "srv.pem"), "KEY": str(pki / "srv.key"), "ROGUEKEY": str(pki / "rogue.key"),
           "CA": str(pki / "ca.pem")}
    args = [sub.get(a, a) for a in args]
    out = subprocess.run([GATEWAY, "--port", "0", *args], capture_output=True, text=True, timeout=20)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr
