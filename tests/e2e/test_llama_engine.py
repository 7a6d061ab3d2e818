"""Through infergate to a real inference engine: llama.cpp (node-llama-cpp,
CPU build) serving a tiny random-weight GGUF model the test writes itself
(tools/llama-server). The output is gibberish; the engine, its KV cache and
prompt reuse, its streaming and its abort on disconnect are real."""
import os
import random
import socket
import subprocess

import httpx
import pytest

from conftest import sse_events, wait_for

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SERVER = os.path.join(ROOT, "tools", "llama-server")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    subprocess.run(["/usr/bin/python3", os.path.join(SERVER, "tiny_gguf.py"), str(path)], check=True)
    return str(path)


@pytest.fixture
def engines(gguf):
    started = []

    def start(n, slots=2):
        urls = []
        for i in range(n):
            p = subprocess.Popen(["node", os.path.join(SERVER, "server.mjs"), "--model", gguf, "--port", "0",
                                  "--id", f"e{i}", "--slots", str(slots)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started.append(p)
            line = p.stdout.readline()
            assert line.startswith("READY port="), (line, p.stderr.read() if p.poll() is not None else "")
            urls.append(f"http://127.0.0.1:{int(line.split('=')[1])}")
        return urls
    yield start
    for p in started:
        p.terminate()
        p.wait(10)
        p.stdout.close()
        p.stderr.close()


def stats(url):
    return httpx.get(url + "/stats").json()


def test_streams_from_a_real_engine(procs, engines):
    urls = engines(2)
    gw = procs.gateway(urls)
    assert [m["id"] for m in httpx.get(gw.base + "/v1/models").json()["data"]] == ["tiny"]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 12,
            "stream": True}
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    import json
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] >= 1 and chunks[-1]["choices"][0]["finish_reason"]
    r = httpx.post(gw.base + "/v1/completions", json={"model": "tiny", "prompt": "the a of", "max_tokens": 4},
                   timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > 1
    assert sum(stats(u)["completed"] for u in urls) == 2


def test_a_client_that_leaves_aborts_the_generation(procs, engines):
    (url,) = engines(1)
    gw = procs.gateway([url])
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 4096, "stream": True}
    s = socket.create_connection(("127.0.0.1", gw.port))
    data = httpx.Request("POST", gw.base + "/v1/completions", json=body)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(data.content)).encode() + b"\r\n\r\n" + data.content)
    got = b""
    while b"data: " not in got:
        got += s.recv(65536)
    s.close()  # mid-stream: the gateway closes its worker connection, the engine stops
    assert wait_for(lambda: stats(url)["aborted"] == 1, 20), stats(url)
    assert stats(url)["completed"] == 0


def conversation_share(gw, urls, sessions, turns, rnd):
    """Sessions' turns interleaved; the engines' own count of prompt tokens they reused."""
    words = ["the", "a", "of", "and", "to", "is", "in", "it", "you", "that"]
    prefixes = [f"session {k}" for k in range(sessions)]
    history = [[] for _ in range(sessions)]
    with httpx.Client(base_url=gw.base, timeout=60) as c:
        for t in range(turns):
            for k in range(sessions):
                turn = " ".join(rnd.choice(words) for _ in range(60))
                history[k].append({"role": "user", "content": f"turn {t}: {turn}"})
                msgs = [{"role": "system", "content": prefixes[k]}] + history[k]
                r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": msgs, "max_tokens": 2})
                assert r.status_code == 200, r.text
                history[k].append(r.json()["choices"][0]["message"])
    st = [stats(u) for u in urls]
    return sum(s["cached_tokens"] for s in st) / sum(s["prompt_tokens"] for s in st)


def test_cache_aware_raises_the_engines_own_cached_share(procs, engines):
    # 3 conversations over 2 engines of 3 cache slots (so however new
    # conversations are placed, and with nothing in flight they are placed at
    # random, none is evicted). round robin moves every conversation to the
    # other engine each turn, which holds it as of two turns back; cache_aware
    # keeps each on one engine, which holds its last turn
    shares = {}
    for policy in ("round_robin", "cache_aware"):
        urls = engines(2, slots=3)
        gw = procs.gateway(urls, "--policy", policy, threads=1)
        shares[policy] = conversation_share(gw, urls, 3, 6, random.Random(7))
        gw.stop()
    assert shares["cache_aware"] > shares["round_robin"] + 0.15, shares
