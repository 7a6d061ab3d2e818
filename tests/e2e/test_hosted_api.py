"""--backend openai (issue 16): workers that are hosted OpenAI-compatible
APIs, as sgl-model-gateway runs them. The "hosted API" is a real nginx with
TLS that serves only under a base path, wants its own bearer key and has no
/health (as api.openai.com or OpenRouter); behind it a mock worker. The
gateway reaches it with a scheme-less URL (https by default), puts the base
path before each request, sends the API's key in place of the client's,
discovers the models with that key and does not health-check it."""
import json

import httpx
import pytest

from conftest import stop_group, chat_body, free_port, sse_events, start_nginx, wait_for

UP_KEY = "sk-upstream-1"


@pytest.fixture
def hosted_api(tmp_path, pki):
    started = []

    def start(upstream_port):
        d = tmp_path / f"api{len(started)}"
        d.mkdir()
        port = free_port()
        p = start_nginx(d, f"""
  log_format seen '$request_method $request_uri|$http_authorization|$status';
  access_log {d}/access.log seen;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/srv.pem; ssl_certificate_key {pki}/srv.key;
    location /api/v1/ {{
      if ($http_authorization != "Bearer {UP_KEY}") {{
        return 401 '{{"error":{{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}}}';
      }}
      proxy_pass http://127.0.0.1:{upstream_port}/v1/; proxy_http_version 1.1; proxy_buffering off;
    }}
    location / {{ return 404; }}
  }}""", port)
        started.append(p)
        p.port = port
        p.log = d / "access.log"
        return p
    yield start
    for p in started:
        stop_group(p)
        p.stderr.close()


def seen(api):
    """(method and URI, Authorization, status) of every request the API got."""
    with open(api.log) as f:
        return [tuple(ln.split("|")) for ln in f.read().splitlines()]


def stream_chat(base, key):
    with httpx.Client(base_url=base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=5),
                      headers={"authorization": f"Bearer {key}"}) as r:
            if r.status_code != 200:
                return r.status_code, r.read()
            data = sse_events(r.iter_lines())
            assert data[-1] == "[DONE]"
            return r.status_code, [json.loads(d) for d in data[:-1]]


def test_a_hosted_api_with_its_own_key_behind_the_gateways(procs, pki, hosted_api):
    w = procs.worker()
    api = hosted_api(w.port)
    gw = procs.gateway([f"127.0.0.1:{api.port}/api/v1"], "--backend", "openai", "--worker-api-key", UP_KEY,
                       "--api-key", "gw-key", "--ca-cert-paths", str(pki / "ca.pem"),
                       "--health-check-interval-secs", "0.2", "--health-check-endpoint", "/v1/models")
    # discovered with the API's key: the model is known by name
    assert wait_for(lambda: httpx.get(gw.base + "/v1/models", headers={"authorization": "Bearer gw-key"})
                    .json()["data"] != [], 10)
    models = httpx.get(gw.base + "/v1/models", headers={"authorization": "Bearer gw-key"}).json()
    assert [m["id"] for m in models["data"]] == ["mock-model"]
    workers = httpx.get(gw.base + "/workers", headers={"authorization": "Bearer gw-key"}).json()["workers"]
    assert workers[0]["url"] == f"https://127.0.0.1:{api.port}/api/v1"
    status, events = stream_chat(gw.base, "gw-key")
    assert status == 200 and "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2),
                   headers={"authorization": "Bearer gw-key"}, timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "mock-model"
    assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2),
                      headers={"authorization": "Bearer nope"}, timeout=30).status_code == 401  # the gateway's
    got = seen(api)
    # the base path once (its /v1 is the API's own), the API's key and never the client's
    assert ("GET /api/v1/models", f"Bearer {UP_KEY}", "200") in got
    assert [g for g in got if g[0] == "POST /api/v1/chat/completions"] == \
        [("POST /api/v1/chat/completions", f"Bearer {UP_KEY}", "200")] * 2
    assert not [g for g in got if "gw-key" in g[1] or "nope" in g[1]]
    # asked for checks (on a path the API has): under the base path too, with the key
    assert wait_for(lambda: [g for g in seen(api) if g[0] == "GET /api/v1/models"].__len__() >= 3, 10), seen(api)
    assert {g for g in seen(api) if g[0] == "GET /api/v1/models"} == {("GET /api/v1/models", f"Bearer {UP_KEY}", "200")}


def test_sgl_model_gateways_way_api_key_is_the_hosted_apis(procs, pki, hosted_api):
    """smg: --api-key is what clients present and what the API gets; no
    active health checks on a hosted API; a base path without /v1."""
    w = procs.worker()
    api = hosted_api(w.port)
    gw = procs.gateway([f"https://127.0.0.1:{api.port}/api"], "--backend", "openai", "--api-key", UP_KEY,
                       "--ca-cert-paths", str(pki / "ca.pem"))
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 1, 10)
    status, events = stream_chat(gw.base, UP_KEY)
    assert status == 200 and events
    import time
    time.sleep(0.5)
    got = seen(api)
    assert ("POST /api/v1/chat/completions", f"Bearer {UP_KEY}", "200") in got
    assert not [g for g in got if "health" in g[0]]  # never checked: the API has no /health


def test_without_a_key_the_clients_own_goes_through(procs, pki, hosted_api):
    """Bring your own key: no key at the gateway, the client's Authorization
    reaches the API, whose 401 for a wrong one comes back as it is; the
    models cannot be listed without a key, so the API takes any model."""
    w = procs.worker()
    api = hosted_api(w.port)
    gw = procs.gateway([f"127.0.0.1:{api.port}/api/v1"], "--backend", "openai", "--ca-cert-paths",
                       str(pki / "ca.pem"))
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 1, 10)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(model="any-name", max_tokens=2),
                   headers={"authorization": f"Bearer {UP_KEY}"}, timeout=30)
    assert r.status_code == 200
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2),
                   headers={"authorization": "Bearer wrong"}, timeout=30)
    assert r.status_code == 401 and json.loads(r.text)["error"]["code"] == "invalid_api_key"
    assert gw.proc.poll() is None


def test_backend_values(procs):
    import subprocess
    from conftest import GATEWAY
    for bad, why in (("anthropic", "their own protocol"), ("gemini", "their own protocol"), ("nope", "expected")):
        out = subprocess.run([GATEWAY, "--backend", bad], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and why in out.stderr, out.stderr
    w = procs.worker()
    for engine in ("sglang", "vllm"):  # engines: nothing changes
        gw = procs.gateway([w], "--backend", engine)
        assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30).status_code == 200


def test_a_worker_registered_with_its_own_key(procs, pki, hosted_api):
    """POST /workers {"url", "api_key"} (sgl's worker spec): that worker
    gets its key; the URL without a scheme is https under --backend openai;
    sgl's /add_worker takes the same JSON body."""
    w = procs.worker()
    api = hosted_api(w.port)
    gw = procs.gateway([], "--backend", "openai", "--ca-cert-paths", str(pki / "ca.pem"))
    r = httpx.post(gw.base + "/workers", json={"url": f"127.0.0.1:{api.port}/api/v1", "api_key": UP_KEY}, timeout=30)
    assert r.status_code == 202, r.text
    assert r.json()["url"] == f"https://127.0.0.1:{api.port}/api/v1"
    assert "api_key" not in r.text and UP_KEY not in httpx.get(gw.base + "/workers").text  # never shown
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 1, 10)
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
    assert r.status_code == 200 and r.json()["model"] == "mock-model"
    assert ("POST /api/v1/chat/completions", f"Bearer {UP_KEY}", "200") in seen(api)
    bad = httpx.post(gw.base + "/workers", json={"url": "http://127.0.0.1:1", "api_key": 5}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_api_key"
    # sgl's /add_worker with a JSON body
    api2 = hosted_api(w.port)
    r = httpx.post(gw.base + "/add_worker", json={"url": f"https://127.0.0.1:{api2.port}/api", "api_key": UP_KEY},
                   timeout=30)
    assert r.status_code == 201 and r.json()["created"] is True, r.text
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 2, 10)
    assert httpx.post(gw.base + "/add_worker", content=b"{", timeout=30).status_code == 400
