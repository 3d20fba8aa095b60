"""featurecore's feature server: the serving API over HTTP for rankers that cannot link
the extension (``featurecore serve``; install the ``[server]`` extra).

Modules: ``wire`` (media types, headers and the binary layout; no dependencies, shared
with ``featurecore.client``), ``protocol`` (typed request decoding, response encoders,
error bodies), ``auth`` (API keys), ``metrics`` (Prometheus, merged over workers),
``app`` (the ASGI application of one worker), ``worker`` (one worker process) and
``supervisor`` (the listening socket, N workers, replacement, graceful shutdown).
"""

from .supervisor import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]
