"""The ASGI application of one server worker (no framework: five routes).

Routes: ``POST /v1/features`` (the serving API), ``GET /v1/feature_sets/<ref>``
(columns and fingerprint, for decoding the binary form), ``GET /healthz`` (alive),
``GET /readyz`` (registry loaded, resident groups loaded, following the primary,
freshness within SLA), ``GET /metrics`` (Prometheus). ``get_features`` runs on the
event loop: its native part releases the GIL, and each worker is one process on one
core, so a thread hop would only add latency.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import msgspec

from ..errors import AccessDeniedError, FeatureUnavailableError, NotFoundError, ValidationError
from ..monitoring.collector import ServingCollector
from ..registry.provenance import ages_from_lineage
from ..store import FeatureStore
from . import wire
from .auth import ApiKey, AuthTable
from .metrics import MetricsPublisher, ServerMetrics
from .protocol import (
    HttpError,
    decode_request,
    encode_arrow,
    encode_binary,
    encode_json,
    field_of,
    largest_count,
    matrix_headers,
    pick_format,
    to_request,
)

logger = logging.getLogger("featurecore.server")
_ENCODE = msgspec.json.encode

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

#: Callers recorded in the access audit for requests without a valid key.
NO_KEY, UNKNOWN_KEY, INSECURE_LOCAL = "<no key>", "<unknown key>", "<insecure-local>"


@dataclass(frozen=True)
class AppOptions:
    """What a worker's application needs besides the store."""

    auth: AuthTable | None  # None: --insecure-local
    max_candidates: int = 10_000
    max_body_bytes: int = 16 << 20
    #: How long a features request waits for the startup load before 503.
    load_wait_s: float = 30.0
    #: A secondary not caught up for this long is not ready.
    refresh_stale_s: float = 10.0


class Worker:
    """One worker's state: the store (a secondary), the startup load, metrics."""

    def __init__(self, store: FeatureStore, options: AppOptions, *, run_dir: str, slot: int):
        self.store = store
        self.options = options
        self.slot = slot
        self.run_dir = run_dir
        self.collector = ServingCollector()
        self.metrics = ServerMetrics(self.collector, store.access_policy.audit)
        self.publisher = MetricsPublisher(self.metrics, run_dir, slot)
        self.loaded = threading.Event()  # the startup load finished
        self._stop = threading.Event()
        self.load_error: BaseException | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-"

    def start(self) -> None:
        """Load the resident groups in the background (readiness waits for it) and
        start publishing metrics."""
        threading.Thread(target=self._load, name="featurecore-load", daemon=True).start()
        self.publisher.start()

    def _load(self) -> None:
        """Load every online resident group now, then those of each new registry
        revision as it arrives (requests would load them on first use, slower)."""
        revision = -1
        while True:
            if self.store.state.revision != revision:
                revision = self.store.state.revision
                start = time.perf_counter()
                try:
                    loads = self.store.load_resident()
                    logger.info("worker %d: %d resident groups loaded (registry revision %d) in %.2f s",
                                self.slot, len(loads), revision, time.perf_counter() - start)
                    self.load_error = None
                except Exception as error:  # reported by /readyz; requests still load on first use
                    self.load_error = error
                    logger.exception("worker %d: loading resident groups failed", self.slot)
                self.loaded.set()
            if self._stop.wait(0.2):
                return

    def stop(self) -> None:
        self._stop.set()
        self.publisher.stop()

    def next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    # -- readiness --------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        store = self.store
        state = store.state
        checks: dict[str, Any] = {
            "registry": {"ok": state.revision > 0 and bool(state.feature_sets), "revision": state.revision,
                         "feature_sets": len(state.feature_sets)},
        }
        online = [g for g in state.feature_groups.values() if state.is_online(g.ref)]
        loaded = set(store.snapshots.loaded_names())
        pending = sorted(g.ref for g in online if g.serving_mode == "resident" and store.group_schema(g.ref).cf_name not in loaded)
        checks["resident"] = {"ok": self.loaded.is_set() and not pending and self.load_error is None,
                              "loaded": sorted(loaded), "pending": pending,
                              **({"error": str(self.load_error)} if self.load_error else {})}
        refresh = store.online_stats().get("refresh")
        if refresh is not None:
            checks["refresh"] = {"ok": refresh["since_last_success_s"] <= self.options.refresh_stale_s, **refresh}
        ages = ages_from_lineage(store, [g.ref for g in online])
        stale = {
            g.ref: {"age_s": round(ages[g.ref], 1), "sla_s": g.freshness_sla}
            for g in online if g.ref in ages and g.freshness_sla and ages[g.ref] > g.freshness_sla
        }
        checks["freshness"] = {"ok": not stale, "stale_groups": stale,
                               "unknown": sorted(g.ref for g in online if g.ref not in ages)}
        return all(c["ok"] for c in checks.values()), checks

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/v1/features":
            if method != "POST":
                await self._error(send, HttpError(405, "use POST /v1/features", None, ((b"allow", b"POST"),)), "")
            else:
                await self.features(scope, receive, send)
        elif method != "GET":
            await self._error(send, HttpError(405, f"use GET {path}", None, ((b"allow", b"GET"),)), "")
        elif path == "/healthz":
            await _respond(send, 200, _ENCODE({"status": "ok", "pid": os.getpid(), "worker": self.slot}), wire.JSON)
        elif path == "/readyz":
            ready, checks = self.readiness()
            await _respond(send, 200 if ready else 503, _ENCODE({"ready": ready, "checks": checks}), wire.JSON)
        elif path == "/metrics":
            await _respond(send, 200, self.publisher.render(), "text/plain; version=0.0.4; charset=utf-8")
        elif path.startswith("/v1/feature_sets/"):
            await self.feature_set(scope, path[len("/v1/feature_sets/"):], send)
        else:
            await self._error(send, HttpError(404, f"no route {path}; see GET /healthz, /readyz, /metrics, POST /v1/features"), "")

    async def feature_set(self, scope: dict, ref: str, send: Send) -> None:
        """Columns of a feature set (the binary form's column list). Needs a key as
        features requests do."""
        try:
            self._authenticate(_headers(scope), ref)
            columns = list(self.store.state.columns(ref))
        except HttpError as error:
            await self._error(send, error, "")
            return
        except NotFoundError as error:
            await self._error(send, HttpError(404, str(error), "feature_set"), "")
            return
        body = {"feature_set": ref, "columns": columns, "columns_fingerprint": wire.columns_fingerprint(columns)}
        await _respond(send, 200, _ENCODE(body), wire.JSON)

    async def features(self, scope: dict, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        request_id = headers.get("x-request-id") or self.next_request_id()
        fmt_name, feature_set = "json", ""
        try:
            media = pick_format(headers.get("accept", ""))
            fmt_name = wire.FORMATS[media]
            body = await _read_body(receive, self.options.max_body_bytes)
            start = time.perf_counter()
            key = self._authenticate(headers, "")
            decoded = decode_request(body)
            feature_set = decoded.feature_set
            request_id = decoded.request_id or request_id
            n = largest_count(decoded)
            if n > self.options.max_candidates:
                raise HttpError(
                    413, f"the request names {n} candidates, more than this server's cap of {self.options.max_candidates}; "
                    "split it into smaller requests (or start the server with a larger --max-candidates)", "entities",
                )
            tenant, purpose, caller = self._act_as(key, decoded)
            request = to_request(decoded, tenant=tenant, purpose=purpose, caller=caller)
            if not self.loaded.is_set():
                await self._wait_loaded(decoded.deadline_ms)
            matrix = self.store.get_features(request)
            latency_us = (time.perf_counter() - start) * 1e6
            self.collector.observe(matrix.feature_set, matrix, latency_us, tenant=tenant)
            fingerprint = wire.columns_fingerprint(matrix.columns)
            if fmt_name == "binary":
                payload = encode_binary(matrix)
            elif fmt_name == "arrow":
                payload = encode_arrow(matrix, fingerprint, latency_us)
            else:
                columnar = b"layout=columnar" in scope.get("query_string", b"")
                payload = encode_json(matrix, latency_us, request_id, columnar=columnar)
                fmt_name = "json_columnar" if columnar else "json"
            extra = matrix_headers(matrix, latency_us, fingerprint)
            extra.append((wire.REQUEST_ID_HEADER.encode(), request_id.encode()))
            await _respond(send, 200, payload, media, extra)
            self.metrics.observe(feature_set, fmt_name, 200, time.perf_counter() - start)
            return
        except HttpError as error:
            failure = error
        except AccessDeniedError as error:  # the engine has audited it
            failure = HttpError(403, str(error), "purpose")
        except NotFoundError as error:
            failure = HttpError(404, str(error), "feature_set")
        except FeatureUnavailableError as error:
            if error.reason == "timeout":
                failure = HttpError(504, f"deadline_ms passed before every feature with a 'fail' policy was read: {error}", "deadline_ms")
            else:
                failure = HttpError(503, str(error), None)
        except (ValidationError, ValueError, TypeError) as error:
            failure = HttpError(400, str(error), field_of(str(error)))
        except Exception:
            logger.error("request_id=%s internal error:\n%s", request_id, traceback.format_exc())
            failure = HttpError(500, f"internal error; the server log has the details under request_id {request_id}")
        log = logger.error if failure.status >= 500 else logger.info
        log("request_id=%s feature_set=%s status=%d %s", request_id, feature_set, failure.status, failure.message)
        await self._error(send, failure, request_id)
        self.metrics.observe(feature_set, fmt_name, failure.status, 0.0)

    def _authenticate(self, headers: dict[str, str], feature_set: str) -> ApiKey | None:
        auth = self.options.auth
        if auth is None:
            return None
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.store.access_policy.audit.record(caller=NO_KEY, feature_set=feature_set, tenant="", purpose="", reason="no API key")
            raise HttpError(401, "no API key; send `Authorization: Bearer <key>` (keys come from the server's --auth file)",
                            "Authorization", ((b"www-authenticate", b'Bearer realm="featurecore"'),))
        key = auth.authenticate(token.strip())
        if key is None:
            self.store.access_policy.audit.record(caller=UNKNOWN_KEY, feature_set=feature_set, tenant="", purpose="", reason="unknown API key")
            raise HttpError(401, "the API key is not in this server's --auth file; ask its operator for a key",
                            "Authorization", ((b"www-authenticate", b'Bearer realm="featurecore", error="invalid_token"'),))
        return key

    def _act_as(self, key: ApiKey | None, decoded: Any) -> tuple[str, str, str]:
        """(tenant, purpose, caller) of a request: the key's, or what the request names
        when the key allows it (HttpError 403, audited, otherwise)."""
        if key is None:  # --insecure-local
            return decoded.tenant or "default", decoded.purpose or "ranking", INSECURE_LOCAL
        tenant = decoded.tenant or key.tenant
        purpose = decoded.purpose or key.purposes[0]
        reason, field = None, None
        if tenant != key.tenant:
            reason, field = f"the key of {key.caller!r} acts for tenant {key.tenant!r} only, the request names tenant {tenant!r}", "tenant"
        elif purpose not in key.purposes:
            reason, field = f"the key of {key.caller!r} may act for purposes {list(key.purposes)}, the request names purpose {purpose!r}", "purpose"
        if reason is not None:
            self.store.access_policy.audit.record(caller=key.caller, feature_set=decoded.feature_set, tenant=tenant, purpose=purpose, reason=reason)
            raise HttpError(403, f"{reason}; use a key issued for it", field)
        return tenant, purpose, key.caller

    async def _wait_loaded(self, deadline_ms: float | None) -> None:
        """Wait (without blocking the loop) for the startup load of resident groups."""
        limit = self.options.load_wait_s if deadline_ms is None else deadline_ms / 1000.0
        give_up = time.monotonic() + limit
        while not self.loaded.is_set():
            if time.monotonic() > give_up:
                raise HttpError(503, "resident groups are still loading after a restart; retry shortly (GET /readyz tells when)",
                                None, ((b"retry-after", b"1"),))
            await asyncio.sleep(0.005)

    async def _error(self, send: Send, error: HttpError, request_id: str) -> None:
        headers = list(error.headers)
        if request_id:
            headers.append((wire.REQUEST_ID_HEADER.encode(), request_id.encode()))
        await _respond(send, error.status, error.body(request_id), wire.JSON, headers)


def _headers(scope: dict) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over {limit} bytes; send fewer candidates per request", None)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, content_type: str, headers: Any = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})
