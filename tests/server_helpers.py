"""Starting a real ``featurecore serve`` process for tests (not a test module)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


class ServerProcess:
    """``featurecore serve`` on a free loopback port (``--port 0``), its stderr collected."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "featurecore.cli", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._port = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._port.wait(30):
            self.stop()
            raise RuntimeError("server did not report its port:\n" + self.log())

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                self._port.set()

    def log(self) -> str:
        return "".join(self.lines)

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, lower-cased headers, body)."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        body = b""
        while time.monotonic() < deadline:
            try:
                status, _, body = self.request("GET", "/readyz")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready: {body!r}\n" + self.log())

    def workers(self) -> list[int]:
        """Pids of the supervisor's live worker processes (its children that it announced
        as workers: a preload also forks a short-lived child that reads the store)."""
        started = {int(m.group(1)) for line in list(self.lines) if (m := re.search(r"worker \d+ started \(pid (\d+)\)", line))}
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [int(p) for p in f.read().split() if int(p) in started]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._reader.join(10)
        self.proc.stderr.close()
        return code
