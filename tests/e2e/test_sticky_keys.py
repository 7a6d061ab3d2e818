"""sgl-model-gateway's --policy manual and --routing-key-override (issue 16):
a routing key (X-SMG-Routing-Key, as slime and miles send it) keeps the
worker it was first given while that worker lives, also when requests with
a new key arrive on several gateway threads at once; a new worker takes no
existing key (unlike consistent hashing); a dead worker's keys move to
another and stay there; --assignment-mode min_load gives new keys to the
least loaded worker."""
import concurrent.futures as cf

import httpx

from conftest import chat_body, wait_for


def ask(base, key=None, **kw):
    h = {"x-smg-routing-key": key} if key else {}
    r = httpx.post(base + "/v1/chat/completions", json=chat_body(max_tokens=1, **kw), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["worker_id"]


def fleet(procs, n, *args, threads=2):
    ws = [procs.worker(worker_id=f"m{i}") for i in range(n)]
    return ws, procs.gateway(ws, *args, threads=threads)


def metric(base, name):
    for ln in httpx.get(base + "/metrics").text.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


def test_a_key_keeps_its_first_worker(procs):
    ws, gw = fleet(procs, 3, "--policy", "manual")
    keys = [f"traj-{i}" for i in range(40)]
    first = {k: ask(gw.base, k) for k in keys}
    assert len(set(first.values())) > 1  # new keys spread (random assignment)
    with cf.ThreadPoolExecutor(16) as ex:
        again = list(ex.map(lambda k: (k, ask(gw.base, k)), keys * 4))
    assert all(first[k] == w for k, w in again)
    assert metric(gw.base, "smg_manual_policy_cache_entries") == 40
    assert metric(gw.base, "infergate_routing_key_hits_total") == 160
    # without a key: spread, nothing remembered
    assert len({ask(gw.base) for _ in range(30)}) > 1
    assert metric(gw.base, "infergate_routing_keys") == 40


def test_a_new_key_on_many_threads_at_once_gets_one_worker(procs):
    ws, gw = fleet(procs, 4, "--policy", "manual", threads=4)
    for g in range(10):
        key = f"group-{g}"  # a GRPO group: n samples of one prompt, sent together
        with cf.ThreadPoolExecutor(16) as ex:
            got = set(ex.map(lambda _: ask(gw.base, key), range(16)))
        assert len(got) == 1, (key, got)


def test_a_new_worker_takes_no_existing_key(procs):
    ws, gw = fleet(procs, 2, "--policy", "manual")
    keys = [f"k{i}" for i in range(30)]
    first = {k: ask(gw.base, k) for k in keys}
    late = procs.worker(worker_id="late")
    assert httpx.post(gw.base + "/workers", json={"url": late.url}, timeout=30).status_code == 202
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 3, 10)
    assert {k: ask(gw.base, k) for k in keys} == first
    assert "late" in {ask(gw.base, f"new-{i}") for i in range(40)}  # new keys may go to it


def test_a_dead_workers_keys_move_and_stay(procs):
    ws, gw = fleet(procs, 3, "--policy", "manual", "--health-check-interval-secs", "0.1",
                   "--health-failure-threshold", "1")
    keys = [f"s{i}" for i in range(30)]
    first = {k: ask(gw.base, k) for k in keys}
    victim = first[keys[0]]
    moved = [k for k in keys if first[k] == victim]
    next(w for w in ws if w.worker_id == victim).kill()
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == 2, 10)
    now = {k: ask(gw.base, k) for k in moved}
    assert victim not in now.values()
    for _ in range(3):
        assert {k: ask(gw.base, k) for k in moved} == now  # and they stay
    assert all(ask(gw.base, k) == first[k] for k in keys if k not in moved)  # the others never moved


def test_min_load_gives_a_new_key_the_least_loaded_worker(procs):
    ws = [procs.worker("--token-interval-ms", "50", worker_id=f"m{i}") for i in range(2)]
    gw = procs.gateway(ws, "--policy", "manual", "--assignment-mode", "min_load")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, max_tokens=100),
                      headers={"x-smg-routing-key": "busy"}) as held:
            lines = held.iter_lines()  # kept: a dropped iterator would close the stream
            first = next(ln for ln in lines if ln.startswith("data: {"))
            busy = httpx.Response(200, content=first[6:]).json()["worker_id"]
            for i in range(5):
                assert ask(gw.base, f"fresh-{i}") != busy


def test_routing_key_override_under_round_robin(procs):
    ws, gw = fleet(procs, 3, "--policy", "round_robin", "--routing-key-override")
    assert len({ask(gw.base, "one") for _ in range(12)}) == 1
    assert len({ask(gw.base) for _ in range(12)}) == 3  # no key: round robin as ever
    # without the flag the key means nothing to round robin
    ws2, plain = fleet(procs, 3, "--policy", "round_robin")
    assert len({ask(plain.base, "one") for _ in range(12)}) == 3


def test_idle_keys_are_forgotten(procs):
    ws, gw = fleet(procs, 2, "--policy", "manual", "--max-idle-secs", "1", "--eviction-interval-secs", "0.1")
    for i in range(10):
        ask(gw.base, f"idle-{i}")
    assert metric(gw.base, "infergate_routing_key_assigned_total") == 10
    assert wait_for(lambda: metric(gw.base, "infergate_routing_keys") == 0, 15)
    ask(gw.base, "idle-0")  # seen again: a new key
    assert metric(gw.base, "infergate_routing_key_assigned_total") == 11
