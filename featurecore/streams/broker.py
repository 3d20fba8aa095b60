"""A throwaway local NATS server with JetStream, for tests, benchmarks and trying ingestion out.

>>> with LocalNatsServer() as server:  # doctest: +SKIP
...     server.add_stream("sessions", ["sessions"])
...     store.ingest("user_session:v1", server.url("sessions"), idle_timeout_s=1.0)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterable

from ..errors import FeatureStoreError

logger = logging.getLogger(__name__)


def find_nats_server(binary: str = "nats-server") -> "str | None":
    """The nats-server executable: on PATH, or in the sbin folders Debian installs it to."""
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalNatsServer:
    """``nats-server -js`` on a local port (``port``, else a free one) with its storage in a
    temporary directory (removed on ``stop``). Needs the ``nats-server`` binary (Debian:
    ``apt-get install nats-server``)."""

    def __init__(self, binary: str = "nats-server", port: "int | None" = None):
        path = find_nats_server(binary)
        if path is None:
            raise FeatureStoreError(f"{binary!r} is not installed; apt-get install nats-server (or put it on PATH)")
        self.port = _free_port() if port is None else port
        self.directory = tempfile.mkdtemp(prefix="featurecore-nats-")
        #: The server's log: a file, not a pipe nobody reads while the server runs (a full
        #: 64 KiB pipe would block the server on its next line; a loaded server logs a
        #: ~200-byte line per slow consumer and per slow read loop).
        self.log_path = os.path.join(self.directory, "nats-server.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [path, "-js", "-sd", self.directory, "-a", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    error = self.log() if self.process.poll() is not None else ""
                    self.stop()
                    raise FeatureStoreError(f"nats-server did not start on port {self.port}: {error.strip()[-500:]}")
                time.sleep(0.02)

    def log(self) -> str:
        """What the server has logged so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def address(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url(self, subject: str) -> str:
        """``nats://127.0.0.1:PORT/SUBJECT`` for ``featurecore ingest --from``."""
        return f"{self.address}/{subject}"

    def _call(self, work: Any) -> Any:
        import nats

        async def run() -> Any:
            nc = await nats.connect(self.address)
            try:
                return await work(nc, nc.jetstream())
            finally:
                await nc.drain()

        return asyncio.run(run())

    def add_stream(self, name: str, subjects: "list[str]", **config: Any) -> None:
        """Create a JetStream stream (file storage) capturing ``subjects``."""
        self._call(lambda nc, js: js.add_stream(name=name, subjects=subjects, **config))

    def publish(self, subject: str, payloads: Iterable[bytes]) -> "list[int]":
        """Publish ``payloads`` to JetStream (each acknowledged); returns their stream sequences."""

        async def work(nc: Any, js: Any) -> "list[int]":
            sequences = []
            window: list = []
            for payload in payloads:
                window.append(asyncio.ensure_future(js.publish(subject, payload)))
                if len(window) >= 256:
                    sequences += [ack.seq for ack in await asyncio.gather(*window)]
                    window = []
            sequences += [ack.seq for ack in await asyncio.gather(*window)]
            return sequences

        return self._call(work)

    def messages(self, stream: str) -> "list[tuple[int, bytes, dict]]":
        """Every message of ``stream``: (sequence, payload, headers)."""

        async def work(nc: Any, js: Any) -> list:
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except Exception:  # a deleted message leaves a gap
                    continue
                out.append((seq, msg.data, dict(msg.headers or {})))
            return out

        return self._call(work)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "LocalNatsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
