"""featurecore's feature server: the serving API over HTTP for rankers that cannot link
the extension (``featurecore serve``; install the ``[server]`` extra).

Modules: ``wire`` (media types, headers and the binary layout; no dependencies, shared
with ``featurecore.client``), ``protocol`` (typed request decoding, response encoders,
error bodies), ``auth`` (API keys), ``metrics`` (Prometheus, merged over workers),
``app`` (the ASGI application of one worker), ``worker`` (one worker process) and
``supervisor`` (the listening socket, N workers, replacement, graceful shutdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import lazy

if TYPE_CHECKING:
    from .supervisor import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]


# Lazy, so `python -m featurecore.server.auth` runs its module once (no runpy warning) and
# importing the wire format does not load the supervisor.
_HOMES = {"ServeOptions": ".supervisor", "serve": ".supervisor"}


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _HOMES, name)


def __dir__() -> list[str]:
    return lazy.names(__name__, _HOMES)
