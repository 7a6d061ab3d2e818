"""The spread over real pre-fork processes (issue 14): 8 processes of
Debian's uvicorn (or gunicorn with its UvicornWorker) behind one worker
address, each a Semaphore(4) in front of its work, 64 clients. With
--upstream-process-header the answers name their process and each request
goes to the process with the fewest in flight: every process gets 0.5-1.5x
its fair share while keep-alive stays (at most 5% of requests on a new
connection). Work: 50 ms awaited, 10 ms of CPU, or an SSE answer of three
events (time to first byte is no load signal there)."""
import asyncio
import collections

import aiohttp
import httpx
import pytest

from conftest import SANITIZED, wait_for

SEM_APP = '''
import asyncio, os, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

slots = asyncio.Semaphore(4)
MODE = os.environ.get("MODE", "sleep")
PID = {"x-backend-pid": str(os.getpid())}

async def run(request):
    await request.body()
    if MODE == "sse":
        async def events():
            async with slots:
                for i in range(3):
                    await asyncio.sleep(0.02)
                    yield f"data: {i}\\n\\n".encode()
            yield f"data: {os.getpid()}\\n\\n".encode()
        return StreamingResponse(events(), media_type="text/event-stream", headers=PID)
    async with slots:
        if MODE == "cpu":
            t = time.perf_counter()
            while time.perf_counter() - t < 0.01:
                pass
        else:
            await asyncio.sleep(0.05)
    return JSONResponse({"pid": os.getpid()}, headers=PID)

async def healthz(request):
    return JSONResponse({"ok": True, "pid": os.getpid()})

app = Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)])
'''

K, CLIENTS = 8, 64


def drive(base, per_client, sse):
    pids = collections.Counter()

    async def main():
        async with aiohttp.ClientSession(base) as s:
            async def client():
                for _ in range(per_client):
                    async with s.post("/run", data=b"trial") as r:
                        assert r.status == 200, await r.text()
                        if sse:
                            lines = [ln async for ln in r.content if ln.startswith(b"data: ")]
                            pids[int(lines[-1][6:])] += 1
                        else:
                            pids[(await r.json())["pid"]] += 1
            await asyncio.gather(*[client() for _ in range(CLIENTS)])
    asyncio.run(main())
    return pids


@pytest.mark.parametrize("server,mode", [("uvicorn", "sleep"), ("uvicorn", "cpu"), ("uvicorn", "sse"),
                                         ("gunicorn", "sleep")])
def test_the_process_header_spreads_exactly_over_real_servers(procs, asgi_server, server, mode):
    if SANITIZED and (server, mode) != ("uvicorn", "sleep"):
        pytest.skip("the sanitizer runs check the process table with one workload; the spread is the plain run's")
    workers = ["--workers", str(K)] if server == "uvicorn" else ["-w", str(K)]
    url = asgi_server(SEM_APP, *workers, server=server, env={"MODE": mode})
    # every process up before the load starts (each answers its own pid)
    seen = set()

    def all_up():
        with httpx.Client(base_url=url) as c:
            for _ in range(50):
                seen.add(c.get("/healthz", headers={"connection": "close"}).json()["pid"])
        return len(seen) == K
    assert wait_for(all_up, 60), seen
    gw = procs.gateway([url], "--forward-paths", "/run", "--worker-max-inflight", "32",
                       "--upstream-process-header", "X-Backend-Pid", "--health-check-endpoint", "/healthz")
    # the first burst opens the pool's connections wherever accept() puts them;
    # the shares are those of the steady state after it
    warm = drive(gw.base, 8, mode == "sse")
    pids = drive(gw.base, 40, mode == "sse")
    total = sum(pids.values())
    assert total == CLIENTS * 40
    fair = total / K
    shares = sorted(pids[p] / fair for p in seen)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    w = httpx.get(gw.base + "/workers").json()["workers"][0]
    assert w["connections"]["opened"] <= 0.05 * (total + sum(warm.values())), w["connections"]
    # the gateway's view: every process it learned, nothing left in flight
    assert len(w["processes"]) == K and all(p["inflight"] == 0 for p in w["processes"]), w["processes"]
