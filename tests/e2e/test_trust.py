"""Who counts as an admin and what a client or a worker may influence
(issue 12, classes 6-10 and 12): the admin allow-list, the keyless admin API
behind a real same-host nginx, session keys a worker may not claim, two
Authorization headers, the /metrics key, log lines a request cannot forge,
SIGHUP."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import stop_group, chat_body, free_port, start_nginx, wait_for


def client_from(addr, base, **kw):
    """An httpx client whose connections come from this loopback address."""
    return httpx.Client(base_url=base, timeout=10, transport=httpx.HTTPTransport(local_address=addr), **kw)


# ---- class 6: the admin API's trust rule ----

def test_admin_allow_list_decides_who_reaches_the_admin_api(procs):
    gw = procs.gateway([procs.worker()], "--admin-allow", "127.0.0.2/32,10.0.0.0/8")
    with client_from("127.0.0.2", gw.base) as c:
        assert c.get("/workers").status_code == 200
    with client_from("127.0.0.1", gw.base) as c:
        r = c.get("/workers")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_not_allowed"
        assert "--admin-allow" in r.json()["error"]["message"]
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200  # data is not admin
    gw.stop()
    assert "admin API: NO KEY, open to every peer in 127.0.0.2/32,10.0.0.0/8" in gw.stderr


def test_admin_allow_list_applies_with_a_key_too(procs):
    gw = procs.gateway([procs.worker()], "--admin-api-key", "adm", "--admin-allow", "127.0.0.3")
    adm = {"authorization": "Bearer adm"}
    with client_from("127.0.0.1", gw.base) as c:
        assert c.get("/workers", headers=adm).status_code == 403
    with client_from("127.0.0.3", gw.base) as c:
        assert c.get("/workers", headers=adm).status_code == 200
        assert c.get("/workers").status_code == 401
        assert c.get("/workers", headers={"authorization": "Bearer nope"}).status_code == 403


@pytest.mark.parametrize("hdr", [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"),
                                 ("X-Real-IP", "203.0.113.7"), ("x-forwarded-for", "127.0.0.1")])
def test_keyless_admin_api_refuses_relayed_requests(procs, hdr):
    gw = procs.gateway([procs.worker()], "--log-level", "info")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.get("/workers").status_code == 200  # loopback, not relayed
        r = c.get("/workers", headers=dict([hdr]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_not_allowed"
        r = c.post("/pause_generation", headers=dict([hdr]))
        assert r.status_code == 403
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers=dict([hdr])).status_code == 200
    gw.stop()
    assert "admin API: no key; loopback peers only" in gw.stderr


def test_relayed_requests_with_the_admin_key_are_served(procs):
    gw = procs.gateway([procs.worker()], "--admin-api-key", "adm")
    r = httpx.get(gw.base + "/workers", headers={"authorization": "Bearer adm", "x-forwarded-for": "198.51.100.1"})
    assert r.status_code == 200


@pytest.fixture
def nginx():
    """A real nginx on the same host, in front of whatever upstream the test names."""
    started = []

    def start(upstream_port):
        d = tempfile.mkdtemp(prefix="ig-nginx-")
        port = free_port()
        p = start_nginx(d, f"""
  access_log off;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{upstream_port};
      proxy_http_version 1.1;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP $remote_addr;
    }}
  }}""", port)
        started.append((p, d))
        return f"http://127.0.0.1:{port}"
    yield start
    for p, d in started:  # the master and its worker, as a group
        stop_group(p)
        p.stderr.close()
        subprocess.run(["rm", "-rf", d])


def test_keyless_admin_api_is_closed_behind_a_same_host_nginx(procs, nginx):
    """Behind nginx every remote client is a loopback peer: the admin API must not open to them."""
    gw = procs.gateway([procs.worker()])
    front = nginx(gw.port)
    r = httpx.get(front + "/workers", timeout=10)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "admin_not_allowed"
    assert httpx.post(front + "/workers", json={"url": "http://127.0.0.1:9"}, timeout=10).status_code == 403
    # data goes through nginx as before, and the admin API still answers on loopback directly
    assert httpx.post(front + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10).status_code == 200
    assert httpx.get(gw.base + "/workers", timeout=10).status_code == 200


# ---- class 7: session keys a worker may not claim ----

class SessionWorker:
    """A worker whose /rl/start_session answers the key it is told to."""

    def __init__(self, key):
        self.key = key
        self.starts = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.answer(404, b'{"detail":"no"}')

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                if self.path == "/rl/start_session":
                    outer.starts += 1
                    self.answer(201, json.dumps({"session_id": f"s{outer.starts}-{id(outer)}",
                                                 "api_key": outer.key}).encode())
                else:
                    body = json.dumps({"choices": [{"message": {"content": "hi"}}], "by": id(outer)}).encode()
                    self.answer(200, body)

            def answer(self, status, body):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def session_workers():
    made = []

    def make(key):
        w = SessionWorker(key)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop()


ADM = {"authorization": "Bearer adm"}


@pytest.mark.parametrize("stolen", ["data-key", "adm", "metrics-key"])
def test_a_worker_cannot_claim_the_gateways_own_keys_as_a_session(procs, session_workers, stolen):
    w = session_workers(stolen)
    gw = procs.gateway([], "--admin-api-key", "adm", "--api-key", "data-key", "--metrics-api-key", "metrics-key",
                       "--health-check-interval-secs", "0")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.post("/workers", json={"url": w.url, "model_id": "m"}, headers=ADM).status_code == 202
        r = c.post("/rl/start_session", json={"task_id": "t"}, headers=ADM)
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "worker_bad_session"
        assert stolen not in r.text  # the worker's answer is not relayed
        m = c.get("/metrics", headers={"authorization": "Bearer adm"}).text
        assert "infergate_sessions 0" in m


def test_a_worker_cannot_take_over_another_workers_session_key(procs, session_workers):
    a, b = session_workers("shared-key"), session_workers("shared-key")
    gw = procs.gateway([], "--admin-api-key", "adm", "--health-check-interval-secs", "0")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for w in (a, b):
            assert c.post("/workers", json={"url": w.url, "model_id": "m"}, headers=ADM).status_code == 202
        first = c.post("/rl/start_session", json={"task_id": "t"}, headers=ADM)
        assert first.status_code == 201
        owner = a if a.starts else b
        second = c.post("/rl/start_session", json={"task_id": "t"}, headers=ADM)  # round robin: the other one
        assert second.status_code == 502 and second.json()["error"]["code"] == "worker_bad_session"
        # the key still leads to the worker that made it
        for _ in range(4):
            r = c.post("/v1/chat/completions", json={"model": "m", "messages": []},
                       headers={"authorization": "Bearer shared-key"})
            assert r.status_code == 200 and r.json()["by"] == id(owner)


# ---- class 8: two Authorization headers ----

def test_two_authorization_headers_are_refused(procs):
    w = procs.worker()
    gw = procs.gateway([w], "--api-key", "k")
    before = w.stats()["requests"]
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    body = json.dumps(chat_body()).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer k\r\n"
              b"authorization: Bearer other\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
              % len(body) + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"more than one Authorization header" in data
    assert w.stats()["requests"] == before + 1  # only the /stats call: nothing was forwarded


# ---- class 9: /metrics ----

def test_metrics_honour_the_api_key(procs):
    gw = procs.gateway([procs.worker()], "--api-key", "k", "--admin-api-key", "adm")
    assert httpx.get(gw.base + "/metrics").status_code == 401
    assert httpx.get(gw.base + "/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    for key in ("k", "adm"):
        r = httpx.get(gw.base + "/metrics", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and "infergate_requests_total" in r.text


def test_metrics_have_their_own_key_when_given(procs):
    gw = procs.gateway([procs.worker()], "--api-key", "k", "--metrics-api-key", "scrape")
    assert httpx.get(gw.base + "/metrics", headers={"authorization": "Bearer k"}).status_code == 401
    assert httpx.get(gw.base + "/metrics", headers={"authorization": "Bearer scrape"}).status_code == 200
    open_gw = procs.gateway([procs.worker()])
    assert httpx.get(open_gw.base + "/metrics").status_code == 200  # no key configured: open, as before


# ---- class 10: log lines a request cannot forge ----

FORGED = "2026-01-01T00:00:00.000Z error forged line"


def test_request_values_cannot_forge_log_lines(procs):
    gw = procs.gateway([procs.worker()], "--log-level", "info")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        # a model name with a newline and an escape sequence, served (404) and logged
        r = c.post("/v1/chat/completions", json={"model": "x\n" + FORGED + "\x1b[2J", "messages": []})
        assert r.status_code == 404
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1),
                   headers={"x-request-id": "id with spaces model=fake"})
        assert r.status_code == 200
    gw.stop()
    lines = gw.stderr.splitlines()
    assert not any(line.startswith(FORGED) for line in lines), gw.stderr[-2000:]
    assert "\x1b" not in gw.stderr
    assert any("x\\x0a" + FORGED.replace(" ", "\\x20") in line for line in lines), gw.stderr[-2000:]
    access = [line for line in lines if " access " in line and "id\\x20with" in line]
    assert len(access) == 1 and access[0].count(" model=") == 1, lines


# ---- class 12: SIGHUP ----

def test_sighup_reopens_the_log_file_and_keeps_streams(procs, tmp_path):
    log = tmp_path / "ig.log"
    w = procs.worker("--token-interval-ms", "20", "--tokens", "100")
    gw = procs.gateway([w], "--log-file", str(log), "--log-level", "info")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as r:
            it = r.iter_lines()
            first = [next(it) for _ in range(3)]
            os.rename(log, tmp_path / "ig.log.1")  # what logrotate does
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: log.exists())
            rest = list(it)
        events = [x.strip() for x in first + rest if x.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert sum('"content":"tok' in e for e in events) == 100  # every token, none lost
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    gw.proc.send_signal(signal.SIGHUP)  # twice: still alive
    time.sleep(0.2)
    assert gw.proc.poll() is None
    assert gw.stop() == 0
    new = log.read_text()
    assert "SIGHUP: log file" in new and " access " in new
    assert "listening" in (tmp_path / "ig.log.1").read_text()


def test_sighup_without_a_log_file_is_harmless(procs):
    gw = procs.gateway([procs.worker()])
    for _ in range(3):
        gw.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    assert gw.stop() == 0


def test_a_bad_log_file_fails_at_start():
    from conftest import GATEWAY
    p = subprocess.run([GATEWAY, "--port", "0", "--log-file", "/nonexistent/dir/ig.log"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2 and "--log-file" in p.stderr
