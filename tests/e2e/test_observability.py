"""/metrics values, the access log, and --config."""
import json
import os
import re
import subprocess
import tempfile

import httpx

from conftest import GATEWAY, chat_body, sse_events


def scrape(gw):
    text = httpx.get(gw.base + "/metrics").text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return text, out


def test_metrics_move_as_requests_pass(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], threads=1)
    text, before = scrape(gw)
    assert "# TYPE infergate_requests_total counter" in text
    with httpx.Client(base_url=gw.base) as c:
        for _ in range(7):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=3, stream=True)) as s:
            sse_events(s.iter_lines())
        assert c.post("/v1/chat/completions", json={"model": "nope"}).status_code == 404
        assert c.post("/generate", json={"text": "x", "max_tokens": 1}).status_code == 200
    text, after = scrape(gw)
    key = 'infergate_requests_total{route="chat_completions",status="200"}'
    assert after[key] - before.get(key, 0) == 8
    assert after['infergate_requests_total{route="chat_completions",status="404"}'] == 1
    assert after['infergate_requests_total{route="generate",status="200"}'] == 1
    assert after['infergate_request_duration_seconds_count{route="chat_completions"}'] == 9
    assert after['infergate_time_to_first_byte_seconds_count{route="chat_completions"}'] == 8
    assert after['infergate_request_duration_seconds_bucket{route="chat_completions",le="+Inf"}'] == 9
    wl = f'{{worker="w1",url="{w.url}"}}'
    assert after["infergate_worker_requests_total" + wl] == 9
    assert after["infergate_worker_healthy" + wl] == 1
    assert after["infergate_worker_inflight" + wl] == 0
    assert after["infergate_worker_breaker_state" + wl] == 0
    assert after["infergate_upstream_connections_opened_total"] >= 1
    assert after["infergate_upstream_connections_reused_total"] >= 7
    assert after["infergate_workers"] == 1 and after["infergate_workers_routable"] == 1
    assert after["infergate_response_bytes_total"] > before.get("infergate_response_bytes_total", 0)


def test_access_log_line_per_request(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], "--log-level", "info")
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2),
                   headers={"x-request-id": "trace-me-42"})
    assert r.status_code == 200
    httpx.get(gw.base + "/nope")
    assert gw.stop() == 0
    line = next(l for l in gw.stderr.splitlines() if "access trace-me-42 " in l)
    assert re.search(r"access trace-me-42 POST /v1/chat/completions 200 model=mock-model "
                     rf"worker={re.escape(w.url)} bytes=\d+ ttfb_ms=[\d.]+ dur_ms=[\d.]+", line), line
    assert re.search(r"access \S+ GET /nope 404 model=- worker=- ", gw.stderr)


def test_access_log_names_a_long_stream_whose_request_memory_was_given_back(procs):
    """A stream's request buffer goes back to the thread while it runs; its
    log line still names the path (query cut) and the model."""
    w = procs.worker()
    gw = procs.gateway([w], "--log-level", "info")
    with httpx.stream("POST", gw.base + "/v1/chat/completions?probe=1", json=chat_body(max_tokens=4, stream=True),
                      headers={"x-request-id": "long-stream-7", "x-mock-token-interval-ms": "100"}) as r:
        assert r.status_code == 200
        assert sse_events(r.iter_lines())[-1] == "[DONE]"
    assert gw.stop() == 0
    line = next(l for l in gw.stderr.splitlines() if "access long-stream-7 " in l)
    assert re.search(r"access long-stream-7 POST /v1/chat/completions 200 model=mock-model "
                     rf"worker={re.escape(w.url)} ", line), line


def test_config_file(procs):
    w = procs.worker(worker_id="w1")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"worker_urls": [w.url], "policy": "round_robin", "admin_api_key": "k",
                   "disable_circuit_breaker": True, "health-check-interval-secs": 0.5}, f)
    try:
        gw = procs.gateway([], "--config", f.name)
        assert httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
        assert httpx.get(gw.base + "/workers").status_code == 401
        with open(f.name, "w") as g:
            json.dump({"worker_urls": [w.url], "polcy": "round_robin"}, g)
        out = subprocess.run([GATEWAY, "--config", f.name], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and "polcy" in out.stderr
        out = subprocess.run([GATEWAY, "--worker-urls", "ftp://x:1"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and "ftp://x:1" in out.stderr
    finally:
        os.unlink(f.name)
