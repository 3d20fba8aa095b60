"""One server worker process: a secondary of the store behind uvicorn on the socket the
supervisor bound (``python -m featurecore.server.worker CONFIG_JSON SLOT``; started by
the supervisor, not by hand)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import uvicorn

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


def run(config: dict, slot: int) -> int:
    logging.basicConfig(
        level=config.get("log_level", "INFO"),
        format=f"%(asctime)s %(levelname)s [worker {slot} pid {os.getpid()}] %(name)s: %(message)s",
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


if __name__ == "__main__":
    sys.exit(run(json.loads(sys.argv[1]), int(sys.argv[2])))
