"""Starts `switchyard serve` on a free loopback port for a test and stops it with SIGTERM.

Shared by the server tests in this folder (standard library only). The server prints
"switchyard serve: NAME on http://HOST:PORT ..." once it listens.
"""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request


class Server:
    def __init__(self, cli, *args, env=None):
        self.cli = cli
        cmd = [cli, "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited early:\n" + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r" on http://([^:]+):(\d+) ", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
        else:
            raise RuntimeError("server did not start")
        self.url = f"http://{self.host}:{self.port}"

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=60):
        """SIGTERM, then the exit code (the server drains and exits 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("server did not exit within %d s of SIGTERM" % timeout)
        self.lines.append(rest or "")
        return self.proc.returncode

    def output(self):
        return "".join(self.lines)


def request(url, path, body=None, method=None, headers=None, raw=None, timeout=120):
    """Returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def sse_payloads(response):
    """Yields the decoded `data:` payloads of a server-sent-event response as they arrive ("[DONE]" as is)."""
    buf = b""
    for chunk in iter(lambda: response.read1(65536), b""):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            line = event.decode()
            if line.startswith("data: "):
                payload = line[6:]
                yield payload if payload == "[DONE]" else json.loads(payload)


def stream_events(url, path, body, timeout=120):
    """POSTs a streaming request; returns the list of decoded `data:` payloads (the last is "[DONE]")."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.headers.get("Content-Type", "").startswith("text/event-stream"), r.headers
        return list(sse_payloads(r))


def metric(text, name):
    """The value of an unlabelled metric in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)
