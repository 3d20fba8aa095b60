"""``featurecore serve``: binds the listening socket, runs N worker processes on it,
replaces a worker that dies, and shuts down gracefully on SIGTERM/SIGINT.

The workers share one listening socket (the kernel hands each connection to a worker
that is accepting), each opens the store as a RocksDB secondary (the primary, which
writes, runs elsewhere) and follows it: new registry revisions and writes are served
without a restart. A worker that exits while the server runs is started again in its
slot; a slot whose workers keep dying before they listen stops the server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from ..errors import FeatureStoreError, ValidationError
from ..layout import online_path
from .auth import AuthTable

logger = logging.getLogger("featurecore.server")

#: Consecutive failed starts (exits before listening) of one slot that stop the server.
MAX_FAILED_STARTS = 5


@dataclass(frozen=True)
class ServeOptions:
    """``featurecore serve``'s options (see ``featurecore serve --help``)."""

    store: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    auth: str | None = None
    insecure_local: bool = False
    max_candidates: int = 10_000
    refresh_interval_s: float = 1.0
    graceful_timeout_s: float = 10.0
    log_level: str = "INFO"

    def check(self) -> None:
        """Raise ValidationError/FeatureStoreError naming the option and the fix."""
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValidationError(f"--workers must be a positive integer, got {self.workers!r}")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"--port must be in 0..65535, got {self.port}")
        if self.max_candidates < 1:
            raise ValidationError(f"--max-candidates must be positive, got {self.max_candidates}")
        if self.auth and self.insecure_local:
            raise ValidationError("pass either --auth FILE or --insecure-local, not both")
        if not self.auth and not self.insecure_local:
            raise ValidationError(
                "the server needs API keys: pass --auth FILE (see `python -m featurecore.server.auth`), "
                "or --insecure-local to serve without keys on a loopback address"
            )
        if self.insecure_local and not is_loopback(self.host):
            raise ValidationError(
                f"--insecure-local serves without keys, so only on a loopback address (127.0.0.1, ::1), got --host {self.host!r}; "
                "pass --auth FILE to listen on other addresses"
            )
        if self.auth:
            AuthTable.load(self.auth)
        if not os.path.exists(os.path.join(online_path(self.store), "CURRENT")):
            raise FeatureStoreError(
                f"store {self.store!r} does not exist; create it first (`featurecore apply --store {self.store}`), "
                "the server only reads it"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        raise FeatureStoreError(f"cannot listen on {host}:{port}: {error}; pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """The worker processes of one server."""

    def __init__(self, options: ServeOptions, sock: socket.socket, run_dir: str):
        self.options = options
        self.sock = sock
        self.run_dir = run_dir
        self.procs: list[subprocess.Popen | None] = [None] * options.workers
        self.failed_starts = [0] * options.workers
        self.restarts = 0
        self.stopping = threading.Event()

    def _config(self) -> str:
        o = self.options
        return json.dumps({
            "store": os.path.abspath(o.store), "auth": os.path.abspath(o.auth) if o.auth else None, "fd": self.sock.fileno(),
            "run_dir": self.run_dir, "max_candidates": o.max_candidates, "refresh_interval_s": o.refresh_interval_s,
            "graceful_timeout_s": o.graceful_timeout_s, "log_level": o.log_level, "supervisor_pid": os.getpid(),
        })

    def spawn(self, slot: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "featurecore.server.worker", self._config(), str(slot)], pass_fds=(self.sock.fileno(),)
        )
        self.procs[slot] = proc
        logger.info("worker %d started (pid %d)", slot, proc.pid)

    def run(self) -> int:
        for slot in range(self.options.workers):
            self.spawn(slot)
        while not self.stopping.wait(0.1):
            for slot, proc in enumerate(self.procs):
                code = proc.poll() if proc is not None else None
                if proc is None or code is None or self.stopping.is_set():
                    continue
                marker = os.path.join(self.run_dir, f"listening-{proc.pid}")
                listened = os.path.exists(marker)
                if listened:
                    os.unlink(marker)
                self.failed_starts[slot] = 0 if listened else self.failed_starts[slot] + 1
                if self.failed_starts[slot] >= MAX_FAILED_STARTS:
                    logger.error("worker %d failed to start %d times in a row (exit code %s); stopping", slot, MAX_FAILED_STARTS, code)
                    self.shutdown()
                    return 1
                logger.warning("worker %d (pid %d) exited with code %s; starting a replacement", slot, proc.pid, code)
                self.restarts += 1
                with open(os.path.join(self.run_dir, "restarts"), "w") as f:
                    f.write(str(self.restarts))
                self.spawn(slot)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        """SIGTERM every worker (each finishes its requests in flight), then SIGKILL the
        ones still running after the graceful timeout."""
        self.stopping.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.graceful_timeout_s + 5.0
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()


def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    options.check()
    sock = _bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    run_dir = tempfile.mkdtemp(prefix="featurecore-serve-")
    supervisor = Supervisor(options, sock, run_dir)

    def stop(signum: int, frame: object) -> None:
        logger.info("received %s; stopping gracefully", signal.Signals(signum).name)
        supervisor.stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    logger.info(
        "featurecore serve: listening on http://%s:%d with %d workers, store %s%s", host if ":" not in host else f"[{host}]", port,
        options.workers, options.store, " (insecure-local: no API keys)" if options.insecure_local else "",
    )
    try:
        return supervisor.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        logger.info("featurecore serve: stopped")
