"""Against a real uvicorn (Starlette app): its keep-alive timeout closes idle
pooled connections, and since a POST that went out on a dying connection is
never sent again (RFC 9110 9.2.2), the gateway learns that timeout and stops
reusing connections that are about to be closed under it."""
import os
import subprocess
import time

import httpx
import pytest

from conftest import free_port, wait_for

APP = '''
import os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def chat(request):
    await request.body()
    return JSONResponse({"port": request.client.port, "pid": os.getpid(),
                         "choices": [{"message": {"role": "assistant", "content": "hi"}}]})

async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/models", models)])
'''


@pytest.fixture
def uvicorn_worker(tmp_path):
    procs = []

    def start(*args):
        (tmp_path / "trial_app.py").write_text(APP)
        port = free_port()
        p = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "trial_app:app", "--host", "127.0.0.1", "--port", str(port),
                              "--log-level", "warning", *args],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(tmp_path)})
        procs.append(p)

        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_for(up, 20), p.stderr.read().decode() if p.poll() is not None else "uvicorn did not start"
        return f"http://127.0.0.1:{port}"
    yield start
    for p in procs:
        p.terminate()
        p.wait(10)
        p.stderr.close()


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_connections_near_the_workers_keep_alive_timeout_are_not_reused(procs, uvicorn_worker):
    url = uvicorn_worker("--timeout-keep-alive", "1")
    gw = procs.gateway([url], "--upstream-spread", "off", "--health-check-interval-secs", "0", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        time.sleep(1.6)  # uvicorn closes the idle pooled connection at 1 s: the gateway sees it
        ports = []
        for _ in range(6):
            r = c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200, r.text
            ports.append(r.json()["port"])
            time.sleep(0.85)  # idle for most of uvicorn's timeout
        # each of those went out on a fresh connection, not one uvicorn was about to close
        assert len(set(ports)) == len(ports), ports
        # while busy, the pool works as ever: one connection for back-to-back requests
        quick = {c.post("/v1/chat/completions", json=CHAT).json()["port"] for _ in range(10)}
        assert len(quick) == 1, quick


def test_posts_around_the_keep_alive_timeout_all_succeed(procs, uvicorn_worker):
    """Requests spaced right at uvicorn's keep-alive timeout: none gets a 502."""
    url = uvicorn_worker("--timeout-keep-alive", "1")
    gw = procs.gateway([url], "--upstream-spread", "off", "--health-check-interval-secs", "0", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        statuses = []
        for i in range(8):
            statuses.append(c.post("/v1/chat/completions", json=CHAT).status_code)
            time.sleep(0.95 + 0.02 * (i % 4))
    assert statuses == [200] * 8, statuses
