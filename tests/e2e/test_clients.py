"""Real clients through a real gateway to real mock workers, streamed and not."""
import asyncio
import json
import os
import subprocess

import aiohttp
import httpx
import requests

from conftest import chat_body, sse_events

TOKENS20 = "".join(f"tok{i} " for i in range(20))


def _check_chat(body, n):
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "".join(f"tok{i} " for i in range(n))
    assert body["worker_id"] in ("w1", "w2")


def test_httpx_plain_and_stream(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2])
    with httpx.Client(base_url=gw.base, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=7))
        assert r.status_code == 200
        assert r.headers["x-request-id"]
        assert r.headers["x-worker-id"] in ("w1", "w2")
        _check_chat(r.json(), 7)
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=20, stream=True)) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            events = sse_events(s.iter_lines())
        assert events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
        assert text == TOKENS20


def test_stream_arrives_token_by_token(procs):
    """The first token reaches the client while the worker is still generating."""
    w = procs.worker("--token-interval-ms", "50", worker_id="w1")
    gw = procs.gateway([w])
    with httpx.Client(base_url=gw.base, timeout=20) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=20, stream=True)) as s:
            lines = s.iter_lines()
            first = next(l for l in lines if l.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "tok0 "
            # the worker has not finished: 19 tokens are still to come
            assert w.stats()["inflight"] == 1
            rest = sse_events(lines)
        assert len(rest) == 19 + 1 + 1  # tokens, the final chunk, [DONE]
    assert w.stats()["completed"] >= 1


def test_aiohttp_concurrent_stream_and_plain(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2])

    async def main():
        async with aiohttp.ClientSession(gw.base) as s:
            async def plain(i):
                async with s.post("/v1/chat/completions", json=chat_body(max_tokens=3)) as r:
                    assert r.status == 200
                    return (await r.json())["worker_id"]

            async def stream(i):
                async with s.post("/v1/chat/completions", json=chat_body(max_tokens=20, stream=True)) as r:
                    assert r.status == 200
                    events = []
                    async for line in r.content:
                        events += sse_events([line])
                    return events

            ids = await asyncio.gather(*[plain(i) for i in range(50)])
            streams = await asyncio.gather(*[stream(i) for i in range(20)])
            return ids, streams

    ids, streams = asyncio.run(main())
    assert set(ids) == {"w1", "w2"}
    for events in streams:
        assert events[-1] == "[DONE]" and len(events) == 22


def test_requests_all_endpoints(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w])
    s = requests.Session()
    r = s.post(gw.base + "/v1/completions", json={"model": "mock-model", "prompt": "x", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "tok0 tok1 tok2 tok3 "
    r = s.post(gw.base + "/v1/embeddings", json={"model": "mock-model", "input": "x"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 8
    r = s.post(gw.base + "/generate", json={"text": "x", "sampling_params": {}, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["text"] == "tok0 tok1 "
    r = s.post(gw.base + "/generate", json={"text": "x", "stream": True, "max_tokens": 3}, stream=True)
    events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]" and json.loads(events[0])["text"] == "tok0 "
    r = s.post(gw.base + "/v1/chat/completions", json=chat_body(stream=True, max_tokens=5), stream=True)
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in sse_events(r.iter_lines())[:-1]) == "tok0 tok1 tok2 tok3 tok4 "
    r = s.get(gw.base + "/v1/models")
    assert [m["id"] for m in r.json()["data"]] == ["mock-model"]
    for p in ("/health", "/liveness", "/readiness"):
        assert s.get(gw.base + p).status_code == 200


def test_curl_stream_and_plain(procs):
    w = procs.worker(worker_id="w1")
    gw = procs.gateway([w])
    out = subprocess.run(
        ["curl", "-sS", "-N", "--fail-with-body", gw.base + "/v1/chat/completions",
         "-H", "content-type: application/json",
         "-d", json.dumps(chat_body(stream=True, max_tokens=20))],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    events = sse_events(out.stdout.splitlines())
    assert events[-1] == "[DONE]" and len(events) == 22
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-D", "-", gw.base + "/v1/chat/completions",
         "-H", "content-type: application/json", "-d", json.dumps(chat_body(max_tokens=3))],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert "x-request-id:" in head.lower()
    assert json.loads(body)["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "


def test_openai_node_sdk(procs):
    w1, w2 = procs.worker(worker_id="w1"), procs.worker(worker_id="w2")
    gw = procs.gateway([w1, w2], "--policy", "round_robin")
    script = os.path.join(os.path.dirname(__file__), "..", "node", "openai_client.mjs")
    out = subprocess.run(["node", script, gw.base + "/v1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["plain"] == "tok0 tok1 tok2 tok3 tok4 "
    assert "".join(res["stream"]) == TOKENS20 and len(res["stream"]) == 20
    assert res["completion"] == "tok0 tok1 tok2 "
    assert set(res["workers"]) == {"w1", "w2"}  # balanced per request (round robin)
    assert res["error"]["status"] == 404 and res["error"]["code"] == "model_not_found"


def test_openai_node_sdk_with_an_areal_session_key(procs):
    """An agent using the OpenAI SDK with its session key as the API key: every
    request of the session reaches the worker that holds it."""
    ws = [procs.worker("--admin-api-key", "adm", worker_id=f"w{i}") for i in range(3)]
    gw = procs.gateway(ws, "--admin-api-key", "adm")
    sessions = [httpx.post(gw.base + "/rl/start_session", json={"task_id": "t"},
                           headers={"authorization": "Bearer adm"}).json()["sessions"][0] for _ in range(3)]
    script = os.path.join(os.path.dirname(__file__), "..", "node", "openai_client.mjs")
    for s in sessions:
        out = subprocess.run(["node", script, gw.base + "/v1", s["session_api_key"]], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert res["workers"] == [s["session_id"].split("-")[1]]
        assert "".join(res["stream"]) == TOKENS20
