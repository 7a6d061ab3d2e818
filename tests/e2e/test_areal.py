"""AReaL compatibility: its router's worker, session and model endpoints,
its gateway's session routing, and the whole RL sequence under load."""
import asyncio
import json

import aiohttp
import httpx

from conftest import chat_body, wait_for


def test_register_unregister_and_workers_like_areal_router(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1], "--admin-api-key", "adm", "--policy", "round_robin")
    h = {"authorization": "Bearer adm"}
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/register", json={"worker_addr": w2.url}, headers=h)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and body["worker_id"].startswith("w")
        assert c.post("/register", json={"worker_addr": w2.url}, headers=h).json() == body  # idempotent
        workers = c.get("/workers", headers=h).json()["workers"]
        mine = next(w for w in workers if w["worker_id"] == body["worker_id"])
        assert mine["addr"] == w2.url and mine["healthy"] is True and mine["active_requests"] == 0
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(10)}
        assert ids == {"w1", "w2"}
        r = c.post("/unregister", json={"worker_id": body["worker_id"]}, headers=h)
        assert r.status_code == 200 and r.json() == {"status": "ok", "sessions_revoked": 0}
        ids = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(6)}
        assert ids == {"w1"}
        # by address too
        c.post("/register", json={"worker_addr": w2.url}, headers=h)
        assert c.post("/unregister", json={"worker_addr": w2.url}, headers=h).status_code == 200
        assert c.post("/unregister", json={"worker_id": "w999"}, headers=h).status_code == 404
        assert c.post("/unregister", json={}, headers=h).status_code == 422
        assert c.post("/register", json={}, headers=h).status_code == 422
        # AReaL's auth: 401 missing or malformed bearer, 403 wrong key
        assert c.post("/register", json={"worker_addr": w2.url}).status_code == 401
        assert c.post("/register", json={"worker_addr": w2.url}, headers={"authorization": "Basic eDp5"}).status_code == 401
        assert c.post("/register", json={"worker_addr": w2.url}, headers={"authorization": "Bearer nope"}).status_code == 403


ADM = {"authorization": "Bearer adm"}


def bearer(key):
    return {"authorization": "Bearer " + key}


def areal_fleet(procs, n=2, *gw_args, worker_args=()):
    ws = [procs.worker("--admin-api-key", "adm", *worker_args, worker_id=f"m{i}") for i in range(n)]
    # round robin: tests that check requests reach every worker must not
    # depend on least_load's random tie-breaks on an idle fleet
    gw = procs.gateway([], "--admin-api-key", "adm", "--policy", "round_robin", *gw_args)
    ids = {}
    for w in ws:
        r = httpx.post(gw.base + "/register", json={"worker_addr": w.url}, headers=ADM)
        assert r.status_code == 200
        ids[w.worker_id] = r.json()["worker_id"]
    return ws, gw, ids


def test_sessions_pin_chat_to_the_worker_that_started_them_before_areals_rework(procs):
    """AReaL before its session rework (PR #1321): one session per start
    ({session_id, api_key}), export and remove by session_id."""
    ws, gw, ids = areal_fleet(procs, 3, worker_args=("--areal-api", "legacy"))
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        sessions = []
        for t in range(6):
            r = c.post("/rl/start_session", json={"task_id": f"t{t}"}, headers=ADM)
            assert r.status_code == 201, r.text
            sessions.append(r.json())
        owners = {s["session_id"]: s["session_id"].split("-")[1] for s in sessions}
        assert set(owners.values()) == {"m0", "m1", "m2"}  # spread over the fleet
        assert "infergate_sessions 6\n" in c.get("/metrics").text
        for s in sessions:
            for path in ("/chat/completions", "/v1/chat/completions"):
                r = c.post(path, json=chat_body(max_tokens=1), headers=bearer(s["api_key"]))
                assert r.status_code == 200 and r.json()["worker_id"] == owners[s["session_id"]]
            r = c.post("/rl/set_reward", json={"reward": 0.5}, headers=bearer(s["api_key"]))
            assert r.status_code == 200 and r.json()["interaction_count"] == 2
            assert r.json()["worker_id"] == owners[s["session_id"]]
        # the router's view of the pins
        s0 = sessions[0]
        r = c.post("/route", json={"session_id": s0["session_id"]}, headers=ADM)
        assert r.status_code == 200
        wid = ids[owners[s0["session_id"]]]
        assert r.json()["worker_addr"] == c.get(f"/resolve_worker/{wid}", headers=ADM).json()["worker_addr"]
        assert c.post("/route", json={"api_key": s0["api_key"]}, headers=ADM).json() == r.json()
        # export goes to the pinned worker, returns its record, and ends the session
        r = c.post("/export_trajectories", json={"session_id": s0["session_id"]}, headers=ADM)
        assert r.status_code == 200
        assert r.json()["worker_id"] == owners[s0["session_id"]] and r.json()["interactions"] == 2
        assert r.json()["reward"] == 0.5
        assert c.post("/export_trajectories", json={"session_id": s0["session_id"]}, headers=ADM).status_code == 401
        assert c.post("/route", json={"session_id": s0["session_id"]}, headers=ADM).status_code == 404
        # export by model naming the session (AReaL's alias)
        s1 = sessions[1]
        r = c.post("/export_trajectories", json={"model": s1["session_id"]}, headers=ADM)
        assert r.status_code == 200 and r.json()["session_id"] == s1["session_id"]
        # remove_session forgets the pin
        s2 = sessions[2]
        assert c.post("/remove_session", json={"session_id": s2["session_id"]}, headers=ADM).json() == \
            {"status": "ok", "removed": True, "persistent": False}
        assert c.post("/remove_session", json={"session_id": s2["session_id"]}, headers=ADM).json()["removed"] is False
        # unregister revokes the worker's sessions
        victim = owners[sessions[3]["session_id"]]
        left = [s for s in sessions[3:] if owners[s["session_id"]] == victim]
        r = c.post("/unregister", json={"worker_id": ids[victim]}, headers=ADM)
        assert r.status_code == 200 and r.json()["sessions_revoked"] == len(left)
        for s in left:
            assert c.post("/route", json={"session_id": s["session_id"]}, headers=ADM).status_code == 404


def test_session_groups_as_areal_runs_them_now(procs):
    """AReaL's current API (after PR #1321): start_session makes a group of
    group_size sessions on one data proxy, every key pinned there;
    export_trajectories {session_ids, group_id} goes to their worker, merges
    their interactions and revokes the group; /remove_session {group_id};
    /register_session takes a group; /health carries the router's counts."""
    ws, gw, ids = areal_fleet(procs, 3)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        groups = []
        for t in range(3):
            r = c.post("/rl/start_session", json={"task_id": f"t{t}", "group_size": 4}, headers=ADM)
            assert r.status_code == 201, r.text
            g = r.json()
            assert g["group_id"] and len(g["sessions"]) == 4
            groups.append(g)
        owner = {g["group_id"]: g["sessions"][0]["session_id"].split("-")[1] for g in groups}
        assert set(owner.values()) == {"m0", "m1", "m2"}  # groups spread, each on one proxy
        assert c.get("/health").json() == {"status": "ok", "workers": 3, "sessions": 12, "strategy": "round_robin"}
        for g in groups:
            for s in g["sessions"]:
                r = c.post("/chat/completions", json=chat_body(max_tokens=1), headers=bearer(s["session_api_key"]))
                assert r.status_code == 200 and r.json()["worker_id"] == owner[g["group_id"]]
                assert c.post("/rl/set_reward", json={"reward": 1.0},
                              headers=bearer(s["session_api_key"])).status_code == 200
        # export the whole group: one answer, merged, then the group is gone
        g0 = groups[0]
        sids = [s["session_id"] for s in g0["sessions"]]
        r = c.post("/export_trajectories", json={"session_ids": sids, "group_id": g0["group_id"]}, headers=ADM)
        assert r.status_code == 200, r.text
        got = r.json()["interactions"]
        assert sorted(got) == sorted(sids)
        assert all(v["worker_id"] == owner[g0["group_id"]] and v["interactions"] == 1 for v in got.values())
        for sid in sids:
            assert c.post("/route", json={"session_id": sid}, headers=ADM).status_code == 404
        key = g0["sessions"][0]["session_api_key"]
        assert c.post("/route", json={"api_key": key}, headers=ADM).status_code == 404
        assert c.post("/export_trajectories", json={"session_ids": sids}, headers=ADM).status_code == 401
        assert c.post("/export_trajectories", json={"session_ids": []}, headers=ADM).status_code == 400
        assert c.post("/export_trajectories", json={"session_ids": [1]}, headers=ADM).status_code == 400
        # remove_session by group
        g1 = groups[1]
        assert c.post("/remove_session", json={"group_id": g1["group_id"]}, headers=ADM).json() == \
            {"status": "ok", "removed": True}
        assert c.post("/remove_session", json={"group_id": g1["group_id"]}, headers=ADM).json() == \
            {"status": "ok", "removed": False}
        assert c.post("/route", json={"session_id": g1["sessions"][2]["session_id"]}, headers=ADM).status_code == 404
        assert c.post("/remove_session", json={}, headers=ADM).status_code == 422
        # keep the sessions: remove_session false and no group
        g2 = groups[2]
        s2 = g2["sessions"][0]["session_id"]
        r = c.post("/export_trajectories", json={"session_ids": [s2], "remove_session": False}, headers=ADM)
        assert r.status_code == 200 and list(r.json()["interactions"]) == [s2]
        assert c.post("/route", json={"session_id": s2}, headers=ADM).status_code == 200
        # a group registered by hand (the gateway's register_session_in_router)
        body = {"sessions": [{"session_api_key": "hk1", "session_id": "hs1"},
                             {"session_api_key": "hk2", "session_id": "hs2"}],
                "worker_addr": ws[1].url, "group_id": "g-hand"}
        assert c.post("/register_session", json=body, headers=ADM).json() == {"status": "ok"}
        for k in ("hk1", "hk2"):
            assert c.post("/chat/completions", json=chat_body(max_tokens=1), headers=bearer(k)).json()["worker_id"] == "m1"
        assert c.post("/remove_session", json={"group_id": "g-hand"}, headers=ADM).json()["removed"] is True
        assert c.post("/route", json={"api_key": "hk2"}, headers=ADM).status_code == 404
        bad = dict(body, sessions=[{"session_id": "x"}])
        assert c.post("/register_session", json=bad, headers=ADM).status_code == 422
        assert c.post("/register_session", json={"sessions": [], "worker_addr": ws[1].url}, headers=ADM).status_code == 422
        # unregistering a worker drops its groups with its sessions
        r = c.post("/unregister", json={"worker_id": ids[owner[g2["group_id"]]]}, headers=ADM)
        assert r.json()["sessions_revoked"] == 4
        assert c.post("/remove_session", json={"group_id": g2["group_id"]}, headers=ADM).json()["removed"] is False
        assert c.get("/health").json()["sessions"] == 0


def test_route_falls_back_to_the_first_registered_model(procs):
    """AReaL's /route: a model it does not know, or none, goes to the first
    registered model's data proxies; a session it does not know, too, once a
    model is registered (without one: 404)."""
    ws, gw, ids = areal_fleet(procs, 3)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        assert c.post("/route", json={"session_id": "nope"}, headers=ADM).status_code == 404
        assert c.post("/register_model", json={"model": "policy", "data_proxy_addrs": [ws[2].url]},
                      headers=ADM).status_code == 200
        for body in ({"model": "other"}, {"session_id": "nope"}, {"model": "policy"}):
            r = c.post("/route", json=body, headers=ADM)
            assert r.status_code == 200 and r.json()["worker_addr"] == ws[2].url, (body, r.text)


def test_admin_key_is_one_persistent_session(procs):
    ws, gw, ids = areal_fleet(procs, 3)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        first = c.post("/chat/completions", json=chat_body(max_tokens=1), headers=ADM).json()["worker_id"]
        assert wait_for(lambda: c.post("/route", json={"session_id": "__hitl__"}, headers=ADM).status_code == 200)
        got = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers=ADM).json()["worker_id"]
               for _ in range(9)}
        assert got == {first}
        r = c.post("/rl/set_reward", json={"reward": 1}, headers=ADM)
        assert r.status_code == 200 and r.json()["worker_id"] == first and r.json()["session_id"] == "__hitl__"
        assert c.post("/remove_session", json={"session_id": "__hitl__"}, headers=ADM).json() == \
            {"status": "ok", "removed": False, "persistent": True}
        # requests without a session still spread over the fleet
        got = {c.post("/v1/chat/completions", json=chat_body(max_tokens=1)).json()["worker_id"] for _ in range(9)}
        assert got == {"m0", "m1", "m2"}


def test_router_endpoints_errors_and_auth(procs):
    ws, gw, ids = areal_fleet(procs, 2)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        paths = [("POST", "/route", {"model": "mock-model"}), ("POST", "/register_session", {}),
                 ("POST", "/remove_session", {}), ("GET", "/resolve_worker/w1", None),
                 ("POST", "/register_model", {}), ("GET", "/models", None), ("POST", "/remove_model", {}),
                 ("POST", "/rl/start_session", {}), ("POST", "/export_trajectories", {}),
                 ("POST", "/callback/pause_generation/w1", None)]
        for method, path, body in paths:
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers={"authorization": "Token adm"}).status_code == 401
            assert c.request(method, path, json=body, headers=bearer("nope")).status_code == 403, path
        assert c.post("/route", json={}, headers=ADM).status_code == 422
        assert c.post("/route", json={"api_key": "stranger"}, headers=ADM).status_code == 404
        assert c.post("/route", json={"model": "no-such"}, headers=ADM).status_code == 404
        r = c.post("/route", json={"model": "mock-model"}, headers=ADM)
        assert r.status_code == 200 and r.json()["worker_addr"] in {w.url for w in ws}
        assert c.post("/register_session", json={"session_api_key": "k"}, headers=ADM).status_code == 422
        assert c.post("/register_session", json={"session_api_key": "k", "session_id": "s",
                                                 "worker_addr": "http://127.0.0.1:1"}, headers=ADM).status_code == 404
        assert c.post("/remove_session", json={}, headers=ADM).status_code == 422
        assert c.get("/resolve_worker/w999", headers=ADM).status_code == 404
        assert c.post("/register_model", json={"url": "x"}, headers=ADM).status_code == 400
        assert c.post("/register_model", json={"model": "p", "data_proxy_addrs": ["http://127.0.0.1:1"]},
                      headers=ADM).status_code == 404
        assert c.post("/remove_model", json={"name": "p"}, headers=ADM).status_code == 404
        assert c.post("/export_trajectories", content=b"{", headers=ADM).status_code == 400
        assert c.post("/export_trajectories", json={}, headers=ADM).status_code == 400
        assert c.post("/export_trajectories", json={"session_id": "nope"}, headers=ADM).status_code == 401
        # a session registered by hand pins like a started one
        assert c.post("/register_session", json={"session_api_key": "hand", "session_id": "sh",
                                                 "worker_addr": ws[1].url}, headers=ADM).json() == {"status": "ok"}
        assert {c.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers=bearer("hand")).json()["worker_id"]
                for _ in range(5)} == {"m1"}


def test_register_model_routes_it_to_its_data_proxies(procs):
    ws, gw, ids = areal_fleet(procs, 3)
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/register_model", json={"model": "policy", "data_proxy_addrs": [ws[0].url, ws[2].url]},
                   headers=ADM)
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "model": "policy", "data_proxy_addrs": [ws[0].url, ws[2].url]}
        assert c.get("/models", headers=ADM).json() == {"models": ["policy"]}
        got = {c.post("/v1/chat/completions", json=chat_body(model="policy", max_tokens=1)).json()["worker_id"]
               for _ in range(12)}
        assert got == {"m0", "m2"}
        r = c.post("/route", json={"model": "policy"}, headers=ADM)
        assert r.json()["worker_addr"] in {ws[0].url, ws[2].url}
        # without addresses: every healthy worker
        assert c.post("/register_model", json={"model": "all"}, headers=ADM).json()["data_proxy_addrs"] == \
            [w.url for w in ws]
        assert c.post("/remove_model", json={"name": "policy"}, headers=ADM).json() == {"status": "ok", "name": "policy"}
        assert c.get("/models", headers=ADM).json() == {"models": ["all"]}
        # a data proxy that refuses the model fails the registration, per worker
        ws[1].kill()
        r = c.post("/register_model", json={"model": "x", "data_proxy_addrs": [ws[0].url, ws[1].url]}, headers=ADM)
        assert r.status_code == 502
        res = {d["worker_addr"]: d for d in r.json()["details"]}
        assert res[ws[0].url]["ok"] is True and res[ws[1].url]["ok"] is False
        assert "x" not in c.get("/models", headers=ADM).json()["models"]


async def _rollout(c, base, sessions, log, cycled):
    """One agent: sessions one after another, each a few streamed turns,
    a reward and an export. Some turns wait for a trainer cycle (GATED maps
    the turn's index to the cycle), so every version serves some turns however
    the machine times the load: a cycle never finds the turns it needs used up."""
    for s in range(sessions):
        async with c.post(base + "/rl/start_session", json={"task_id": "t"}, headers=ADM) as r:
            assert r.status == 201, await r.text()
            started = await r.json()
        sess = started["sessions"][0]
        owner = sess["session_id"].split("-")[1]
        turns = 3
        for turn in range(turns):
            gate = GATED.get(s * turns + turn)
            if gate is not None:
                await cycled[gate].wait()
            path = "/chat/completions" if turn % 2 else "/v1/chat/completions"
            body = chat_body(stream=True, max_tokens=6)
            async with c.post(base + path, json=body, headers=bearer(sess["session_api_key"])) as resp:
                assert resp.status == 200, await resp.text()
                tag = int(resp.headers["x-weight-version"])
                chunks = [json.loads(line[6:]) async for line in resp.content if line.startswith(b"data: {")]
            assert len(chunks) == 7  # six tokens and the final chunk: nothing lost
            assert {ch["worker_id"] for ch in chunks} == {owner}  # pinned
            assert {ch["weight_version"] for ch in chunks} == {tag}  # tagged with what served it
            log.append(tag)
        async with c.post(base + "/rl/set_reward", json={"reward": 1.0}, headers=bearer(sess["session_api_key"])) as r:
            assert r.status == 200 and (await r.json())["interaction_count"] == turns
        async with c.post(base + "/export_trajectories",
                          json={"session_ids": [sess["session_id"]], "group_id": started["group_id"]},
                          headers=ADM) as r:
            assert r.status == 200
            got = (await r.json())["interactions"][sess["session_id"]]
        assert got["worker_id"] == owner and got["interactions"] == turns and got["rewarded"] is True


# an agent's turn index (over its two sessions) -> the trainer cycle it waits for
GATED = {2: 0, 4: 1, 5: 2}


async def _trainer(c, base, log, n_workers, at_turns, cycled):
    """Pause, push a new version, continue: each time the rollouts have
    done so many turns and at least one turn ran on the current version, so
    every cycle happens while they run and no version goes unserved."""
    for cycle, turns in enumerate(at_turns):
        version = cycle + 2
        while len(log) < turns or (version - 1) not in log:
            await asyncio.sleep(0.01)
        for path, body in (("/pause_generation", None), ("/set_version", {"version": version}),
                           ("/continue_generation", None)):
            async with c.post(base + path, json=body, headers=ADM) as r:
                doc = await r.json()
                assert r.status == 200 and doc["ok"] is True, doc
                assert len(doc["results"]) == n_workers
        async with c.get(base + "/get_version", headers=ADM) as r:
            assert (await r.json())["fleet_version"] == version
        cycled[cycle].set()


def test_full_rl_sequence_with_200_streaming_rollouts(procs):
    """register workers; 200 agents (aiohttp) start sessions and stream
    pinned chats, set rewards and export, while the trainer pauses, sets
    versions and continues: no request fails, every turn stays on its
    session's worker, every response carries the version of the worker that
    served it."""
    ws, gw, ids = areal_fleet(procs, 4)
    agents, sessions, at_turns = 200, 2, (150, 450, 750)  # 1200 turns in all
    cycles = len(at_turns)

    async def main():
        conn = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as c:
            async with c.post(gw.base + "/set_version", json={"version": 1}, headers=ADM) as r:
                assert r.status == 200
            log, cycled = [], [asyncio.Event() for _ in at_turns]
            await asyncio.gather(_trainer(c, gw.base, log, len(ws), at_turns, cycled),
                                 *[_rollout(c, gw.base, sessions, log, cycled) for _ in range(agents)])
            return log

    log = asyncio.run(main())
    print("turns by version", {v: log.count(v) for v in sorted(set(log))})
    assert len(log) == agents * sessions * 3
    assert set(log) == set(range(1, 2 + cycles))  # the rollouts ran through every version
    assert all(w.stats()["version"] == 1 + cycles and w.stats()["paused"] == 0 for w in ws)


def test_api_key_refuses_unknown_bearers_like_areal(procs):
    """With --api-key, a bearer that is neither that key, the admin key nor a
    session's key gets 401, as AReaL's gateway answers; sessions still pass."""
    ws, gw, ids = areal_fleet(procs, 2, "--api-key", "internal")
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        sess = c.post("/rl/start_session", json={"task_id": "t"}, headers=ADM).json()["sessions"][0]
        assert c.post("/chat/completions", json=chat_body(max_tokens=1), headers=bearer("stranger")).status_code == 401
        assert c.post("/chat/completions", json=chat_body(max_tokens=1)).status_code == 401
        r = c.post("/chat/completions", json=chat_body(max_tokens=1), headers=bearer(sess["session_api_key"]))
        assert r.status_code == 200 and r.json()["worker_id"] == sess["session_id"].split("-")[1]
        assert c.post("/chat/completions", json=chat_body(max_tokens=1), headers=ADM).status_code == 200
        assert c.post("/chat/completions", json=chat_body(max_tokens=1), headers=bearer("internal")).status_code == 200
