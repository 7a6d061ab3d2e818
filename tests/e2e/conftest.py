"""Real processes for the end-to-end tests: mock workers and the gateway,
each on an ephemeral 127.0.0.1 port, always stopped after the test."""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

BUILD = os.environ.get("IG_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
GATEWAY = os.path.join(BUILD, "infergate")
MOCK = os.path.join(BUILD, "infergate-mockworker")
SANITIZED = bool(os.environ.get("IG_SANITIZED"))
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "WARNING: ThreadSanitizer")


def _read_line(proc, prefix, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited early: {proc.stderr.read() if proc.stderr else ''}")
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise RuntimeError(f"{what} did not start")


class Worker:
    def __init__(self, *args, worker_id="w0", model="mock-model"):
        self.worker_id = worker_id
        cmd = [MOCK, "--port", "0", "--worker-id", worker_id, "--model", model, *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = int(_read_line(self.proc, "READY port=", "mock worker"))
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self):
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as r:
            return json.loads(r.read())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            f and f.close()


class Gateway:
    def __init__(self, workers, *args, threads=2):
        urls = [w.url if isinstance(w, Worker) else w for w in workers]
        cmd = [GATEWAY, "--port", "0", "--threads", str(threads), "--log-level", "warn",
               "--discovery-timeout-secs", "1"]
        if urls:
            cmd += ["--worker-urls", *urls]
        cmd += [str(a) for a in args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.base = _read_line(self.proc, "infergate listening on ", "gateway")
        self.port = int(self.base.rsplit(":", 1)[1])
        self.stderr = ""

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop, and return the exit code; a sanitizer report fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        for m in SAN_MARKERS:
            assert m not in self.stderr, self.stderr[-4000:]
        return self.proc.returncode


@pytest.fixture
def procs():
    """Factory for workers and gateways; all are stopped when the test ends."""
    started = []

    class Factory:
        def worker(self, *args, **kw):
            w = Worker(*args, **kw)
            started.append(w)
            return w

        def gateway(self, workers, *args, **kw):
            g = Gateway(workers, *args, **kw)
            started.append(g)
            return g

    yield Factory()
    errors = []
    for p in reversed(started):  # every one, even after a failure: no process outlives its test
        try:
            if isinstance(p, Gateway):
                if p.proc.poll() is None or not p.proc.stderr.closed:
                    code = p.stop()
                    if code != 0:
                        errors.append(f"gateway exited {code}: {p.stderr[-2000:]}")
            else:
                p.stop()
        except AssertionError as e:  # a sanitizer's report
            errors.append(str(e))
    assert not errors, errors


CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "hello"}]}


def chat_body(**kw):
    b = dict(CHAT)
    b.update(kw)
    return b


def sse_events(lines):
    """data: payloads from an iterable of SSE lines."""
    out = []
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode()
        line = line.strip()
        if line.startswith("data: "):
            out.append(line[6:])
    return out


def rss_kb(pid):
    """Resident memory of a process, in kB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def stop_listener(sock, acceptor):
    """Stop a raw test worker: wake its blocked accept() and let the thread end
    before the descriptor is closed. A number closed under a blocked accept can
    be reused by the next test's listening socket, and the old thread would
    then answer that test's requests."""
    import socket
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    acceptor.join(5)
    sock.close()


def stop_group(p, timeout=10):
    """Stop a process started with start_new_session=True, with everything it forked."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    p.wait(timeout)


def port_open(port):
    """Something accepts connections on 127.0.0.1:port."""
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def free_port():
    """A port nothing listens on now, for servers that cannot take port 0 (nginx)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_nginx(d, http_body, port):
    """A real nginx serving http_body (the inside of its http block) from
    directory d, in its own process group (stop it with stop_group); returns
    its Popen once port accepts connections."""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(f"""
daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
{http_body}
}}
""")
    p = subprocess.Popen(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", str(d)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    if not wait_for(lambda: port_open(port)):
        why = p.stderr.read() if p.poll() is not None else "nginx did not start"
        stop_group(p)  # nothing outlives a failed start
        raise AssertionError(why)
    return p


def wait_for(pred, timeout=10):
    """Poll until pred() is true (behaviour, not timing: the bound only stops a hang)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def asgi_server(tmp_path):
    """Real pre-fork servers (Debian's uvicorn or gunicorn with its
    UvicornWorker) serving a Starlette app the test writes; stopped with their
    whole process group afterwards."""
    import httpx
    started = []

    def start(app_src, *args, server="uvicorn", ready="/healthz", env=None, module="app_under_test"):
        (tmp_path / f"{module}.py").write_text(app_src)
        port = free_port()
        if server == "uvicorn":
            cmd = ["/usr/bin/python3", "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", *args]
        else:
            cmd = ["/usr/bin/python3", "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker",
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning", *args, f"{module}:app"]
        p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(tmp_path), **(env or {})}, start_new_session=True)
        started.append(p)

        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=1).status_code < 500
            except httpx.HTTPError:
                return False
        assert wait_for(up, 30), p.stderr.read().decode() if p.poll() is not None else f"{server} did not start"
        return f"http://127.0.0.1:{port}"
    yield start
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        p.stderr.close()


# ---- TLS: certificates made with the openssl CLI ----

def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and localhost signed by it,
    one for another name, a self-signed one, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")

    def signed(name, subj, ext, ca="ca", days="2"):
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
           "-subj", subj, cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        sh("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
           "-CAcreateserial", "-out", f"{name}.pem", "-days", days, "-extfile", f"{name}.ext", cwd=d)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=infergate test CA", cwd=d)
    signed("srv", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    signed("srv2", "/CN=reloaded", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    signed("other", "/CN=other.example", "subjectAltName=DNS:other.example")
    signed("expired", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost", days="-1")
    signed("client", "/CN=gateway", "extendedKeyUsage=clientAuth")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem",
       "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    return d
