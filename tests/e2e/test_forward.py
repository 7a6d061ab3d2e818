"""Any HTTP API behind one address (issue 14): paths listed in
--forward-paths, or in a worker group of --config, go to the workers as they
are (any method, any body, no "model"), per request over pooled keep-alive
connections, against a real uvicorn running a Starlette app; what infergate
answers itself stays its own, and the LLM paths keep their model routing."""
import hashlib
import json
import os
import subprocess

import httpx
import pytest

from conftest import GATEWAY, chat_body, wait_for

TRIAL_APP = '''
import asyncio, hashlib, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

slots = asyncio.Semaphore(4)

async def echo(request):
    body = await request.body()
    return JSONResponse({"pid": os.getpid(), "method": request.method, "path": request.url.path,
                         "query": request.url.query, "body": body.decode("latin-1"),
                         "x_trial": request.headers.get("x-trial"),
                         "content_type": request.headers.get("content-type")})

async def run(request):
    body = await request.body()
    async with slots:
        await asyncio.sleep(float(request.query_params.get("secs", "0")))
    return JSONResponse({"pid": os.getpid(), "trial": body.decode()})

async def upload(request):
    body = await request.body()
    return JSONResponse({"len": len(body), "sha256": hashlib.sha256(body).hexdigest()})

async def stream(request):
    async def gen():
        for i in range(5):
            yield f"part {i}\\n".encode()
            await asyncio.sleep(0.05)
    return StreamingResponse(gen(), media_type="text/plain")

async def status(request):
    return Response("teapot body", status_code=int(request.path_params["code"]))

async def healthz(request):
    return JSONResponse({"ok": True})

app = Starlette(routes=[
    Route("/run", run, methods=["POST"]),
    Route("/items/{id}", echo, methods=["GET", "PUT", "DELETE", "PATCH", "POST", "OPTIONS"]),
    Route("/upload", upload, methods=["POST"]),
    Route("/stream", stream),
    Route("/status/{code:int}", status),
    Route("/healthz", healthz),
    Route("/secret", echo),
    Route("/v1/chat/completions", echo, methods=["POST"]),
])
'''


def metric(base, name, **labels):
    text = httpx.get(base + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_forwarded_paths_pass_any_api_through(procs, asgi_server):
    url = asgi_server(TRIAL_APP, "--workers", "2")
    gw = procs.gateway([url], "--forward-paths", "/run", "/items/", "/upload", "/stream", "/status/",
                       "--health-check-endpoint", "/healthz")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        # no JSON, no "model": the body goes as it came
        r = c.post("/run", content=b"trial 1")
        assert r.status_code == 200 and r.json()["trial"] == "trial 1"
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = c.request(method, "/items/7?a=1&b=x%20y", content=b"" if method in ("GET", "DELETE", "OPTIONS") else b"v",
                          headers={"x-trial": "t1", "content-type": "application/octet-stream"})
            assert r.status_code == 200, (method, r.text)
            j = r.json()
            assert (j["method"], j["path"], j["query"], j["x_trial"]) == (method, "/items/7", "a=1&b=x%20y", "t1")
            assert j["content_type"] == "application/octet-stream"
        # a big binary body, whole
        blob = os.urandom(3 << 20)
        r = c.post("/upload", content=blob)
        assert r.json() == {"len": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        # the answer streams as the worker writes it
        with c.stream("GET", "/stream") as s:
            assert s.status_code == 200
            parts = [line.strip() for line in s.iter_lines() if line.strip()]
        assert parts == [f"part {i}" for i in range(5)]
        # the worker's own statuses and bodies come back unchanged
        r = c.get("/status/418")
        assert r.status_code == 418 and r.text == "teapot body"
        # not listed: not forwarded (the gateway exposes nothing of a worker unasked)
        r = c.get("/secret")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # what infergate answers itself stays its own
        assert "strategy" in c.get("/health").json()
        for _ in range(40):
            assert c.post("/run", content=b"x").status_code == 200
    assert metric(gw.base, "infergate_requests_total", route="forward", status="200") == 48
    assert metric(gw.base, "infergate_requests_total", route="forward") == 49  # and the 418
    workers = httpx.get(gw.base + "/workers").json()["workers"]
    assert workers[0]["health"] == "healthy"
    opened = workers[0]["connections"]["opened"]
    assert opened <= 12, workers[0]["connections"]  # pooled, not one per request


def test_forward_slash_forwards_what_infergate_does_not_answer(procs, asgi_server):
    url = asgi_server(TRIAL_APP)
    gw = procs.gateway([url], "--forward-paths", "/", "--health-check-endpoint", "/healthz")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        assert c.get("/secret").json()["path"] == "/secret"
        assert c.delete("/items/3").json()["method"] == "DELETE"
        assert "strategy" in c.get("/health").json()  # the gateway's own
        assert "infergate_requests_total" in c.get("/metrics").text
        assert c.get("/workers").status_code == 200  # the admin API is not a worker path
        # an LLM path keeps its model routing: a body that is not JSON is the gateway's 400
        r = c.post("/v1/chat/completions", content=b"not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = c.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 200 and r.json()["path"] == "/v1/chat/completions"


def test_worker_groups_take_their_prefixes(procs, asgi_server, tmp_path):
    trials = asgi_server(TRIAL_APP, "--workers", "2")
    llm = procs.worker()
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps({"worker_groups": {"trials": {
        "worker_urls": [trials], "forward_paths": ["/run", "/items/"], "worker_max_inflight": 8,
        "health_check_endpoint": "/healthz"}}}))
    gw = procs.gateway([llm], "--config", str(cfg), "--health-check-interval-secs", "0.3")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        assert c.post("/run", content=b"a").json()["trial"] == "a"
        assert c.put("/items/1", content=b"v").json()["method"] == "PUT"
        r = c.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 200 and r.json()["choices"], r.text  # the LLM fleet (mock), not the trial servers
        # the trial servers serve no model
        models = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert models == ["mock-model"], models
        workers = {w["url"]: w for w in c.get("/workers").json()["workers"]}
        assert workers[trials]["group"] == "trials" and workers[llm.url]["group"] == "default"
        assert workers[trials]["max_inflight"] == 8
        # its own health endpoint: a few rounds later it is still healthy
        before = llm.stats()["requests"]
        wait_for(lambda: False, 1.2)
        now = {w["url"]: w for w in c.get("/workers").json()["workers"]}
        assert now[trials]["health"] == "healthy" and now[trials]["routable"]
        # pausing the LLM fleet does not hold the trials
        assert c.post("/pause_generation").status_code == 200
        assert c.post("/run", content=b"b", timeout=10).json()["trial"] == "b"
        assert c.post("/continue_generation").status_code == 200
        assert llm.stats()["requests"] >= before
        # a worker added at run time names its group; an unknown group is refused
        r = c.post("/workers", json={"url": trials, "group": "nope"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_group"
        r = c.post("/workers", json={"url": trials})  # the same URL in another group
        assert r.status_code == 409 and r.json()["error"]["code"] == "worker_in_other_group"


def test_forwarded_requests_fail_over_to_live_workers(procs, asgi_server):
    live = asgi_server(TRIAL_APP)
    dead = "http://127.0.0.1:9"  # nothing listens: connects are refused
    gw = procs.gateway([dead, live], "--forward-paths", "/items/", "--policy", "round_robin",
                       "--health-check-interval-secs", "0")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for i in range(10):
            r = c.post(f"/items/{i}", content=b"once")
            assert r.status_code == 200, r.text  # a refused connect sent nothing: safe for any method


@pytest.mark.parametrize("bad,why", [
    ({"worker_groups": {"g": {"worker_urls": ["http://127.0.0.1:1"]}}}, "forwards no path"),
    ({"worker_groups": {"g": {"worker_urls": ["http://127.0.0.1:1"], "forward_paths": ["run"]}}},
     "not a path prefix"),
    ({"worker_groups": {"g": {"forward_paths": ["/r"], "color": "blue"}}}, "unknown key"),
    ({"worker_groups": {"g g": {"forward_paths": ["/r"]}}}, "must be 1-63"),
    ({"worker_groups": {"g": {"worker_urls": ["ftp://x"], "forward_paths": ["/r"]}}}, "worker group 'g'"),
])
def test_bad_worker_groups_are_refused_at_start(tmp_path, bad, why):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(bad))
    p = subprocess.run([GATEWAY, "--port", "0", "--config", str(cfg)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2, p.stderr
    assert why in p.stderr, p.stderr


def test_forward_paths_flag_is_checked(tmp_path):
    p = subprocess.run([GATEWAY, "--port", "0", "--forward-paths", "run"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 2 and "not a path prefix" in p.stderr, p.stderr
