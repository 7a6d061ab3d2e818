"""cache_aware across gateways (issue 18): each gateway's prefix inserts go
to the others over a real NATS server (nats-server from Debian), so a
conversation's next turn finds the worker that holds its history whichever
gateway it reaches. NATS away: routing goes on with each gateway's own
index; back: sharing resumes. Garbage on the subject is counted and
ignored."""
import re
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from conftest import free_port, wait_for

NATS = shutil.which("nats-server")
pytestmark = pytest.mark.skipif(not NATS, reason="nats-server is not installed (scripts/setup.sh installs it)")


class Nats:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([NATS, "-a", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_for(lambda: self.up(), 10), "nats-server did not start"

    def up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def publish(self, subject, payload):
        """A raw client: NATS's text protocol, as any other publisher would speak it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.recv(4096)  # INFO
            s.sendall(b'CONNECT {"verbose":false}\r\nPUB ' + subject.encode() + b" %d\r\n" % len(payload) +
                      payload + b"\r\nPING\r\n")
            got = b""
            while b"PONG" not in got:
                got += s.recv(4096)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def nats():
    n = Nats()
    yield n
    n.kill()


def metric(gw, name, kind=None):
    text = httpx.get(gw.base + "/metrics", timeout=5).text
    label = r'\{kind="%s"\}' % kind if kind else ""
    m = re.search(r"^%s%s (\d+)" % (name, label), text, re.M)
    return int(m.group(1)) if m else None


def conversation(i, turns):
    """A conversation's messages up to `turns` user turns: a long private history, so its prefix decides."""
    msgs = [{"role": "system", "content": f"conversation {i}: " + f"private context {i} " * 60}]
    for t in range(turns):
        msgs.append({"role": "user", "content": f"turn {t} of {i}: " + "more words " * 20})
        if t + 1 < turns:
            msgs.append({"role": "assistant", "content": f"answer {t} of {i} " * 10})
    return {"model": "mock-model", "messages": msgs, "max_tokens": 1}


def worker_of(gw, body):
    r = httpx.post(gw.base + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["worker_id"]


def gateways(procs, workers, n, *args):
    return [procs.gateway(workers, "--policy", "cache_aware", "--health-check-interval-secs", "0", *args)
            for _ in range(n)]


def test_a_conversations_next_turn_finds_its_worker_through_another_gateway(procs, nats):
    ws = [procs.worker(worker_id=f"w{i}") for i in range(4)]
    a, b = gateways(procs, ws, 2, "--nats-servers", nats.url)
    assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 1 and
                    metric(b, "infergate_prefix_share_connected") == 1, 10)
    first = {i: worker_of(a, conversation(i, 1)) for i in range(12)}
    assert len(set(first.values())) >= 2  # spread by load, not all on one worker
    assert wait_for(lambda: metric(b, "infergate_prefix_share_inserts_total", "applied") >= 12, 10)
    # each second turn through the other gateway: the first turn's worker, every time
    assert {i: worker_of(b, conversation(i, 2)) for i in range(12)} == first
    # and back again: b's inserts reached a
    assert wait_for(lambda: metric(a, "infergate_prefix_share_inserts_total", "applied") >= 12, 10)
    assert {i: worker_of(a, conversation(i, 3)) for i in range(12)} == first
    assert metric(a, "infergate_prefix_share_messages_total", "sent") >= 1
    assert metric(a, "infergate_prefix_share_inserts_total", "dropped") == 0


def test_without_the_bus_each_gateway_knows_only_its_own_turns(procs):
    """The control: the same conversations, no --nats-servers: the other gateway places second turns by load."""
    ws = [procs.worker(worker_id=f"w{i}") for i in range(4)]
    a, b = gateways(procs, ws, 2)
    first = {i: worker_of(a, conversation(i, 1)) for i in range(12)}
    second = {i: worker_of(b, conversation(i, 2)) for i in range(12)}
    assert second != first
    assert metric(a, "infergate_prefix_share_connected") is None  # no sharing metrics when it is off


def test_with_nats_away_routing_goes_on_and_sharing_resumes_when_it_is_back(procs):
    port = free_port()
    ws = [procs.worker(worker_id=f"w{i}") for i in range(4)]
    # the bus is not up yet: the gateways start anyway and connect in the background
    a, b = gateways(procs, ws, 2, "--nats-servers", f"127.0.0.1:{port}")
    assert metric(a, "infergate_prefix_share_connected") == 0
    for i in range(8):
        worker_of(a, conversation(100 + i, 1))
    n = Nats(port)
    try:
        assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 1 and
                        metric(b, "infergate_prefix_share_connected") == 1, 15)
        first = {i: worker_of(a, conversation(i, 1)) for i in range(8)}
        assert wait_for(lambda: metric(b, "infergate_prefix_share_inserts_total", "applied") >= 8, 10)
        assert {i: worker_of(b, conversation(i, 2)) for i in range(8)} == first
        # the bus dies: no request fails because of it
        n.kill()
        assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 0, 10)
        for i in range(8):
            worker_of(a, conversation(200 + i, 1))
            worker_of(b, conversation(200 + i, 2))
        n.start()
        assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 1 and
                        metric(b, "infergate_prefix_share_connected") == 1, 15)
        before = metric(b, "infergate_prefix_share_inserts_total", "applied")
        first = {i: worker_of(a, conversation(300 + i, 1)) for i in range(8)}
        assert wait_for(lambda: metric(b, "infergate_prefix_share_inserts_total", "applied") >= before + 8, 10)
        assert {i: worker_of(b, conversation(300 + i, 2)) for i in range(8)} == first
    finally:
        n.kill()


def test_garbage_on_the_subject_is_counted_and_ignored(procs, nats):
    ws = [procs.worker(worker_id=f"w{i}") for i in range(2)]
    (a,) = gateways(procs, ws, 1, "--nats-servers", nats.url)
    assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 1, 10)
    magic = (0x31786670476749).to_bytes(8, "little")
    bad = [b"hello", b"\0" * 16, magic + (1).to_bytes(8, "little"),  # a record cut short
           magic + (7).to_bytes(8, "little") + (99999).to_bytes(8, "little")]  # more blocks than any prompt
    unknown = magic + (12345).to_bytes(8, "little") + (1).to_bytes(8, "little") + (42).to_bytes(8, "little")
    for p in bad + [unknown]:
        nats.publish("infergate.prefix", p)
    nats.publish("infergate.load", b"not a load report")
    nats.publish("infergate.load", magic + b"\0" * 8)  # a prefix message on the load subject
    assert wait_for(lambda: metric(a, "infergate_prefix_share_messages_total", "received") == len(bad) + 3, 10)
    assert metric(a, "infergate_prefix_share_messages_total", "malformed") == len(bad) + 2
    assert metric(a, "infergate_prefix_share_peers") == 0
    assert metric(a, "infergate_prefix_share_inserts_total", "unknown") == 1  # a worker it does not have
    assert worker_of(a, conversation(1, 1)) in {"w0", "w1"}


def test_a_cluster_subject_follows_the_etcd_prefix(procs, nats):
    """Two clusters on one bus do not hear each other: the subject comes from --etcd-prefix."""
    ws = [procs.worker(worker_id=f"w{i}") for i in range(4)]
    a = gateways(procs, ws, 1, "--nats-servers", nats.url, "--etcd-prefix", "/team-a/")[0]
    b = gateways(procs, ws, 1, "--nats-servers", nats.url, "--etcd-prefix", "/team-b/")[0]
    assert wait_for(lambda: metric(a, "infergate_prefix_share_connected") == 1 and
                    metric(b, "infergate_prefix_share_connected") == 1, 10)
    for i in range(6):
        worker_of(a, conversation(i, 1))
    assert wait_for(lambda: metric(a, "infergate_prefix_share_messages_total", "sent") >= 1, 10)
    time.sleep(0.5)
    assert metric(b, "infergate_prefix_share_messages_total", "received") == 0


def remote_inflight(gw, url):
    return next(w.get("remote_inflight") for w in httpx.get(gw.base + "/workers", timeout=5).json()["workers"]
                if w["url"] == url)


def test_loads_through_one_gateway_count_in_the_others_choices(procs, nats):
    """A's streams hold w0; B, which saw none of them, sends new conversations to w1: it counts A's load."""
    w0 = procs.worker("--token-interval-ms", "20", worker_id="w0")
    w1 = procs.worker("--token-interval-ms", "20", worker_id="w1")
    (a,) = gateways(procs, [w0], 1, "--nats-servers", nats.url)
    (b,) = gateways(procs, [w0, w1], 1, "--nats-servers", nats.url)
    assert wait_for(lambda: metric(b, "infergate_prefix_share_peers") == 1 and
                    metric(a, "infergate_prefix_share_peers") == 1, 10)
    assert remote_inflight(b, w0.url) == 0
    streams, client = [], httpx.Client(timeout=30)
    try:
        for i in range(4):
            body = dict(conversation(500 + i, 1), stream=True, max_tokens=200)  # 4 s each
            s = client.stream("POST", a.base + "/v1/chat/completions", json=body)
            r = s.__enter__()
            assert r.status_code == 200
            streams.append((s, r, r.iter_lines()))
            next(streams[-1][2])  # the first event: it is in flight at w0
        assert wait_for(lambda: remote_inflight(b, w0.url) == 4, 5), remote_inflight(b, w0.url)
        assert remote_inflight(b, w1.url) == 0
        assert {worker_of(b, conversation(600 + i, 1)) for i in range(6)} == {"w1"}
    finally:
        for s, _, _ in streams:
            s.__exit__(None, None, None)
        client.close()
    # the streams are gone (the client left): so is their count
    assert wait_for(lambda: remote_inflight(b, w0.url) == 0, 10)


def test_a_gateway_killed_stops_counting(procs, nats):
    w0 = procs.worker("--token-interval-ms", "20", worker_id="w0")
    (a,) = gateways(procs, [w0], 1, "--nats-servers", nats.url)
    (b,) = gateways(procs, [w0], 1, "--nats-servers", nats.url)
    assert wait_for(lambda: metric(b, "infergate_prefix_share_peers") == 1, 10)
    client = httpx.Client(timeout=30)
    s = client.stream("POST", a.base + "/v1/chat/completions",
                      json=dict(conversation(1, 1), stream=True, max_tokens=500))
    r = s.__enter__()
    lines = r.iter_lines()
    next(lines)
    assert wait_for(lambda: remote_inflight(b, w0.url) == 1, 5)
    a.proc.kill()  # no goodbye: its last report says 1 in flight
    a.proc.wait()
    for f in (a.proc.stdout, a.proc.stderr):
        f.close()  # killed on purpose: not a failed exit
    try:
        s.__exit__(None, None, None)
    except httpx.HTTPError:
        pass
    client.close()
    assert wait_for(lambda: metric(b, "infergate_prefix_share_peers") == 0, 10)
    assert remote_inflight(b, w0.url) == 0
