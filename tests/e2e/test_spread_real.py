"""The spread over real pre-fork processes (issue 14): 8 processes of
Debian's uvicorn (or gunicorn with its UvicornWorker) behind one worker
address, each a Semaphore(4) in front of its work, 64 clients. With
--upstream-process-header the answers name their process and each request
goes to the process with the fewest in flight: every process gets 0.5-1.5x
its fair share while keep-alive stays (at most 5% of requests on a new
connection). Work: 50 ms awaited, 10 ms of CPU, or an SSE answer of three
events (time to first byte is no load signal there). Also long trials (16
processes x Semaphore(8), 0.5-5 s each: no request waits for a slot while
another process has one free) and 32 processes, as in the incident. The
server is bench/prefork_app.py, which the benchmark runs too."""
import asyncio
import collections
import os
import sys
import time

import aiohttp
import httpx
import pytest

from conftest import SANITIZED, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from prefork_app import APP, busy_shares, waiting_while_free  # noqa: E402

WORK = {"sleep": "0.05", "cpu": "0.01", "sse": "0.06"}

K, CLIENTS = 8, 64


def drive(base, per_client, sse=False, duration=None):
    """CLIENTS clients, per_client requests each (or for duration seconds): the pids that answered."""
    pids = collections.Counter()

    async def main():
        t0 = time.time()
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=None)) as s:
            async def client():
                n = 0
                while n < per_client if duration is None else time.time() < t0 + duration:
                    n += 1
                    async with s.post("/run", data=b"trial") as r:
                        assert r.status == 200, await r.text()
                        if sse:
                            lines = [ln async for ln in r.content if ln.startswith(b"data: ")]
                            pid = int(lines[-1][6:])
                        else:
                            pid = (await r.json())["pid"]
                    pids[pid] += 1
            await asyncio.gather(*[client() for _ in range(CLIENTS)])
    asyncio.run(main())
    return pids


def start_fleet(asgi_server, server, k, env):
    """A pre-fork server of k processes; returns its URL and their pids once every one answers."""
    workers = ["--workers", str(k)] if server == "uvicorn" else ["-w", str(k)]
    url = asgi_server(APP, *workers, server=server, env=env)
    seen = set()

    def all_up():
        with httpx.Client(base_url=url) as c:
            for _ in range(50):
                seen.add(c.get("/healthz", headers={"connection": "close"}).json()["pid"])
        return len(seen) == k
    assert wait_for(all_up, 90), seen
    return url, seen


def gateway(procs, url, inflight, header=True):
    named = ["--upstream-process-header", "X-Backend-Pid"] if header else []
    return procs.gateway([url], "--forward-paths", "/run", "--worker-max-inflight", str(inflight), *named,
                         "--health-check-endpoint", "/healthz")


def opened(gw):
    return httpx.get(gw.base + "/workers").json()["workers"][0]["connections"]["opened"]


@pytest.mark.parametrize("server,mode", [("uvicorn", "sleep"), ("uvicorn", "cpu"), ("uvicorn", "sse"),
                                         ("gunicorn", "sleep")])
def test_the_process_header_spreads_exactly_over_real_servers(procs, asgi_server, server, mode):
    if SANITIZED and (server, mode) != ("uvicorn", "sleep"):
        pytest.skip("the sanitizer runs check the process table with one workload; the spread is the plain run's")
    url, seen = start_fleet(asgi_server, server, K, {"MODE": mode, "SLOTS": "4", "WORK": WORK[mode]})
    gw = gateway(procs, url, 32)
    # the first burst opens the pool's connections (probed one by one); the
    # shares and the new connections are those of the steady state after it
    drive(gw.base, 8, mode == "sse")
    before = opened(gw)
    pids = drive(gw.base, 40, mode == "sse")
    total = sum(pids.values())
    assert total == CLIENTS * 40
    fair = total / K
    shares = sorted(pids[p] / fair for p in seen)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    w = httpx.get(gw.base + "/workers").json()["workers"][0]
    assert w["connections"]["opened"] - before <= 0.05 * total, (before, w["connections"])
    # the gateway's view: every process it learned, nothing left in flight
    assert len(w["processes"]) == K and all(p["inflight"] == 0 for p in w["processes"]), w["processes"]


@pytest.mark.skipif(SANITIZED, reason="30 s of load: the plain run's")
def test_long_trials_never_wait_while_another_process_has_a_free_slot(procs, asgi_server, tmp_path):
    """Scenario (c): 16 processes x Semaphore(8), trials of 0.5-5 s, 64
    clients for 30 s from a cold pool. Shares are of the work done after the
    first 10 s (the pool is still meeting processes before)."""
    evdir = tmp_path / "events"
    evdir.mkdir()
    url, seen = start_fleet(asgi_server, "uvicorn", 16, {"SLOTS": "8", "WORK_MIN": "0.5", "WORK_MAX": "5",
                                                          "EVDIR": str(evdir)})
    gw = gateway(procs, url, 128)
    t0 = time.time()
    drive(gw.base, None, duration=30)
    t1 = time.time()
    # the load share: slot-seconds worked per process (trials differ tenfold
    # in length, so a count of them would measure their noise)
    shares = busy_shares(str(evdir), 16, t0 + 10, t1)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    waited = waiting_while_free(str(evdir), 16, 8, t0, t1)
    assert waited <= 0.05, waited


@pytest.mark.skipif(SANITIZED, reason="32 processes: the plain run's")
def test_thirty_two_processes_as_in_the_incident(procs, asgi_server):
    """Scenario (f): 32 processes x Semaphore(2), 64 clients, 50 ms of work."""
    url, seen = start_fleet(asgi_server, "uvicorn", 32, {"SLOTS": "2", "WORK": "0.05"})
    gw = gateway(procs, url, 64)
    drive(gw.base, 8)
    before = opened(gw)
    pids = drive(gw.base, 60)
    total = sum(pids.values())
    shares = sorted(pids[p] / (total / 32) for p in seen)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    assert opened(gw) - before <= 0.05 * total


@pytest.mark.skipif(SANITIZED, reason="the spread is the plain run's")
def test_without_the_header_queueing_delay_spreads_awaited_work(procs, asgi_server):
    """Scenario (a) with no cooperation from the server: the default spread
    reads queueing delay (an answer a quarter of the base time late waited
    on its semaphore), leaves and retires connections on queued processes,
    and paces new connections."""
    url, seen = start_fleet(asgi_server, "uvicorn", K, {"SLOTS": "4", "WORK": "0.05"})
    gw = gateway(procs, url, 32, header=False)
    drive(gw.base, 8)
    before = opened(gw)
    pids = drive(gw.base, 40)
    total = sum(pids.values())
    shares = sorted(pids[p] / (total / K) for p in seen)
    assert 0.5 <= shares[0] and shares[-1] <= 1.5, [round(s, 2) for s in shares]
    assert opened(gw) - before <= 0.05 * total
