"""Affinity routing: cache_aware keeps a conversation's turns on the worker
that holds its prefix while the fleet stays balanced; consistent_hash maps a
routing key to a worker and moves only the keys of a worker that leaves."""
import concurrent.futures
import random

import httpx

from conftest import chat_body


def converse(base, conv, turns, system, log, rnd):
    history = [{"role": "system", "content": system}]
    with httpx.Client(base_url=base, timeout=30) as c:
        for t in range(turns):
            history.append({"role": "user", "content": f"conversation {conv} turn {t}: " +
                            " ".join(f"w{rnd.randint(0, 999)}" for _ in range(rnd.randint(60, 120)))})
            r = c.post("/v1/chat/completions", json=chat_body(messages=history, max_tokens=8),
                       headers={"x-mock-token-interval-ms": "10"})
            assert r.status_code == 200, r.text
            body = r.json()
            log.append((conv, body["worker_id"], body["usage"]["prompt_tokens_details"]["cached_tokens"]))
            history.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})


def test_cache_aware_keeps_conversations_on_their_worker_and_the_fleet_balanced(procs):
    ws = [procs.worker("--kv-cache-tokens", "200000", worker_id=f"w{i}") for i in range(4)]
    gw = procs.gateway(ws, "--policy", "cache_aware")
    system = "You are a careful assistant. " * 60  # shared by every conversation
    log, convs, turns = [], 24, 4
    with concurrent.futures.ThreadPoolExecutor(convs) as pool:
        futs = [pool.submit(converse, gw.base, k, turns, system, log, random.Random(k)) for k in range(convs)]
        for f in futs:
            f.result()
    by_conv = {}
    for conv, worker, _ in log:
        by_conv.setdefault(conv, []).append(worker)
    stayed = sum(1 for ws_ in by_conv.values() for a, b in zip(ws_, ws_[1:]) if a == b)
    assert stayed >= 0.9 * convs * (turns - 1), by_conv  # later turns follow the prefix
    per = [sum(1 for _, w, _ in log if w == x.worker_id) for x in ws]
    print("requests per worker", per)
    assert min(per) > 0 and max(per) <= 2 * min(per), per  # and nobody is left out or swamped
    assert sum(1 for _, _, cached in log if cached > 0) >= convs * (turns - 1)  # the workers saw hits
    metrics = httpx.get(gw.base + "/metrics").text
    hits = next(l for l in metrics.splitlines() if l.startswith("infergate_affinity_hits_total "))
    assert float(hits.split()[1]) >= convs * (turns - 1) * 0.9


def test_cache_aware_without_a_prompt_falls_back_to_load(procs):
    ws = [procs.worker(worker_id=f"w{i}") for i in range(3)]
    gw = procs.gateway(ws, "--policy", "cache_aware")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        for _ in range(6):
            r = c.post("/v1/embeddings", json={"model": "mock-model", "dimensions": 4})
            assert r.status_code == 200
        r = c.post("/v1/completions", json={"model": "mock-model", "prompt": "once upon a time " * 50,
                                            "max_tokens": 2})
        assert r.status_code == 200


def test_consistent_hash_by_header_and_user_and_only_a_leavers_keys_move(procs):
    ws = [procs.worker(worker_id=f"w{i}") for i in range(4)]
    gw = procs.gateway(ws, "--policy", "consistent_hash")

    def where(c, key, how):
        if how == "user":
            return c.post("/v1/chat/completions", json=chat_body(max_tokens=1, user=key)).json()["worker_id"]
        return c.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers={how: key}).json()["worker_id"]

    with httpx.Client(base_url=gw.base, timeout=10) as c:
        keys = [f"session-{k}" for k in range(60)]
        home = {k: where(c, k, "x-session-id") for k in keys}
        assert len(set(home.values())) == 4  # spread over the fleet
        for k in keys[:20]:  # stable, whichever way the key comes
            assert where(c, k, "x-session-id") == home[k]
            assert where(c, k, "x-user-id") == home[k]
            assert where(c, k, "X-SMG-Routing-Key") == home[k]
            assert where(c, k, "user") == home[k]
        # w2 leaves: its keys move, nobody else's do
        wid = next(w["id"] for w in c.get("/workers").json()["workers"] if w["url"] == ws[2].url)
        assert c.delete(f"/workers/{wid}").status_code == 200
        for k in keys:
            now = where(c, k, "x-session-id")
            if home[k] != "w2":
                assert now == home[k], k
            else:
                assert now != "w2"
