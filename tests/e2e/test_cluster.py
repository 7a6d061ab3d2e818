"""Several gateways, one fleet, through a real etcd (issue 18): the worker
registry lives in etcd (etcd-server from Debian, its v3 JSON gateway), so a
worker added or removed through any gateway's admin API, or given to one
with --worker-urls, is routed by all; each gateway holds a lease; with etcd
away, routing goes on with the last known workers and admin writes answer
503 instead of half-applying."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import httpx
import pytest

from conftest import chat_body, free_port, wait_for

ETCD = shutil.which("etcd")
pytestmark = pytest.mark.skipif(not ETCD, reason="etcd-server is not installed (scripts/setup.sh installs it)")


class Etcd:
    """One etcd member on loopback ports of its own, with a data directory that outlives a restart;
    several make a cluster (members: every member's (name, peer port))."""

    def __init__(self, name="e0", members=None, client=None, peer=None, wait=True):
        self.dir = tempfile.mkdtemp(prefix="ig-etcd-")
        self.name = name
        self.client, self.peer = client or free_port(), peer or free_port()
        self.members = members or [(name, self.peer)]
        self.url = f"http://127.0.0.1:{self.client}"
        self.proc = None
        self.start(wait)

    def start(self, wait=True):
        peer = f"http://127.0.0.1:{self.peer}"
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in self.members)
        self.proc = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", os.path.join(self.dir, "data"), "--listen-client-urls",
             self.url, "--advertise-client-urls", self.url, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", initial, "--initial-cluster-token",
             "ig-test"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            assert wait_for(lambda: self.healthy(), 20), "etcd did not start"

    def is_leader(self):
        r = httpx.post(self.url + "/v3/maintenance/status", json={}, timeout=5).json()
        return r.get("leader") == r["header"]["member_id"]

    def healthy(self):
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def keys(self, prefix):
        enc = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = httpx.post(self.url + "/v3/kv/range", json={"key": enc(prefix), "range_end": enc(end)}, timeout=5)
        return [base64.b64decode(kv["key"]).decode() for kv in r.json().get("kvs", [])]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd():
    e = Etcd()
    yield e
    e.stop()


def cluster(procs, etcd, n, *args, workers=()):
    return [procs.gateway(list(workers) if i == 0 else [], "--etcd-endpoints", etcd.url, "--etcd-lease-ttl-secs",
                          "2", "--health-check-interval-secs", "0", "--policy", "round_robin", *args)
            for i in range(n)]


def urls(gw, headers=None):
    return sorted(w["url"] for w in httpx.get(gw.base + "/workers", headers=headers, timeout=10).json()["workers"])


def test_a_worker_added_through_one_gateway_is_routed_by_all(procs, etcd):
    w0, w1 = procs.worker(worker_id="w0"), procs.worker(worker_id="w1")
    gws = cluster(procs, etcd, 3)
    r = httpx.post(gws[0].base + "/workers", json={"url": w0.url}, timeout=10)
    assert r.status_code == 202, r.text
    r = httpx.post(gws[2].base + "/workers", json={"url": w1.url, "max_inflight": 4}, timeout=10)
    assert r.status_code == 202, r.text
    for g in gws:
        assert wait_for(lambda: urls(g) == sorted([w0.url, w1.url]), 10), urls(g)
        got = {httpx.post(g.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10).json()
               ["worker_id"] for _ in range(6)}
        assert got == {"w0", "w1"}
    # the cap went with it
    caps = {w["url"]: w["max_inflight"] for w in httpx.get(gws[1].base + "/workers").json()["workers"]}
    assert caps[w1.url] == 4
    # and a cap changed live through one gateway is every gateway's
    wid1 = next(w["id"] for w in httpx.get(gws[1].base + "/workers").json()["workers"] if w["url"] == w1.url)
    r = httpx.put(f"{gws[1].base}/workers/{wid1}", json={"max_inflight": 9}, timeout=10)
    assert r.status_code == 200 and r.json()["worker"]["max_inflight"] == 9, r.text

    def cap_at(g):
        return {w["url"]: w["max_inflight"] for w in httpx.get(g.base + "/workers").json()["workers"]}[w1.url]
    assert all(wait_for(lambda: cap_at(g) == 9, 10) for g in gws)
    # removed through another gateway: gone from every one
    wid = next(w["id"] for w in httpx.get(gws[1].base + "/workers").json()["workers"] if w["url"] == w0.url)
    assert httpx.delete(f"{gws[1].base}/workers/{wid}", timeout=10).status_code == 200
    for g in gws:
        assert wait_for(lambda: urls(g) == [w1.url], 10), urls(g)
    assert etcd.keys("/infergate/workers/") == ["/infergate/workers/" + w1.url]


def test_start_up_workers_are_shared(procs, etcd):
    w0 = procs.worker(worker_id="w0")
    gws = cluster(procs, etcd, 2, workers=[w0])
    assert wait_for(lambda: urls(gws[1]) == [w0.url], 10)
    r = httpx.post(gws[1].base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10)
    assert r.status_code == 200 and r.json()["worker_id"] == "w0"


def test_each_gateway_holds_a_lease_and_a_dead_one_leaves(procs, etcd):
    gws = cluster(procs, etcd, 2)
    assert wait_for(lambda: len(etcd.keys("/infergate/gateways/")) == 2, 10)
    gws[1].proc.kill()  # no goodbye: its lease runs out (2 s)
    gws[1].proc.wait()
    for f in (gws[1].proc.stdout, gws[1].proc.stderr):
        f.close()  # killed on purpose: not a failed exit
    assert wait_for(lambda: len(etcd.keys("/infergate/gateways/")) == 1, 15)
    assert httpx.get(gws[0].base + "/health", timeout=5).status_code == 200


def test_with_etcd_away_routing_goes_on_and_writes_say_503(procs, etcd):
    w0, w1 = procs.worker(worker_id="w0"), procs.worker(worker_id="w1")
    gws = cluster(procs, etcd, 2, workers=[w0])
    assert wait_for(lambda: urls(gws[1]) == [w0.url], 10)
    etcd.kill()
    for g in gws:  # the last known workers keep serving
        for _ in range(5):
            r = httpx.post(g.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10)
            assert r.status_code == 200 and r.json()["worker_id"] == "w0"
    r = httpx.post(gws[0].base + "/workers", json={"url": w1.url}, timeout=15)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert urls(gws[0]) == [w0.url]  # nothing half-applied
    wid = httpx.get(gws[0].base + "/workers").json()["workers"][0]["id"]
    assert httpx.delete(f"{gws[0].base}/workers/{wid}", timeout=15).status_code == 503
    assert urls(gws[0]) == [w0.url]
    etcd.start()  # back, with its data: writes work again and every gateway follows
    assert wait_for(lambda: httpx.post(gws[0].base + "/workers", json={"url": w1.url},
                                       timeout=15).status_code == 202, 20)
    for g in gws:
        assert wait_for(lambda: urls(g) == sorted([w0.url, w1.url]), 15), urls(g)
    assert json.loads(json.dumps(etcd.keys("/infergate/workers/"))) == sorted(
        ["/infergate/workers/" + w0.url, "/infergate/workers/" + w1.url])


def test_a_three_member_etcd_loses_its_leader_and_the_gateways_go_on(procs):
    names = [("e0", free_port()), ("e1", free_port()), ("e2", free_port())]
    members = [Etcd(n, names, peer=p, wait=False) for n, p in names]
    try:
        assert wait_for(lambda: all(m.healthy() for m in members), 30), "the etcd cluster did not form"
        w0, w1 = procs.worker(worker_id="w0"), procs.worker(worker_id="w1")
        endpoints = ",".join(m.url for m in members)
        gws = [procs.gateway([], "--etcd-endpoints", endpoints, "--etcd-lease-ttl-secs", "2",
                             "--health-check-interval-secs", "0") for _ in range(2)]
        assert httpx.post(gws[0].base + "/workers", json={"url": w0.url}, timeout=10).status_code == 202
        assert wait_for(lambda: urls(gws[1]) == [w0.url], 10)
        leader = next(m for m in members if m.is_leader())
        leader.kill()  # the two left elect another and keep the quorum
        assert wait_for(lambda: httpx.post(gws[1].base + "/workers", json={"url": w1.url},
                                           timeout=15).status_code == 202, 30)
        for g in gws:
            assert wait_for(lambda: urls(g) == sorted([w0.url, w1.url]), 15), urls(g)
            assert httpx.post(g.base + "/v1/chat/completions", json=chat_body(max_tokens=1),
                              timeout=10).status_code == 200
    finally:
        for m in members:
            m.stop()


def test_a_pause_through_one_gateway_holds_every_gateway_before_it_answers(procs, etcd):
    w0 = procs.worker(worker_id="w0")
    gws = cluster(procs, etcd, 3, workers=[w0])
    assert all(wait_for(lambda: urls(g) == [w0.url], 10) for g in gws)
    r = httpx.post(gws[0].base + "/pause_generation", json={}, timeout=30)
    assert r.status_code == 200, r.text
    assert w0.stats()["paused"]
    before = w0.stats()["generations"]
    # from the answer on, no gateway sends a new request to a worker until continue
    held, results = [], []

    def one(g):
        held.append(g)
        results.append(httpx.post(g.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=30))
    ts = [threading.Thread(target=one, args=(g,)) for g in gws]
    for t in ts:
        t.start()
    assert wait_for(lambda: len(held) == 3, 5)
    time.sleep(1.0)  # ample time for a request to slip through, were it not held
    assert w0.stats()["generations"] == before and not results
    r = httpx.post(gws[2].base + "/continue_generation", json={}, timeout=30)
    assert r.status_code == 200, r.text
    for t in ts:
        t.join(30)
    assert [x.status_code for x in results] == [200, 200, 200]
    assert not w0.stats()["paused"] and w0.stats()["generations"] == before + 3
    # with etcd away a pause cannot be agreed: said, and nothing paused
    etcd.kill()
    r = httpx.post(gws[1].base + "/pause_generation", json={}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert not w0.stats()["paused"]
    assert httpx.post(gws[1].base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10).status_code == 200


def test_weight_versions_set_through_one_gateway_are_every_gateways(procs, etcd):
    w0 = procs.worker(worker_id="w0")
    gws = cluster(procs, etcd, 2, workers=[w0])
    assert wait_for(lambda: urls(gws[1]) == [w0.url], 10)
    r = httpx.post(gws[0].base + "/set_version", json={"version": 6}, timeout=30)
    assert r.status_code == 200 and r.json()["fleet_version"] == 6, r.text

    def version_at(g):
        r = httpx.post(g.base + "/v1/chat/completions", json=chat_body(max_tokens=1), timeout=10)
        return r.headers.get("x-weight-version")
    assert wait_for(lambda: version_at(gws[1]) == "6", 10)
    assert httpx.get(gws[1].base + "/workers").json()["workers"][0]["weight_version"] == 6


ADM = {"authorization": "Bearer adm"}


def bearer(key):
    return {"authorization": "Bearer " + key}


def areal_cluster(procs, etcd, n_gw=2, n_workers=3):
    ws = [procs.worker("--admin-api-key", "adm", worker_id=f"m{i}") for i in range(n_workers)]
    gws = cluster(procs, etcd, n_gw, "--admin-api-key", "adm")
    for w in ws:
        assert httpx.post(gws[0].base + "/register", json={"worker_addr": w.url}, headers=ADM).status_code == 200
    for g in gws:
        assert wait_for(lambda: len(urls(g, ADM)) == n_workers, 10)
    return ws, gws


def chat_via(g, key):
    r = httpx.post(g.base + "/chat/completions", json=chat_body(max_tokens=1), headers=bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["worker_id"]


def route_status(g, **body):
    return httpx.post(g.base + "/route", json=body, headers=ADM, timeout=10).status_code


def test_areal_sessions_started_through_one_gateway_route_through_all(procs, etcd):
    """AReaL's sessions and groups live in etcd: a group started through one
    gateway pins its keys on every gateway; exported or removed through
    another, it is gone everywhere."""
    ws, (a, b) = areal_cluster(procs, etcd)
    groups = []
    for t in range(3):
        r = httpx.post(a.base + "/rl/start_session", json={"task_id": f"t{t}", "group_size": 3}, headers=ADM,
                       timeout=10)
        assert r.status_code == 201, r.text
        groups.append(r.json())
    owner = {g["group_id"]: g["sessions"][0]["session_id"].split("-")[1] for g in groups}
    keys = [(s["session_api_key"], owner[g["group_id"]]) for g in groups for s in g["sessions"]]
    # the other gateway routes every session's key to the session's worker (within a read)
    assert wait_for(lambda: httpx.get(b.base + "/health").json()["sessions"] == 9, 10)
    assert all(chat_via(b, k) == w for k, w in keys)
    # exported through b: its sessions are gone from a too
    g0 = groups[0]
    sids = [s["session_id"] for s in g0["sessions"]]
    r = httpx.post(b.base + "/export_trajectories", json={"session_ids": sids, "group_id": g0["group_id"]},
                   headers=ADM, timeout=10)
    assert r.status_code == 200, r.text
    assert wait_for(lambda: all(route_status(a, session_id=s) == 404 for s in sids), 10)
    # a group removed through a
    g1 = groups[1]
    assert httpx.post(a.base + "/remove_session", json={"group_id": g1["group_id"]}, headers=ADM).json() == \
        {"status": "ok", "removed": True}
    assert wait_for(lambda: route_status(b, session_id=g1["sessions"][0]["session_id"]) == 404, 10)
    # registered by hand through b, seen by a; removed through a, gone at b
    body = {"sessions": [{"session_api_key": "hk1", "session_id": "hs1"}], "worker_addr": ws[2].url,
            "group_id": "g-hand"}
    assert httpx.post(b.base + "/register_session", json=body, headers=ADM).json() == {"status": "ok"}
    assert wait_for(lambda: route_status(a, session_id="hs1") == 200, 10)
    assert chat_via(a, "hk1") == "m2"
    assert httpx.post(a.base + "/remove_session", json={"session_id": "hs1"}, headers=ADM).json()["removed"]
    assert wait_for(lambda: route_status(b, session_id="hs1") == 404, 10)
    assert sorted(k.rsplit("/", 1)[1] for k in etcd.keys("/infergate/areal/sessions/")) == \
        sorted(s["session_id"] for s in groups[2]["sessions"])
    # a worker removed: its sessions leave etcd as well
    wid = next(w["id"] for w in httpx.get(a.base + "/workers", headers=ADM).json()["workers"]
               if w["url"] == ws[int(owner[groups[2]["group_id"]][1])].url)
    assert httpx.delete(f"{a.base}/workers/{wid}", headers=ADM, timeout=10).status_code == 200
    assert wait_for(lambda: etcd.keys("/infergate/areal/sessions/") == [], 10)
    assert wait_for(lambda: httpx.get(b.base + "/health").json()["sessions"] == 0, 10)


def test_the_admin_keys_session_is_one_for_the_cluster(procs, etcd):
    ws, (a, b) = areal_cluster(procs, etcd)
    r = httpx.post(a.base + "/route", json={"api_key": "adm"}, headers=ADM, timeout=10)
    assert r.status_code == 200, r.text
    first = r.json()["worker_addr"]
    # the other gateway's pick loses to the one etcd has
    for g in (b, a, b):
        r = httpx.post(g.base + "/route", json={"api_key": "adm"}, headers=ADM, timeout=10)
        assert r.status_code == 200 and r.json()["worker_addr"] == first, r.text
    assert wait_for(lambda: route_status(b, session_id="__hitl__") == 200, 10)
    got = {httpx.post(b.base + "/v1/chat/completions", json=chat_body(max_tokens=1), headers=ADM).json()
           ["worker_id"] for _ in range(6)}
    assert [w.url for w in ws if w.worker_id in got] == [first]


def test_registered_models_are_every_gateways(procs, etcd):
    ws, (a, b) = areal_cluster(procs, etcd)
    r = httpx.post(a.base + "/register_model", json={"model": "policy", "data_proxy_addrs": [ws[1].url]},
                   headers=ADM, timeout=10)
    assert r.status_code == 200, r.text
    assert wait_for(lambda: httpx.get(b.base + "/models", headers=ADM).json()["models"] == ["policy"], 10)
    r = httpx.post(b.base + "/route", json={"model": "policy"}, headers=ADM, timeout=10)
    assert r.status_code == 200 and r.json()["worker_addr"] == ws[1].url
    assert httpx.post(b.base + "/remove_model", json={"name": "policy"}, headers=ADM).json() == \
        {"status": "ok", "name": "policy"}
    assert wait_for(lambda: httpx.get(a.base + "/models", headers=ADM).json()["models"] == [], 10)


def test_with_etcd_away_session_writes_say_503(procs, etcd):
    ws, (a, b) = areal_cluster(procs, etcd)
    body = {"sessions": [{"session_api_key": "k1", "session_id": "s1"}], "worker_addr": ws[0].url,
            "group_id": "g1"}
    assert httpx.post(a.base + "/register_session", json=body, headers=ADM).status_code == 200
    assert wait_for(lambda: route_status(b, session_id="s1") == 200, 10)
    etcd.kill()
    body2 = dict(body, sessions=[{"session_api_key": "k2", "session_id": "s2"}], group_id="g2")
    r = httpx.post(a.base + "/register_session", json=body2, headers=ADM, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert route_status(a, session_id="s2") == 404  # nothing half-applied
    r = httpx.post(a.base + "/register_model", json={"model": "p", "data_proxy_addrs": [ws[1].url]}, headers=ADM,
                   timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    # the sessions it knows still route
    assert chat_via(b, "k1") == "m0"
    etcd.start()
    r = httpx.post(a.base + "/register_session", json=body2, headers=ADM, timeout=30)
    assert r.status_code == 200, r.text
    assert wait_for(lambda: route_status(b, session_id="s2") == 200, 15)


def test_changes_come_through_the_watch_long_before_the_next_read(procs, etcd):
    """A re-read only every 60 s: what reaches the other gateway within seconds came by etcd's watch, also
    after etcd went away and came back (the watch starts again and re-reads)."""
    w0, w1 = (procs.worker(worker_id=f"w{i}") for i in range(2))
    a, b = cluster(procs, etcd, 2, "--etcd-sync-interval-secs", "60", "--admin-api-key", "adm")
    assert httpx.post(a.base + "/workers", json={"url": w0.url}, headers=ADM, timeout=10).status_code == 202
    assert wait_for(lambda: urls(b, ADM) == [w0.url], 5)
    body = {"sessions": [{"session_api_key": "k1", "session_id": "s1"}], "worker_addr": w0.url, "group_id": "g"}
    assert httpx.post(b.base + "/register_session", json=body, headers=ADM, timeout=10).status_code == 200
    assert wait_for(lambda: route_status(a, session_id="s1") == 200, 5)
    etcd.kill()
    time.sleep(1)
    etcd.start()
    time.sleep(1)  # the watch is retried every half second
    assert httpx.post(b.base + "/workers", json={"url": w1.url}, headers=ADM, timeout=10).status_code == 202
    assert wait_for(lambda: urls(a, ADM) == sorted([w0.url, w1.url]), 8)
    wid = next(w["id"] for w in httpx.get(a.base + "/workers", headers=ADM).json()["workers"] if w["url"] == w0.url)
    assert httpx.delete(f"{a.base}/workers/{wid}", headers=ADM, timeout=10).status_code == 200
    assert wait_for(lambda: urls(b, ADM) == [w1.url], 5)
    assert wait_for(lambda: route_status(b, session_id="s1") == 404, 5)  # its worker's sessions went with it


def test_workers_added_to_a_named_group_reach_the_gateways_that_have_it(procs, etcd, asgi_server, tmp_path):
    from test_forward import TRIAL_APP
    t0, t1 = asgi_server(TRIAL_APP), asgi_server(TRIAL_APP)
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps({"worker_groups": {"trials": {"worker_urls": [t0], "forward_paths": ["/run"]}}}))
    a, b = cluster(procs, etcd, 2, "--config", str(cfg))
    (c,) = cluster(procs, etcd, 1)  # no such group

    def group_of(g):
        return {w["url"]: w["group"] for w in httpx.get(g.base + "/workers", timeout=10).json()["workers"]}
    r = httpx.post(a.base + "/workers", json={"url": t1, "group": "trials"}, timeout=10)
    assert r.status_code == 202, r.text
    assert wait_for(lambda: group_of(b) == {t0: "trials", t1: "trials"}, 10)
    assert {httpx.post(b.base + "/run", content=b"x", timeout=10).status_code for _ in range(4)} == {200}
    time.sleep(1.5)  # a read or two later: the gateway without the group has not taken it as an LLM worker
    assert group_of(c) == {}
    # removed through b: gone from a; each gateway's own --config worker stays
    wid = next(w["id"] for w in httpx.get(b.base + "/workers").json()["workers"] if w["url"] == t1)
    assert httpx.delete(f"{b.base}/workers/{wid}", timeout=10).status_code == 200
    assert wait_for(lambda: group_of(a) == {t0: "trials"}, 10)
    time.sleep(1.5)
    assert group_of(a) == {t0: "trials"} and group_of(b) == {t0: "trials"}
