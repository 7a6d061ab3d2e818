"""Keep-alive reuse towards workers, per-request spread, connection retirement."""
import concurrent.futures

import httpx

from conftest import chat_body, wait_for


def test_1000_requests_over_few_upstream_connections(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    # the pool alone: spreading may add a spare connection per 30 requests when
    # a busy machine makes a connection look slow (test_spread.py covers that)
    gw = procs.gateway([w1, w2], "--upstream-spread", "off")

    def run(n):
        with httpx.Client(base_url=gw.base, timeout=10) as c:
            for _ in range(n):
                assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(run, [250] * 4))
    s1, s2 = w1.stats(), w2.stats()
    assert s1["completed"] + s2["completed"] == 1000
    # 4 concurrent clients over 2 threads: a handful of pooled connections per worker,
    # not one per request (+1 for the /v1/models discovery at start)
    assert s1["connections"] + s2["connections"] <= 2 + 2 * 2 * 4


def test_spread_per_request_from_one_client_connection(procs):
    w1, w2, w3 = (procs.worker(worker_id=f"w{i}") for i in (1, 2, 3))
    gw = procs.gateway([w1, w2, w3], "--policy", "round_robin", threads=1)
    seen = []
    with httpx.Client(base_url=gw.base, timeout=10, limits=httpx.Limits(max_connections=1)) as c:
        for _ in range(90):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
            seen.append(r.json()["worker_id"])
    assert {w: seen.count(w) for w in ("w1", "w2", "w3")} == {"w1": 30, "w2": 30, "w3": 30}


def test_every_policy_spreads(procs):
    for policy in ("random", "power_of_two", "least_load"):
        w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
        gw = procs.gateway([w1, w2], "--policy", policy)
        with httpx.Client(base_url=gw.base, timeout=10) as c:
            ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"]
                   for _ in range(60)}
        assert ids == {"w1", "w2"}, policy
        assert gw.stop() == 0


def test_max_requests_per_conn_retires_connections(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], "--upstream-max-requests-per-conn", "5", "--upstream-spread", "off", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(50):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
    # 50 requests, 5 per connection: 10 connections, +1 discovery, +1 this /stats
    assert w.stats()["connections"] == 12


def test_post_is_not_sent_twice_when_its_reused_connection_dies(procs):
    """RFC 9110 9.2.2: once a POST went out the worker may have run it, so a
    reused connection that dies before the answer is a 502, never a resend."""
    w = procs.worker("--drop-reused", "1", worker_id="w1")
    gw = procs.gateway([w], "--upstream-spread", "off", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
        before = w.stats()["requests"]
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "worker_failed"
        assert w.stats()["requests"] == before + 2  # this request once, plus the /stats call itself
        # the broken connection is gone: the next request gets a fresh one and an answer
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_reused_connection_dying_before_answer_is_resent_once_when_allowed(procs):
    """With --retry-non-idempotent the idle keep-alive race is hidden: the
    worker closes every reused connection unanswered and each request is
    resent once on a fresh connection."""
    w = procs.worker("--drop-reused", "1", worker_id="w1")
    gw = procs.gateway([w], "--retry-non-idempotent", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(20):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
            assert r.status_code == 200, r.text
    st = w.stats()
    assert st["completed"] >= 20
    assert st["aborted"] >= 1  # the dropped attempts


def test_worker_reset_on_fresh_connection_is_502_not_retried(procs):
    w1 = procs.worker(worker_id="w1")
    gw = procs.gateway([w1], threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=chat_body(), headers={"x-mock-close": "1"})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "worker_failed" and err["type"] == "upstream_error"
        # the client connection stays usable
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_idle_pooled_connections_are_closed_after_the_idle_timeout(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], "--upstream-idle-timeout-secs", "0.5", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(5):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
        # the pooled connection, the control thread's kept health-check connection, this /stats
        assert w.stats()["open_connections"] == 3
        assert wait_for(lambda: w.stats()["open_connections"] == 2)
        # the next request simply connects again
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200


def test_connections_older_than_max_age_are_retired(procs):
    import time
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], "--upstream-max-conn-age-secs", "0.3", threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(4):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
            time.sleep(0.4)
    # each request found its pooled connection too old: 4 connections, +discovery +/stats
    assert w.stats()["connections"] == 6


def test_worker_gone_while_pooled_is_a_clean_502(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w], threads=1)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).status_code == 200
        w.stop()
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
        assert r.status_code == 502  # nothing listens any more: a clean error, not a hang


def test_mock_processes_share_one_socket_and_report_pids(procs):
    """--processes K: K processes race in accept() on one socket; /stats and
    every answer name the serving process, so later issues can measure spread."""
    w = procs.worker("--processes", "4", worker_id="w1")
    gw = procs.gateway([w], "--upstream-max-requests-per-conn", "1")

    def run(_):
        with httpx.Client(base_url=gw.base, timeout=10) as c:
            out = []
            for _ in range(25):
                r = c.post("/v1/chat/completions", json=chat_body(max_tokens=1))
                assert r.status_code == 200
                assert r.headers["x-worker-pid"] == str(r.json()["worker_pid"])
                out.append(r.json()["worker_pid"])
            return out

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        pids = [p for chunk in ex.map(run, range(8)) for p in chunk]
    st = w.stats()
    assert len(st["processes"]) == 4
    assert {p["pid"] for p in st["processes"]} >= set(pids)
    assert len(set(pids)) >= 2
    assert sum(p["requests"] for p in st["processes"]) >= 200
