"""HTTPS workers (issue 15): a real nginx terminating TLS in front of a mock
worker, with certificates the test makes with the openssl CLI. Data,
health checks and model discovery go over TLS; connections are pooled; a
new connection resumes the last session (TLS 1.2 and 1.3, as nginx's own
access log says); a certificate that does not verify is a 502 that says
why, and the health checks take the worker out; mTLS; bad files refuse to
start."""
import os
import signal
import subprocess

import httpx
import pytest

from conftest import stop_group, start_nginx, GATEWAY, SANITIZED, chat_body, free_port, sse_events, wait_for


@pytest.fixture
def tls_nginx(tmp_path):
    """nginx with TLS in front of an upstream port; its access log names
    each connection, its protocol and whether the session was reused."""
    started = []

    def start(upstream_port, pki, cert="srv", protocols="TLSv1.2 TLSv1.3", client_ca=False, port=None):
        d = tmp_path / f"nginx{len(started)}"
        d.mkdir()
        port = port or free_port()
        verify = f"ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;" if client_ca else ""
        p = start_nginx(d, f"""
  log_format tls '$connection $ssl_protocol $ssl_session_reused $request';
  access_log {d}/access.log tls;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/{cert}.pem; ssl_certificate_key {pki}/{cert}.key;
    ssl_protocols {protocols}; ssl_session_cache shared:S:1m; {verify}
    keepalive_requests 10000;
    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; proxy_http_version 1.1; proxy_buffering off; }}
  }}""", port)
        started.append(p)
        p.log = d / "access.log"
        p.port = port
        p.url = f"https://127.0.0.1:{port}"
        return p
    yield start
    for p in started:  # the master and its worker, as a group
        stop_group(p)
        p.stderr.close()


def log_lines(ngx):
    with open(ngx.log) as f:
        return [ln.split(" ", 3) for ln in f.read().splitlines()]


def metric(base, name):
    text = httpx.get(base + "/metrics").text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{"))


def ready(gw, n=1):
    return wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == n, 15)


@pytest.mark.parametrize("protocol", ["TLSv1.2", "TLSv1.3"])
def test_https_worker_streams_pools_and_resumes_sessions(procs, pki, tls_nginx, protocol):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki, protocols=protocol)
    # a connection per request: every request is a new TLS connection, which should resume
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), "--upstream-max-requests-per-conn", "1",
                       threads=1)
    assert ready(gw)
    # discovery went over TLS too: the mock's model is known
    assert [m["id"] for m in httpx.get(gw.base + "/v1/models").json()["data"]] == ["mock-model"]
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for i in range(12):
            with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=4)) as r:
                assert r.status_code == 200
                events = sse_events(r.iter_lines())
            assert events[-1] == "[DONE]" and len(events) >= 5
    posts = [ln for ln in log_lines(ngx) if ln[3].startswith("POST")]
    assert len(posts) == 12 and all(ln[1] == protocol for ln in posts)
    assert len({ln[0] for ln in posts}) == 12  # twelve connections
    reused = sum(ln[2] == "r" for ln in posts)
    assert reused >= 10, f"nginx saw {reused} of 12 connections resume"
    assert metric(gw.base, "infergate_worker_tls_resumed_total") >= reused


def test_https_connections_are_kept_alive(procs, pki, tls_nginx):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), threads=1)
    assert ready(gw)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for i in range(30):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    posts = [ln for ln in log_lines(ngx) if ln[3].startswith("POST")]
    assert len(posts) == 30 and len({ln[0] for ln in posts}) <= 2


@pytest.mark.parametrize("cert,why", [("rogue", "certificate verify failed"),
                                       ("other", "certificate verify failed"),
                                       ("expired", "certificate verify failed")])
def test_a_certificate_that_does_not_verify_is_a_502_that_says_why(procs, pki, tls_nginx, cert, why):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki, cert=cert)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), "--health-check-interval-secs", "0.3",
                       threads=1)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30)
    assert r.status_code in (502, 503), r.text
    if r.status_code == 502:
        err = r.json()["error"]
        assert err["code"] == "worker_tls_failed" and why in err["message"], err
    # the health checks fail over TLS too: the worker is not routable
    assert ready(gw, 0)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30)
    assert r.status_code == 503
    assert not [ln for ln in log_lines(ngx) if ln[3].startswith("POST")]  # nothing reached the worker


@pytest.mark.parametrize("cert,why", [("rogue", "self-signed"), ("expired", "expired"),
                                       ("other", "mismatch")])
def test_the_502_names_the_failed_check(procs, pki, tls_nginx, cert, why):
    """The worker's certificate changes under a running gateway (no health
    checks, a connection per request): the next request meets it."""
    w = procs.worker()
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), "--health-check-interval-secs", "0",
                       "--upstream-max-requests-per-conn", "1", threads=1)
    assert ready(gw)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30).status_code == 200
    stop_group(ngx)
    tls_nginx(w.port, pki, cert=cert, port=ngx.port)  # a new server: no session of the old one resumes
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["type"] == "upstream_error" and err["code"] == "worker_tls_failed"
    assert "certificate verify failed" in err["message"] and why in err["message"], err


def test_an_https_worker_that_dies_mid_stream_cuts_the_stream(procs, pki, tls_nginx):
    w = procs.worker("--token-interval-ms", "20")
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), threads=1)
    assert ready(gw)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=500)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            # the TLS worker goes away mid-answer: nginx's worker process and its master
            os.killpg(ngx.pid, signal.SIGKILL)
            ngx.wait(10)
            with pytest.raises(httpx.HTTPError):
                for _ in lines:
                    pass
    # the gateway is fine, and so are requests to the worker once it is back
    assert httpx.get(gw.base + "/health", timeout=10).status_code == 200


def test_insecure_accepts_any_certificate_and_says_so(procs, pki, tls_nginx):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki, cert="rogue")
    gw = procs.gateway([ngx.url], "--upstream-tls-insecure", threads=1)
    assert ready(gw)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30).status_code == 200
    gw.stop()
    assert "NOT checked" in gw.stderr


def test_mutual_tls(procs, pki, tls_nginx):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki, client_ca=True)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), "--client-cert-path",
                       str(pki / "client.pem"), "--client-key-path", str(pki / "client.key"), threads=1)
    assert ready(gw)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30).status_code == 200
    # without the certificate nginx refuses the request (its 400): the gateway passes that on
    gw2 = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), "--health-check-interval-secs", "0",
                        threads=1)
    r = httpx.post(gw2.base + "/v1/chat/completions", json=chat_body(), timeout=30)
    assert r.status_code == 400 and "certificate" in r.text


@pytest.mark.parametrize("args,says", [
    (["--ca-cert-path", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    (["--client-cert-path", "CLIENT"], "--client-key-path"),
    (["--client-cert-path", "CLIENT", "--client-key-path", "ROGUEKEY"], "client certificate"),
])
def test_bad_certificate_files_refuse_to_start(pki, args, says):
    args = [a.replace("CLIENT", str(pki / "client.pem")).replace("ROGUEKEY", str(pki / "rogue.key")) for a in args]
    out = subprocess.run([GATEWAY, "--port", "0", "--worker-urls", "https://127.0.0.1:1", *args],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr


def test_workers_added_at_run_time_may_be_https(procs, pki, tls_nginx):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([], "--ca-cert-path", str(pki / "ca.pem"), threads=1)
    r = httpx.post(gw.base + "/workers", json={"url": ngx.url}, timeout=30)
    assert r.status_code == 202, r.text
    assert ready(gw)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(), timeout=30).status_code == 200
    assert os.path.exists(ngx.log)


def test_control_broadcasts_reach_https_workers(procs, pki, tls_nginx):
    w = procs.worker()
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), threads=1)
    assert ready(gw)
    r = httpx.post(gw.base + "/pause_generation", timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["ok"] is True, r.text
    assert w.stats()["paused"] == 1
    r = httpx.post(gw.base + "/continue_generation", timeout=30)
    assert r.status_code == 200 and w.stats()["paused"] == 0
    assert any(ln[3].startswith("POST /pause_generation") for ln in log_lines(ngx))


@pytest.mark.skipif(SANITIZED, reason="the spread is the plain run's")
def test_the_spread_over_a_pre_fork_server_holds_over_tls(procs, pki, tmp_path):
    """Real uvicorn --workers 8 serving TLS itself, each process a
    Semaphore(4) in front of 50 ms of awaited work, 64 clients: with the
    process header every process gets 0.5-1.5x its share, keep-alive holds,
    and the probes' new connections resume sessions."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    from prefork_app import APP
    from test_spread_real import drive
    (tmp_path / "tlsapp.py").write_text(APP)
    port = free_port()
    srv = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "tlsapp:app", "--workers", "8", "--host",
                            "127.0.0.1", "--port", str(port), "--log-level", "warning",
                            "--ssl-certfile", str(pki / "srv.pem"), "--ssl-keyfile", str(pki / "srv.key")],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path), "SLOTS": "4",
                                              "WORK": "0.05"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        seen = set()

        def all_up():
            try:
                with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(pki / "ca.pem")) as c:
                    for _ in range(50):
                        seen.add(c.get("/healthz", headers={"connection": "close"}).json()["pid"])
            except httpx.HTTPError:
                return False
            return len(seen) == 8
        assert wait_for(all_up, 90), seen
        gw = procs.gateway([f"https://127.0.0.1:{port}"], "--ca-cert-path", str(pki / "ca.pem"),
                           "--forward-paths", "/run", "--worker-max-inflight", "32", "--upstream-process-header",
                           "X-Backend-Pid", "--health-check-endpoint", "/healthz")
        drive(gw.base, 8)

        def opened():
            return httpx.get(gw.base + "/workers").json()["workers"][0]["connections"]["opened"]
        before = opened()
        pids = drive(gw.base, 30)
        total = sum(pids.values())
        assert total == 64 * 30
        shares = sorted(pids[p] / (total / 8) for p in seen)
        assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
        assert opened() - before <= 0.05 * total
        assert metric(gw.base, "infergate_worker_tls_resumed_total") > 0
    finally:
        os.killpg(srv.pid, 15)
        srv.wait(15)


def test_a_slow_client_pauses_an_https_worker_and_loses_nothing(procs, pki, tls_nginx):
    """The worker's answer comes faster than the client reads: the gateway
    stops reading the TLS connection in the middle of what it had, and
    picks up exactly there when the client catches up."""
    import time
    w = procs.worker()
    ngx = tls_nginx(w.port, pki)
    gw = procs.gateway([ngx.url], "--ca-cert-path", str(pki / "ca.pem"), threads=1)
    assert ready(gw)
    n = 40000
    with httpx.Client(base_url=gw.base, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=n)) as r:
            got, slow = [], 0
            for chunk in r.iter_bytes(16384):
                got.append(chunk)
                if slow < 40:  # long enough for the gateway's queue to the client to fill
                    slow += 1
                    time.sleep(0.02)
    body = b"".join(got).decode()
    events = [ln[6:] for ln in body.split("\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    import json
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "".join(f"tok{i} " for i in range(n))
