"""One server worker process: a secondary of the store behind uvicorn on the socket the
supervisor bound (``run``, in a process the supervisor forked; not started by hand)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

import uvicorn
# What uvicorn.Config(loop="uvloop", http="httptools", lifespan="off") loads when a worker
# starts, imported here so that the supervisor, which forks the workers, shares it:
import uvicorn.lifespan.off  # noqa: F401
import uvicorn.loops.uvloop  # noqa: F401
import uvicorn.protocols.http.httptools_impl  # noqa: F401
import uvicorn.protocols.websockets.auto  # noqa: F401

from ..serving.preload import Preloaded
from ..store import FeatureStore
from .app import AppOptions, Worker
from .auth import AuthTable

logger = logging.getLogger("featurecore.server")


def _exit_with_parent(parent: int) -> None:
    """Stop gracefully when the supervisor is gone (killed with -9, say)."""

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="featurecore-parent-watch", daemon=True).start()


class _Server(uvicorn.Server):
    """uvicorn's server that starts the worker's background load once it listens, so
    /readyz answers (503) while resident groups load."""

    def __init__(self, worker: Worker, config: uvicorn.Config):
        super().__init__(config)
        self.worker = worker

    async def startup(self, sockets: "list[socket.socket] | None" = None) -> None:
        await super().startup(sockets)
        self.worker.start()
        # Tells the supervisor this worker started (an exit before it is a failed start).
        Path(self.worker.run_dir, f"listening-{os.getpid()}").touch()


def run(config: dict, slot: int, inherited: "Preloaded | None" = None) -> int:
    """Serve until SIGTERM; returns the exit code. ``inherited``: what the supervisor
    preloaded before forking this process (``serving.preload``); the store finds it when
    it opens and loads its groups, and its generation mappings are dropped once the
    groups are loaded (so a worker that later switches to a newer generation does not
    keep the old file mapped)."""
    logging.basicConfig(  # force: the supervisor configured logging before forking this process
        level=config.get("log_level", "INFO"),
        format=f"%(asctime)s %(levelname)s [worker {slot} pid {os.getpid()}] %(name)s: %(message)s",
        force=True,
    )
    _exit_with_parent(config["supervisor_pid"])
    sock = socket.socket(fileno=config["fd"])
    auth = AuthTable.load(config["auth"]) if config.get("auth") else None
    store = FeatureStore.open(config["store"], mode="secondary", preload=False, refresh_interval_s=config["refresh_interval_s"])
    try:
        worker = Worker(
            store,
            AppOptions(auth=auth, max_candidates=config["max_candidates"]),
            run_dir=config["run_dir"],
            slot=slot,
        )
        if inherited is not None and inherited.mappings:
            mappings = inherited.mappings

            def release() -> None:
                worker.loaded.wait()
                mappings.clear()

            threading.Thread(target=release, name="featurecore-release-preload", daemon=True).start()
        server = _Server(
            worker,
            uvicorn.Config(
                worker,
                loop="uvloop",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_config=None,
                timeout_graceful_shutdown=config["graceful_timeout_s"],
            )
        )
        server.run(sockets=[sock])
        worker.stop()
    finally:
        store.close()
    logger.info("worker %d stopped", slot)
    return 0

