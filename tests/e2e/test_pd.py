"""Prefill/decode disaggregation in SGLang's protocol (issue 17), through
real clients (httpx, requests) against a real gateway and the mock's PD
roles, which check what an SGLang engine checks: no generation request
without well-formed bootstrap fields, a prefill serves only its own
bootstrap address, a decode generates only once the prefill named in the
request has the room, and fails like a KV-transfer timeout otherwise. A
pair that went wrong must leave neither half waiting (smg#831)."""
import json
import threading

import httpx
import pytest
import requests

from conftest import chat_body, free_port, wait_for


def pd_fleet(procs, n_prefill=1, n_decode=1, prefill_args=(), decode_args=(), kv_timeout_ms=3000):
    prefills = []
    for i in range(n_prefill):
        bp = free_port()
        p = procs.worker("--role", "prefill", "--bootstrap-port", bp, *prefill_args, worker_id=f"p{i}")
        p.bootstrap_port = bp
        prefills.append(p)
    decodes = [procs.worker("--role", "decode", "--kv-timeout-ms", kv_timeout_ms, *decode_args, worker_id=f"d{i}")
               for i in range(n_decode)]
    return prefills, decodes


def pd_args(prefills, decodes):
    a = ["--pd-disaggregation"]
    for p in prefills:
        a += ["--prefill", p.url, p.bootstrap_port]
    return a + ["--decode", *[d.url for d in decodes]]


def pd_gateway(procs, prefills, decodes, *extra):
    return procs.gateway([], *pd_args(prefills, decodes), "--health-check-interval-secs", "0", *extra)


class Served:
    """Generation requests each worker took from now on."""

    def __init__(self, *workers):
        self.base = {w: w.stats()["generations"] for w in workers}

    def __call__(self, w):
        return w.stats()["generations"] - self.base[w]


def metric(gw, name):
    for line in httpx.get(gw.base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def drained(*workers):
    """No half of any pair is left running on these workers."""
    return wait_for(lambda: all(w.stats()["inflight"] == 0 for w in workers), 10)


def sse_events(resp):
    out = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            out.append(line[6:].strip())
    return out


def test_every_endpoint_streaming_and_not(procs):
    (p,), (d,) = pd_fleet(procs)
    gw = pd_gateway(procs, [p], [d])
    served = Served(p, d)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=4))
        assert r.status_code == 200, r.text
        assert r.json()["worker_id"] == "d0" and r.json()["choices"][0]["message"]["content"]
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=3, stream=True)) as s:
            assert s.status_code == 200
            ev = sse_events(s)
        assert ev[-1] == "[DONE]" and len(ev) >= 4
        assert all(json.loads(e)["worker_id"] == "d0" for e in ev[:-1])
        r = c.post("/v1/completions", json={"model": "mock-model", "prompt": "once upon", "max_tokens": 3})
        assert r.status_code == 200, r.text
        with c.stream("POST", "/v1/completions",
                      json={"model": "mock-model", "prompt": "a", "max_tokens": 2, "stream": True}) as s:
            assert sse_events(s)[-1] == "[DONE]"
    r = requests.post(gw.base + "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 3}},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["worker_id"] == "d0"
    # each request went to both halves, and the decode's answer is the client's
    assert served(p) == 5 and served(d) == 5
    assert metric(gw, "infergate_pd_requests_total") == 5
    # the prefill leg runs beside the decode and may end just after the client has its answer
    assert wait_for(lambda: metric(gw, "smg_pd_prefill_duration_seconds_count") == 5, 5)
    assert metric(gw, "smg_pd_ttft_seconds_count") == 5
    drained(p, d)


def test_batches_get_one_room_per_prompt(procs):
    (p,), (d,) = pd_fleet(procs)
    gw = pd_gateway(procs, [p], [d])
    served = Served(p, d)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for body in ({"text": ["a", "b", "c"], "sampling_params": {"max_new_tokens": 2}},
                     {"input_ids": [[1, 2, 3], [4, 5]], "sampling_params": {"max_new_tokens": 2}}):
            r = c.post("/generate", json=body)
            assert r.status_code == 200, (body, r.text)
        r = c.post("/v1/completions", json={"model": "mock-model", "prompt": ["x", "y"], "max_tokens": 2})
        assert r.status_code == 200, r.text
        # a batch past what one pair takes is refused clearly, and nothing is sent
        r = c.post("/generate", json={"text": ["a"] * 4097, "sampling_params": {"max_new_tokens": 2}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_large", r.text
    assert metric(gw, "smg_pd_bootstrap_failures_total") == 1
    assert served(p) == 3 and served(d) == 3


def test_pairs_spread_over_both_pools_with_their_own_policies(procs):
    prefills, decodes = pd_fleet(procs, 2, 2)
    gw = pd_gateway(procs, prefills, decodes, "--prefill-policy", "round_robin", "--decode-policy", "least_load")
    served = Served(*prefills, *decodes)
    results = []

    def client():
        with httpx.Client(base_url=gw.base, timeout=30) as c:
            for i in range(10):
                body = chat_body(max_tokens=2, stream=i % 2 == 0)
                r = c.post("/v1/chat/completions", json=body)
                results.append((r.status_code, r.text))
    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(results) == 40 and all(s == 200 for s, _ in results), results[:3]
    assert all(served(w) > 0 for w in prefills + decodes)
    assert sum(served(p) for p in prefills) == 40 == sum(served(d) for d in decodes)
    assert metric(gw, 'smg_worker_pool_size{worker_type="prefill"}') == 2
    assert metric(gw, 'smg_worker_pool_size{worker_type="decode"}') == 2
    assert metric(gw, 'smg_worker_pool_size{worker_type="regular"}') == 0
    listed = httpx.get(gw.base + "/workers", timeout=10).json()["workers"]
    roles = {w["url"]: (w["worker_type"], w["bootstrap_port"]) for w in listed}
    assert roles == {**{p.url: ("prefill", p.bootstrap_port) for p in prefills},
                     **{d.url: ("decode", None) for d in decodes}}
    drained(*prefills, *decodes)


def test_a_prefill_that_refuses_the_bootstrap_leaves_no_decode_waiting(procs):
    (p,), (d,) = pd_fleet(procs, kv_timeout_ms=30000)
    p.bootstrap_port = free_port()  # registered with a port that is not its own: it refuses, as SGLang does
    gw = pd_gateway(procs, [p], [d])
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "prefill_bad_request"
    # the decode was told at once, not after its 30 s KV timeout
    assert drained(d)
    assert metric(gw, "infergate_pd_prefill_failures_total") == 1


def test_a_prefill_killed_mid_run_is_retried_on_the_other(procs):
    prefills, (d,) = pd_fleet(procs, 2, 1, prefill_args=("--ttft-ms", "150"))
    gw = pd_gateway(procs, prefills, [d], "--retry-budget-ratio", "1", "--retry-max-retries", "3",
                    "--policy", "round_robin")
    results, stop = [], threading.Event()

    def client():
        with httpx.Client(base_url=gw.base, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
                results.append((r.status_code, r.text))
    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    assert wait_for(lambda: len(results) >= 8, 30)
    prefills[1].kill()  # legs on it are cut mid-prefill
    n_at_kill = len(results)
    assert wait_for(lambda: len(results) >= n_at_kill + 16, 30)
    stop.set()
    for t in ts:
        t.join(30)
    bad = [(s, t) for s, t in results if s != 200]
    assert not bad, bad[:3]
    assert metric(gw, "infergate_pd_prefill_failures_total") >= 1
    assert metric(gw, "infergate_pd_pair_retries_total") >= 1
    assert drained(d, prefills[0])  # no orphaned decode


def test_a_decode_killed_mid_stream_cuts_that_stream_only(procs):
    (p,), decodes = pd_fleet(procs, 1, 2, decode_args=("--token-interval-ms", "50"))
    gw = pd_gateway(procs, [p], decodes, "--policy", "round_robin")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=200, stream=True)) as s:
            assert s.status_code == 200
            lines = s.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            victim = next(w for w in decodes if w.worker_id == json.loads(first[6:])["worker_id"])
            victim.kill()
            with pytest.raises(httpx.HTTPError):
                for line in lines:
                    assert line.strip() != "data: [DONE]"
        # the gateway stays up; the next requests go to the live decode (retried off the dead one)
        for _ in range(4):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert r.status_code == 200, r.text
            assert r.json()["worker_id"] != victim.worker_id
    assert drained(p)


def test_an_open_breaker_takes_a_prefill_out_of_prefill_choice_only(procs):
    prefills, decodes = pd_fleet(procs, 2, 1)
    gw = pd_gateway(procs, prefills, decodes, "--cb-failure-threshold", "2", "--health-check-interval-secs", "0",
                    "--retry-max-retries", "2", "--retry-budget-ratio", "1", "--policy", "round_robin")
    prefills[1].kill()
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for _ in range(6):
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert r.status_code == 200, r.text

        def state():
            return {w["url"]: w for w in c.get("/workers").json()["workers"]}
        st = state()
        assert st[prefills[1].url]["breaker"] == "open"
        assert st[prefills[0].url]["breaker"] == "closed" and st[decodes[0].url]["breaker"] == "closed"
        tried = st[prefills[1].url]["connect_failures"]
        for _ in range(10):
            assert c.post("/v1/chat/completions", json=chat_body(max_tokens=2)).status_code == 200
        # an open breaker dispatches nothing more to it (sglang#31206)
        assert state()[prefills[1].url]["connect_failures"] == tried
    assert prefills[0].stats()["requests"] >= 16  # (and its discovery)


def test_runtime_registration_by_role(procs):
    (p,), (d,) = pd_fleet(procs)
    gw = procs.gateway([], "--pd-disaggregation")
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 503
        for body, code in (({"url": p.url, "worker_type": "encode"}, "invalid_worker_type"),
                           ({"url": d.url, "worker_type": "decode", "bootstrap_port": 9000}, "invalid_bootstrap_port"),
                           ({"url": p.url, "worker_type": "prefill", "bootstrap_port": 70000},
                            "invalid_bootstrap_port"),
                           ({"url": p.url, "worker_type": "prefill", "bootstrap_port": "x"}, "invalid_bootstrap_port")):
            r = c.post("/workers", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
        r = c.post("/workers", json={"url": p.url, "worker_type": "prefill", "bootstrap_port": p.bootstrap_port})
        assert r.status_code == 202, r.text
        assert r.json()["worker"]["worker_type"] == "prefill"
        # a prefill alone serves nothing: the decode half is missing
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 503
        r = c.post("/workers", json={"url": d.url, "worker_type": "decode"})
        assert r.status_code == 202, r.text
        r = c.post("/workers", json={"url": d.url, "worker_type": "prefill"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "worker_in_other_role", r.text
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
        assert r.status_code == 200 and r.json()["worker_id"] == "d0", r.text
        listed = {w["url"]: w for w in c.get("/workers").json()["workers"]}
        assert listed[p.url]["worker_type"] == "prefill" and listed[p.url]["bootstrap_port"] == p.bootstrap_port
        assert listed[d.url]["worker_type"] == "decode"
        # sgl's older /add_worker?url= registers regular workers; the JSON body names the role
        dec_id = listed[d.url]["id"]
        assert c.delete(f"/workers/{dec_id}").status_code == 200
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 503


def test_a_full_decode_pool_queues_instead_of_failing(procs):
    (p,), (d,) = pd_fleet(procs, decode_args=("--token-interval-ms", "30"))
    gw = pd_gateway(procs, [p], [d], "--worker-max-inflight", "1")
    results = []

    def one():
        r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=6), timeout=60)
        results.append(r.status_code)
    ts = [threading.Thread(target=one) for _ in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert results == [200] * 5
    assert d.stats()["max_inflight_seen"] == 1


def test_client_abort_cancels_both_halves(procs):
    (p,), (d,) = pd_fleet(procs, prefill_args=("--ttft-ms", "5000"), decode_args=("--token-interval-ms", "50"))
    gw = pd_gateway(procs, [p], [d])
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(max_tokens=500, stream=True)) as s:
            lines = s.iter_lines()  # kept: a dropped iterator closes the stream
            next(line for line in lines if line.startswith("data: "))
            st = p.stats()
            assert st["inflight"] == 1, st  # the prefill still answers
    # the client left: both halves are told at once (the prefill has 5 s to go, the decode 25 s)
    assert drained(p, d)
    assert p.stats()["aborted"] >= 1 and d.stats()["aborted"] >= 1


def test_fleet_control_reaches_both_pools(procs):
    prefills, decodes = pd_fleet(procs, 1, 2)
    gw = pd_gateway(procs, prefills, decodes)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        assert c.post("/pause_generation", json={}).status_code == 200
        assert all(w.stats()["paused"] for w in prefills + decodes)
        assert c.post("/continue_generation", json={}).status_code == 200
        assert not any(w.stats()["paused"] for w in prefills + decodes)
        assert c.post("/set_version", json={"version": 7}).status_code == 200
        assert all(w.stats()["version"] == 7 for w in prefills + decodes)
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=2)).status_code == 200


def test_models_route_to_the_pools_that_serve_them(procs):
    (p,), (d,) = pd_fleet(procs)
    regular = procs.worker(worker_id="r0", model="other-model")
    gw = procs.gateway([regular], *pd_args([p], [d]), "--health-check-interval-secs", "0")
    served = Served(regular, p)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
        assert r.status_code == 200 and r.json()["worker_id"] == "d0", r.text
        r = c.post("/v1/chat/completions", json=dict(chat_body(max_tokens=2), model="other-model"))
        assert r.status_code == 200 and r.json()["worker_id"] == "r0", r.text
        r = c.post("/v1/chat/completions", json=dict(chat_body(max_tokens=2), model="nobody-serves-this"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
        # embeddings are not disaggregated: the regular fleet takes them
        r = c.post("/v1/embeddings", json={"model": "other-model", "input": "x"})
        assert r.status_code == 200, r.text
    assert served(regular) == 2 and served(p) == 1


def test_pd_flags_are_checked_at_start(procs):
    import subprocess
    from conftest import GATEWAY
    for argv, say in ((["--prefill", "http://127.0.0.1:9"], "need --pd-disaggregation"),
                      (["--pd-disaggregation", "--prefill", "http://127.0.0.1:9", "abc"], "bootstrap port"),
                      (["--pd-disaggregation", "--prefill-policy", "nope"], "unknown policy")):
        out = subprocess.run([GATEWAY, "--port", "0", *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and say in out.stderr, (argv, out.stderr)
    # sgl's "none" for no bootstrap port
    (d,) = pd_fleet(procs, 0, 1)[1]
    gw = procs.gateway([], "--pd-disaggregation", "--prefill", "http://127.0.0.1:9", "none", "--decode", d.url)
    listed = httpx.get(gw.base + "/workers", timeout=10).json()["workers"]
    assert {w["worker_type"]: w["bootstrap_port"] for w in listed} == {"prefill": None, "decode": None}


# ---- vLLM's protocol (NIXL, as its toy_proxy_server and vllm-project/router run it) ----

def vllm_fleet(procs, n_prefill=1, n_decode=1, prefill_args=()):
    return pd_fleet(procs, n_prefill, n_decode, prefill_args=("--pd-protocol", "vllm", *prefill_args),
                    decode_args=("--pd-protocol", "vllm"))


def test_vllm_prefill_first_then_the_decode_with_its_kv_transfer_params(procs):
    (p,), (d,) = vllm_fleet(procs)
    gw = pd_gateway(procs, [p], [d], "--pd-protocol", "vllm")
    served = Served(p, d)
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        # the prefill refuses anything but one token, no stream, do_remote_decode; the decode anything
        # without the prefill's kv_transfer_params, whose block it pulls from that prefill
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=5, max_completion_tokens=5, min_tokens=2))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["worker_id"] == "d0" and body["usage"]["completion_tokens"] == 5
        assert "kv_transfer_params" not in body  # the prefill's answer is not the client's
        with c.stream("POST", "/v1/chat/completions",
                      json=chat_body(max_tokens=3, stream=True, stream_options={"include_usage": True})) as s:
            assert s.status_code == 200
            ev = sse_events(s)
        assert ev[-1] == "[DONE]" and all(json.loads(e)["worker_id"] == "d0" for e in ev[:-1])
        r = requests.post(gw.base + "/v1/completions", json={"model": "mock-model", "prompt": "x", "max_tokens": 2},
                          timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["text"], r.text
    assert served(p) == 3 and served(d) == 3
    assert metric(gw, "smg_pd_kv_transfer_failures_total") == 0
    assert metric(gw, "smg_pd_ttft_seconds_count") == 3
    drained(p, d)


def test_vllm_prefill_failures_are_retried_and_refusals_said(procs):
    prefills, (d,) = vllm_fleet(procs, 2, 1, prefill_args=("--ttft-ms", "100"))
    gw = pd_gateway(procs, prefills, [d], "--pd-protocol", "vllm", "--policy", "round_robin",
                    "--retry-budget-ratio", "1")
    prefills[1].kill()
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        for _ in range(4):  # half of them meet the dead prefill first
            r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert r.status_code == 200, r.text
        assert metric(gw, "infergate_pd_pair_retries_total") >= 1
        # a prefill's refusal reaches the client with the prefill's own words
        r = c.post("/v1/chat/completions", json=chat_body(max_tokens=2), headers={"x-mock-status": "422"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "prefill_bad_request", r.text
        assert "status requested" in r.json()["error"]["message"]
    assert drained(d, prefills[0])


def test_vllm_a_prefill_without_kv_transfer_params_leaves_the_decode_the_whole_request(procs):
    plain = procs.worker(worker_id="plain")  # not a NIXL prefill: answers without kv_transfer_params
    plain.bootstrap_port = None
    (d,) = vllm_fleet(procs, 0, 1)[1]
    gw = procs.gateway([], "--pd-disaggregation", "--pd-protocol", "vllm", "--prefill", plain.url,
                       "--decode", d.url, "--health-check-interval-secs", "0")
    r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
    # the decode is sent the body as it is; this one serves only prefilled requests and says so
    assert r.status_code == 400 and "kv_transfer_params" in r.text, r.text
    assert metric(gw, "smg_pd_kv_transfer_failures_total") == 1


def test_return_logprob_merges_the_prefills_input_logprobs(procs):
    # the prefill answers after the decode has finished (300 ms of prefill): the decode's answer is
    # held until the prefill's logprobs can go in front of its own, streamed or not
    (p,), (d,) = pd_fleet(procs, prefill_args=("--ttft-ms", "300"))
    gw = pd_gateway(procs, [p], [d])
    merged = [[None, 1, None], [-0.5, 2, None], [-0.25, 3, None], [-0.125, 4, None]]
    body = {"text": "hello", "sampling_params": {"max_new_tokens": 3}, "return_logprob": True}
    with httpx.Client(base_url=gw.base, timeout=30) as c:
        r = c.post("/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["meta_info"]["input_token_logprobs"] == merged
        assert r.json()["worker_id"] == "d0"
        with c.stream("POST", "/generate", json=dict(body, stream=True)) as s:
            ev = sse_events(s)
        assert ev[-1] == "[DONE]" and len(ev) > 2
        assert all(json.loads(e)["meta_info"]["input_token_logprobs"] == merged for e in ev[:-1])
        # without return_logprob nothing is held or rewritten
        r = c.post("/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 3}})
        assert "input_token_logprobs" not in r.json()["meta_info"]
    # an HTTP/1.0 client gets the rewritten answer unframed, ended by the close
    import socket
    raw = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    s.sendall(b"POST /generate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(raw), raw))
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower(), head
    assert json.loads(payload)["meta_info"]["input_token_logprobs"] == merged
    drained(p, d)
