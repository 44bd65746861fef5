#!/usr/bin/env python3
"""The chat page at "/" in headless Chromium (Debian `chromium`): loads, takes a typed message, and shows a
completed streamed reply. Drives the browser over the DevTools protocol with a minimal WebSocket client
(standard library only). Saves a screenshot to --artifacts (a test artifact; not committed).

  python3 test_chat_page.py --cli build/tools/cli/switchyard --artifacts build/test-artifacts

Exits 77 (CTest: skipped) when no chromium binary is installed.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from serve_harness import Server


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, client-side masking, no extensions."""

    def __init__(self, url):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _recv_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools socket closed")
            data += chunk
        return data

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            message += self._recv_exact(n)
            if b0 & 0x80:
                return message.decode()

    def call(self, method, **params):
        self.next_id += 1
        self.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return r["result"].get("value")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--artifacts", required=True)
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("skipped: no chromium binary (apt-get install chromium)")
        sys.exit(77)
    os.makedirs(args.artifacts, exist_ok=True)
    s = Server(args.cli)
    profile = tempfile.mkdtemp(prefix="sy-chromium-")
    chrome = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1000,800",
                               "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            assert time.time() < deadline and chrome.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = [t for t in targets if t["type"] == "page"][0]
        ws = WebSocket(page["webSocketDebuggerUrl"])
        ws.call("Page.enable")
        ws.call("Page.navigate", url=s.url + "/")
        deadline = time.time() + 30
        while ws.evaluate("document.readyState") != "complete" or \
                not ws.evaluate("document.getElementById('model').textContent"):
            assert time.time() < deadline, "the chat page did not load (or /v1/models failed)"
            time.sleep(0.1)
        assert ws.evaluate("document.title") == "Switchyard chat"
        # Type a message and press Send, as a user would.
        ws.evaluate("""(() => { const i = document.getElementById('prompt'); i.value = 'Hello, who are you?';
                               document.getElementById('send').click(); })()""")
        deadline = time.time() + 60
        reply = None
        while reply is None:
            assert time.time() < deadline, "no completed reply: " + str(ws.evaluate("document.getElementById('log').innerText"))
            reply = ws.evaluate("(() => { const d = document.querySelector('.assistant[data-done=\"1\"]');"
                                " return d ? d.textContent : null; })()")
            time.sleep(0.1)
        assert reply.strip(), "the reply is empty"
        assert not ws.evaluate("document.querySelector('.error')"), ws.evaluate("document.body.innerText")
        shot = ws.call("Page.captureScreenshot", format="png")["data"]
        path = os.path.join(args.artifacts, "chat_page.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot))
        print(f"ok   chat page: reply {reply[:60]!r}; screenshot {path}")
    finally:
        chrome.terminate()
        try:
            chrome.wait(10)
        except subprocess.TimeoutExpired:
            chrome.kill()
        shutil.rmtree(profile, ignore_errors=True)
        code = s.stop()
    assert code == 0, s.output()


if __name__ == "__main__":
    main()
