"""The pre-fork server the spread is measured on (bench/spread_real_bench.py,
tests/e2e/test_spread_real.py): a Starlette app whose processes each hold a
Semaphore(SLOTS) in front of their work, answering with their pid (also in
x-backend-pid). Configured by environment:

  SLOTS      the semaphore's size (4)
  MODE       sleep (awaited work), cpu (a busy loop) or sse (three events)
  WORK       seconds of work, or WORK_MIN..WORK_MAX drawn at random per request
  EVDIR      if set, each process appends "time event" lines to EVDIR/<pid>:
             a (arrived), s (got a slot), d (done); waiting_while_free reads them

waiting_while_free is the long-trial scenario's measure: the share of time in
which some process has requests waiting on its semaphore while another has
a free slot (a spread that a perfect balancer would not have); busy_shares
is each process's share of the slot-seconds worked."""
import os

APP = '''
import asyncio, os, random, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

SLOTS = int(os.environ.get("SLOTS", "4"))
MODE = os.environ.get("MODE", "sleep")
WORK = float(os.environ.get("WORK", "0.05"))
WMIN, WMAX = float(os.environ.get("WORK_MIN", WORK)), float(os.environ.get("WORK_MAX", WORK))
slots = asyncio.Semaphore(SLOTS)
PID = {"x-backend-pid": str(os.getpid())}
EV = os.open(os.path.join(os.environ["EVDIR"], str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_APPEND) \\
    if os.environ.get("EVDIR") else None

def ev(kind):
    if EV is not None:
        os.write(EV, f"{time.time():.6f} {kind}\\n".encode())

async def run(request):
    await request.body()
    work = random.uniform(WMIN, WMAX)
    if MODE == "sse":
        async def events():
            async with slots:
                for i in range(3):
                    await asyncio.sleep(work / 3)
                    yield f"data: {i}\\n\\n".encode()
            yield f"data: {os.getpid()}\\n\\n".encode()
        return StreamingResponse(events(), media_type="text/event-stream", headers=PID)
    ev("a")
    async with slots:
        ev("s")
        if MODE == "cpu":
            t = time.perf_counter()
            while time.perf_counter() - t < work:
                pass
        else:
            await asyncio.sleep(work)
    ev("d")
    return JSONResponse({"pid": os.getpid()}, headers=PID)

async def healthz(request):
    return JSONResponse({"ok": True, "pid": os.getpid()}, headers=PID)

app = Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)])
'''


def _events(evdir):
    events = []
    for name in os.listdir(evdir):
        with open(os.path.join(evdir, name)) as f:
            for line in f:
                t, kind = line.split()
                events.append((float(t), kind, name))
    events.sort()
    return events


def busy_shares(evdir, nprocs, since, until):
    """Each process's slot-seconds of work in [since, until) over the fair
    share, sorted (the load share when requests differ in length; a count of
    requests would add their length's noise)."""
    busy, running, last = {}, {}, {}
    for t, kind, p in _events(evdir):
        lo, hi = max(last.get(p, since), since), min(t, until)
        if hi > lo:
            busy[p] = busy.get(p, 0.0) + running.get(p, 0) * (hi - lo)
        last[p] = t
        running[p] = running.get(p, 0) + (1 if kind == "s" else -1 if kind == "d" else 0)
    for p in running:
        lo = max(last[p], since)
        if until > lo:
            busy[p] = busy.get(p, 0.0) + running[p] * (until - lo)
    total = sum(busy.values())
    fair = total / nprocs if total else 1.0
    return sorted([b / fair for b in busy.values()] + [0.0] * (nprocs - len(busy)))


def waiting_while_free(evdir, nprocs, slots, since, until):
    """Share of [since, until) in which one process had a request waiting for
    a slot while another process had a slot free (one of the nprocs that
    never got a request has all its slots free)."""
    events = _events(evdir)
    procs = sorted({e[2] for e in events})
    waiting = {p: 0 for p in procs}
    running = {p: 0 for p in procs}
    bad, last = 0.0, since
    for t, kind, p in events + [(until, "", None)]:
        lo, hi = max(last, since), min(t, until)
        if hi > lo and any(waiting.values()):
            if len(procs) < nprocs or any(running[q] < slots for q in procs if waiting[q] == 0):
                bad += hi - lo
        last = t
        if kind == "a":
            waiting[p] += 1
        elif kind == "s":
            waiting[p] -= 1
            running[p] += 1
        elif kind == "d":
            running[p] -= 1
    return bad / (until - since)
