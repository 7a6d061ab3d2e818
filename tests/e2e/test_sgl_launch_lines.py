"""Real sgl-model-gateway launch lines (sgl_launch_lines.py) with the binary
renamed: each starts and serves a chat through its workers, or is refused
with the feature named (never "unknown option"). A line with no workers is
an RL job's router: it serves once an engine registers."""
import re
import shlex
import subprocess

import httpx
import pytest

from conftest import GATEWAY, chat_body, free_port, wait_for
from sgl_launch_lines import LAUNCH_LINES


def concrete(line, workers, bootstrap_port=None):
    """The line on this machine: the test's workers and free loopback ports."""
    subs = {"{W0}": workers[0].url, "{W1}": workers[1].url, "{W2}": workers[2].url,
            "{PORT}": str(free_port()), "{PROM}": str(free_port())}
    for k, v in subs.items():
        line = line.replace(k, v)
    argv = shlex.split(line)
    for i, a in enumerate(argv[:-1]):
        if a == "--host":
            argv[i + 1] = "127.0.0.1"
    out = []
    for i, a in enumerate(argv):  # --prefill URL [PORT]: the test prefill's bootstrap port
        if i > 1 and argv[i - 2] == "--prefill" and a.isdigit():
            continue
        out.append(a)
        if i > 0 and argv[i - 1] == "--prefill":
            out.append(str(bootstrap_port))
    return out


@pytest.mark.parametrize("source,line,expect", LAUNCH_LINES, ids=[s for s, _, _ in LAUNCH_LINES])
def test_a_real_launch_line(procs, source, line, expect):
    bp = None
    if "--pd-disaggregation" in line:  # a prefill and a decode in SGLang's protocol
        bp = free_port()
        workers = [procs.worker("--role", "prefill", "--bootstrap-port", bp, worker_id="l0"),
                   procs.worker("--role", "decode", worker_id="l1"), procs.worker(worker_id="l2")]
    else:
        workers = [procs.worker(worker_id=f"l{i}") for i in range(3)]
    argv = concrete(line, workers, bp)
    if "--port" not in argv:
        argv += ["--port", "0"]
    if expect.startswith("refused: "):
        out = subprocess.run([GATEWAY, *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, (source, out.stderr)
        assert "unknown option" not in out.stderr and expect[len("refused: "):] in out.stderr, out.stderr
        return
    gw = procs.gateway([], *argv)
    named = [w for w in workers if w.url in argv]
    if not named:  # the router of an RL job: its engines register themselves
        r = httpx.post(gw.base + "/workers", json={"url": workers[0].url, "worker_type": "regular"}, timeout=30)
        assert r.status_code == 202, r.text
        named = [workers[0]]
    assert wait_for(lambda: httpx.get(gw.base + "/readiness").json()["routable_workers"] == len(named), 15)
    if bp:  # the client's answer is the decode's
        named = [workers[1]]
    got = set()
    for _ in range(3 * len(named)):
        r = httpx.post(gw.base + "/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
        assert r.status_code == 200, r.text
        got.add(r.json()["worker_id"])
    assert got <= {w.worker_id for w in named}
    if "--prometheus-port" in argv:
        prom = argv[argv.index("--prometheus-port") + 1]
        text = httpx.get(f"http://127.0.0.1:{prom}/metrics", timeout=10).text
        assert re.search(r"^smg_http_requests_total\{", text, re.M)


def test_the_lines_cover_both_outcomes():
    kinds = {e.split(":")[0] for _, _, e in LAUNCH_LINES}
    assert kinds == {"serves", "refused"} and len(LAUNCH_LINES) >= 13
