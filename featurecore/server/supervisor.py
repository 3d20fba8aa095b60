"""``featurecore serve``: binds the listening socket, runs N worker processes on it,
replaces a worker that dies, and shuts down gracefully on SIGTERM/SIGINT.

The workers share one listening socket (the kernel hands each connection to a worker
that is accepting), each opens the store as a RocksDB secondary (the primary, which
writes, runs elsewhere) and follows it: new registry revisions and writes are served
without a restart. A worker that exits while the server runs is started again in its
slot; a slot whose workers keep dying before they listen stops the server.

Workers are forked from the supervisor (the shape of gunicorn's ``--preload``): it has
imported everything a worker runs, and just before forking maps and verifies the current
generation of every resident group and decodes the registry published with them, compiling
its feature sets (``serving.preload``: files only, no database opened), and freezes its
objects for the collector (``gc.freeze``). A worker then shares the interpreter's,
numpy's and featurecore's pages with the supervisor and its siblings, finds its groups'
files already mapped and checksummed (it serves from the shared file without reading
it), and uses the decoded registry and plans when its own RocksDB holds the same registry
record. The supervisor drops its mappings once the workers are forked (a
replacement maps the then-current files again), so it never pins an old generation.
The supervisor never opens RocksDB: a child must not inherit an open database (or the
threads RocksDB starts with one).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from ..errors import FeatureStoreError, ValidationError
from ..layout import online_path
from ..serving import preload
from ..storage import rocksdb
from . import worker
from .auth import AuthTable

logger = logging.getLogger("featurecore.server")

#: Consecutive failed starts (exits before listening) of one slot that stop the server.
MAX_FAILED_STARTS = 5

#: Serve workers per CPU this process may run on, at most. Each worker is a process with
#: its own RocksDB follower, overlay and Python heap; a ranking service runs about one per
#: core, and hundreds (a typo of --workers) would exhaust memory and file descriptors.
MAX_WORKERS_PER_CPU = 16


def max_workers() -> int:
    """The most ``--workers`` a server may start on this machine (MAX_WORKERS_PER_CPU
    per CPU this process may use)."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return MAX_WORKERS_PER_CPU * max(1, cpus)


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
        if self.workers > max_workers():
            raise ValidationError(
                f"--workers {self.workers} is more than this machine can serve with: at most {MAX_WORKERS_PER_CPU} per CPU "
                f"this process may use, {max_workers()} here (each worker is a process holding its own RocksDB follower); "
                "pass about one worker per core"
            )
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"--port must be in 0..65535, got {self.port}")
        if self.max_candidates < 1:
            raise ValidationError(f"--max-candidates must be positive, got {self.max_candidates}")
        interval = self.refresh_interval_s
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= threading.TIMEOUT_MAX:
            raise ValidationError(f"--refresh-interval must be a positive number of seconds, got {interval!r}")
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
        if not rocksdb.writable(self.store):
            raise FeatureStoreError(
                f"this user may not write store {self.store!r}'s online folder {online_path(self.store)!r}: serve workers follow "
                "the store as RocksDB secondaries, which write there; serve as a user who may write the store, or fix its "
                "permissions (read-only verbs such as `featurecore list` need no write access)"
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


class _Child:
    """A forked worker process (``subprocess.Popen``'s poll/wait/kill, for a pid)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """The exit code; raises TimeoutError if the process still runs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(self.pid)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


class Supervisor:
    """The worker processes of one server."""

    def __init__(self, options: ServeOptions, sock: socket.socket, run_dir: str):
        self.options = options
        self.sock = sock
        self.run_dir = run_dir
        self.procs: list[_Child | None] = [None] * options.workers
        self.failed_starts = [0] * options.workers
        self.restarts = 0
        self.stopping = threading.Event()

    def _config(self) -> dict:
        o = self.options
        return {
            "store": os.path.abspath(o.store), "auth": os.path.abspath(o.auth) if o.auth else None, "fd": self.sock.fileno(),
            "run_dir": self.run_dir, "max_candidates": o.max_candidates, "refresh_interval_s": o.refresh_interval_s,
            "graceful_timeout_s": o.graceful_timeout_s, "log_level": o.log_level, "supervisor_pid": os.getpid(),
        }

    def spawn(self, *slots: int) -> None:
        """Fork a worker for each of ``slots``, sharing one preload of the store."""
        config = self._config()  # here: it names this process as the workers' parent
        preloaded = preload.preload(self.options.store)
        gc.freeze()  # the collector must not write to the objects the children share
        for slot in slots:
            pid = os.fork()
            if pid == 0:
                _run_child(config, slot, preloaded)  # never returns
            self.procs[slot] = _Child(pid)
            logger.info("worker %d started (pid %d)", slot, pid)
        del preloaded  # the children hold their own mappings; this process pins no old file

    def run(self) -> int:
        self.spawn(*range(self.options.workers))
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
            except TimeoutError:
                logger.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.send_signal(signal.SIGKILL)
                proc.wait(60.0)


def _run_child(config: dict, slot: int, preloaded: preload.Preloaded) -> None:
    """The forked worker: runs ``worker.run`` and exits with its code (it never returns
    into the supervisor's loop)."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):  # the supervisor's handlers; uvicorn installs its own
            signal.signal(signum, signal.SIG_DFL)
        code = worker.run(config, slot, preloaded)
    except BaseException:
        logger.exception("worker %d failed", slot)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


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
