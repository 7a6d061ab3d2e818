"""Writes the seed corpus of the fuzz drivers (committed; rerun after adding
cases): requests from the framing test table, bodies, admin requests."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from test_framing import BAD, CHUNKED_BODY, CL, TE, req  # noqa: E402


def write(driver, name, data):
    d = os.path.join(HERE, "corpus", driver)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for name, data in BAD.items():
    write("fuzz_request", name, data)
write("fuzz_request", "good_length", req(CL))
write("fuzz_request", "good_chunked", req(TE, CHUNKED_BODY))
write("fuzz_request", "good_chunk_ext", req(TE, b'1b;a=b;c="d e"\r\n{"model":"m","messages":[]}\r\n0\r\n\r\n'))
write("fuzz_request", "good_get_http10", b"GET /health HTTP/1.0\r\n\r\n")
write("fuzz_request", "pipelined", req(CL) + req(CL))

bodies = {
    "chat": {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
             "stream": True, "max_tokens": 16, "user": "u1"},
    "prompt": {"model": "m", "prompt": "once upon a time " * 40},
    "input_ids": {"model": "m", "input_ids": list(range(200))},
    "text_input": {"text": "t", "input": ["a", "b"], "model": "m"},
    "nested": {"x": {"prompt": "no", "model": "no"}, "model": "yes", "messages": [[[[{}]]]]},
}
for name, b in bodies.items():
    write("fuzz_body_scan", name, json.dumps(b).encode())
write("fuzz_body_scan", "escapes", b'{"model":"m\\u0041\\n","messages":[{"content":"\\"q\\\\"}]}')
write("fuzz_body_scan", "deep", b"[" * 600 + b"]" * 600)
write("fuzz_body_scan", "truncated", b'{"model":"m","messages":[{"role":')

admin = {
    "add": (1, "/workers", {"url": "http://127.0.0.1:9000", "model_id": "m", "max_inflight": 4}),
    "list": (0, "/workers", None),
    "delete": (2, "/workers/w3", None),
    "add_query": (1, "/add_worker?url=http%3A%2F%2Fh%3A1&max_inflight=2", None),
    "register": (1, "/register", {"worker_addr": "http://h:1"}),
    "route": (1, "/route", {"api_key": "k", "model": "m"}),
    "session": (1, "/register_session", {"session_api_key": "k", "session_id": "s", "worker_addr": "http://h:1"}),
    "model": (1, "/register_model", {"model": "p", "data_proxy_addrs": ["http://h:1", "http://h:2"]}),
    "export": (1, "/export_trajectories", {"model": "s1", "discount": 0.9}),
    "broadcast": (1, "/set_version/w2", {"version": 7, "model": "m"}),
    "callback": (1, "/callback/pause_generation/w1", None),
    "config": (1, "/x", {"policy": "cache_aware", "worker_urls": ["http://h:1"], "cache_threshold": 0.5,
                         "balance_rel_threshold": 1.2, "max_tree_size": 65536}),
}
for name, (m, target, body) in admin.items():
    write("fuzz_admin", name, bytes([m]) + target.encode() + b"\n" + (json.dumps(body).encode() if body else b""))
# fuzz_client_request: a read-size byte, then what a client sends on one connection
for name, data in BAD.items():
    write("fuzz_client_request", name, bytes([0]) + data)
for name, data in {"good_length": req(CL), "good_chunked": req(TE, CHUNKED_BODY),
                   "pipelined": req(CL) + req(TE, CHUNKED_BODY) + req(CL),
                   "get_http10": b"GET /health HTTP/1.0\r\n\r\n",
                   "tiny_chunks": req(TE, b"".join(b"1;e=v\r\n" + bytes([c]) + b"\r\n" for c in b'{"model":"m"}')
                                      + b"0\r\n\r\n")}.items():
    for step in (0, 1, 7, 100):
        write("fuzz_client_request", f"{name}_{step}", bytes([step]) + data)
write("fuzz_client_request", "expect_twice", bytes([3]) + b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
      b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
write("fuzz_client_request", "two_auth", bytes([0]) + b"POST / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\n"
      b"Authorization: Bearer b\r\nContent-Length: 2\r\n\r\n{}")

# fuzz_response: a flags byte (bit 0 HEAD, bits 1-7 the read size), then what a worker sends
from test_upstream_faults import CUT, FAULTS  # noqa: E402
from test_response_framing import ANSWERS  # noqa: E402
for table in (FAULTS, CUT, ANSWERS):
    for name, data in table.items():
        write("fuzz_response", name, bytes([0]) + data)
        write("fuzz_response", name + "_bytewise", bytes([1 << 1]) + data)
ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
write("fuzz_response", "pipelined", bytes([3 << 1]) + ok + ANSWERS["trailer"] + ok)
write("fuzz_response", "head_request", bytes([1]) + b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n" + ok)
write("fuzz_response", "informational", bytes([0]) + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\n"
      b"link: </a>\r\n\r\n" + ok)
write("fuzz_response", "close_delimited", bytes([5 << 1]) + b"HTTP/1.0 200 OK\r\n\r\nuntil close")
write("fuzz_response", "sse", bytes([7 << 1]) + b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
      b"transfer-encoding: chunked\r\n\r\n" + b"".join(b"%x\r\ndata: {\"t\":%d}\n\n\r\n" % (len(b"data: {\"t\":%d}\n\n" % i), i)
                                                       for i in range(20)) + b"0\r\n\r\n")
write("fuzz_response", "chunk_ext", bytes([0]) + b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
      b"2;a=b;c=\"d \\\" e\"\r\n{}\r\n0;z\r\nx-t: 1\r\n\r\n")
print("seeds written")
