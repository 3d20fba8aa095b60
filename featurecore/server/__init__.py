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

if TYPE_CHECKING:
    from .supervisor import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m featurecore.server.auth` runs its module once (no runpy warning)
    # and importing the wire format does not load the supervisor.
    if name in __all__:
        from . import supervisor

        value = getattr(supervisor, name)
        globals()[name] = value  # later reads are plain module attributes
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
