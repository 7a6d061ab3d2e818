"""AReaL router compatibility, the part that maps onto the worker registry:
/register, /unregister and /workers with AReaL's field names and auth."""
import httpx

from conftest import chat_body


def test_register_unregister_and_workers_like_areal_router(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1], "--admin-api-key", "adm")
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
