"""The spread over real pre-fork processes (issue 14): uvicorn --workers 8,
each process a Semaphore(4) in front of 50 ms of awaited work, 64 clients
through one worker address. With --upstream-process-header the answers name
their process and each request goes to the process with the fewest in
flight: every process gets 0.5-1.5x its fair share while keep-alive stays
(at most 5% of requests on a new connection)."""
import asyncio
import collections

import aiohttp
import httpx

from conftest import wait_for

SEM_APP = '''
import asyncio, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

slots = asyncio.Semaphore(4)

async def run(request):
    await request.body()
    async with slots:
        await asyncio.sleep(0.05)
    return JSONResponse({"pid": os.getpid()}, headers={"x-backend-pid": str(os.getpid())})

async def healthz(request):
    return JSONResponse({"ok": True})

app = Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)])
'''

K, CLIENTS = 8, 64


def drive(base, per_client):
    pids = collections.Counter()

    async def main():
        async with aiohttp.ClientSession(base) as s:
            async def client():
                for _ in range(per_client):
                    async with s.post("/run", data=b"trial") as r:
                        assert r.status == 200, await r.text()
                        pids[(await r.json())["pid"]] += 1
            await asyncio.gather(*[client() for _ in range(CLIENTS)])
    asyncio.run(main())
    return pids


def test_the_process_header_spreads_exactly_over_real_uvicorn(procs, asgi_server):
    url = asgi_server(SEM_APP, "--workers", str(K))
    # every process up before the load starts (each answers its own pid)
    seen = set()

    def all_up():
        with httpx.Client(base_url=url) as c:
            for _ in range(50):
                seen.add(c.post("/run", content=b"", headers={"connection": "close"}).json()["pid"])
        return len(seen) == K
    assert wait_for(all_up, 60), seen
    gw = procs.gateway([url], "--forward-paths", "/run", "--worker-max-inflight", "32",
                       "--upstream-process-header", "X-Backend-Pid", "--health-check-endpoint", "/healthz")
    # the first burst opens the pool's connections wherever accept() puts them;
    # the shares are those of the steady state after it
    warm = drive(gw.base, 10)
    pids = drive(gw.base, 40)
    total = sum(pids.values())
    assert total == CLIENTS * 40
    fair = total / K
    shares = sorted(pids[p] / fair for p in seen)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    w = httpx.get(gw.base + "/workers").json()["workers"][0]
    assert w["connections"]["opened"] <= 0.05 * (total + sum(warm.values())), w["connections"]
    # the gateway's view: every process it learned, nothing left in flight
    assert len(w["processes"]) == K and all(p["inflight"] == 0 for p in w["processes"]), w["processes"]
