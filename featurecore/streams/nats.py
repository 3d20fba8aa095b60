"""NATS JetStream as a stream source (``nats-py``; install the ``streams`` extra).

The source is synchronous: it owns an asyncio event loop, running in a thread of its own,
and each call waits for its coroutine there, so the ingest loop stays plain code.

A micro-batch is fetched in pull requests of at most ``REQUEST_BYTES`` (sized from the
messages seen so far), and the loop keeps reading the socket while the ingest loop applies a
batch. nats-server drops a client as a slow consumer when more than 64 MiB wait to be written
to it ("MaxPending of 67108864 Exceeded": one request for 2,000 messages of 100 rows is
~73 MB) or when a write waits 10 s ("WriteDeadline of 10s exceeded": the rest of a request
that timed out, unread while a large batch was applied). Its unacknowledged messages then
came back only after ``ack_wait``: the benchmark's backlog stalled for a minute, on a loaded
machine, in 3 of 5 runs.

A delivery can still be lost in transit (a reconnect, a slow consumer). JetStream then hands
out the next messages, and acknowledging them (``AckPolicy.ALL``) would acknowledge the lost
ones unapplied. The consumer sequence of every delivery is one more than the last one's, so a
jump in it means a loss: the source then re-points the consumer after the last acknowledged
message and fetches again (whatever comes twice is at or below the store's position, which
the ingest loop skips). Its durable pull consumer is re-pointed at the store's
position every time it opens (deleted and created again with ``deliver_policy=by_start_sequence``
at ``after + 1``): the position committed with the rows is the only truth, and a restart
resumes at once instead of waiting ``ack_wait`` for in-flight messages to be redelivered.
The consumer acknowledges with ``AckPolicy.ALL`` (one ack per micro-batch) and
``max_ack_pending`` bounds what the server hands out.

Dead letters are published to ``dead_letter_subject`` with the original payload and the
headers ``Featurecore-Error`` (the reason), ``Featurecore-Sequence`` and
``Featurecore-Subject``; ``Nats-Msg-Id`` = ``<stream>:<sequence>`` lets JetStream drop the
copy a crashed and restarted consumer publishes again (within the stream's duplicate window).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any
from urllib.parse import urlsplit

from ..errors import FeatureStoreError, ValidationError
from .source import StreamMessage

logger = logging.getLogger(__name__)
_HEADER_UNSAFE = re.compile(r"[\r\n]+")
#: The dead-letter subject of ``nats://host:port/SUBJECT`` when none is given.
DEAD_LETTER_PREFIX = "featurecore.dead."
#: Bytes one pull request may bring (well under nats-server's 64 MiB per-client max_pending).
REQUEST_BYTES = 8 << 20
#: The message size assumed before any was seen: the first request asks for 128 messages.
_FIRST_MESSAGE_BYTES = 64 << 10


def parse_nats_url(url: str) -> "tuple[str, str]":
    """``nats://HOST:PORT/SUBJECT`` -> (server URL, subject)."""
    parts = urlsplit(url) if isinstance(url, str) else None
    subject = parts.path.lstrip("/") if parts else ""
    if parts is None or parts.scheme not in ("nats", "tls") or not parts.hostname or not subject:
        raise ValidationError(
            f"stream URL must look like nats://HOST:PORT/SUBJECT, got {url!r}; e.g. nats://127.0.0.1:4222/clicks"
        )
    return f"{parts.scheme}://{parts.netloc}", subject


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as error:  # an optional dependency
        raise FeatureStoreError(
            "stream ingestion from NATS needs the nats-py client; pip install 'featurecore[streams]'"
        ) from error
    return nats


class NatsSource:
    """A JetStream subject as a ``StreamSource``.

    Args:
        url: ``nats://HOST:PORT/SUBJECT``; a JetStream stream must capture SUBJECT.
        durable: the durable consumer's name (default ``featurecore-<subject>``); it also
            names the position in the store, with the stream.
        dead_letter_subject: where malformed messages go (default ``featurecore.dead.<SUBJECT>``;
            give it a stream of its own to keep them).
        ack_wait_s: how long the server waits for an ack before redelivering.

    >>> source = NatsSource("nats://127.0.0.1:4222/clicks", durable="clicks-online")  # doctest: +SKIP
    """

    def __init__(self, url: str, *, durable: "str | None" = None, dead_letter_subject: "str | None" = None, ack_wait_s: float = 60.0):
        self.server, self.subject = parse_nats_url(url)
        for name, value, example in (("durable", durable, "durable='clicks-online'"), ("dead_letter_subject", dead_letter_subject, "dead_letter_subject='clicks.dead'")):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name} must be a str or None, got {type(value).__name__} {value!r}; e.g. {example}")
        if isinstance(ack_wait_s, bool) or not isinstance(ack_wait_s, (int, float)) or not 0 < ack_wait_s < float("inf"):
            raise ValidationError(f"ack_wait_s must be seconds > 0 (how long the broker waits for an ack), got {ack_wait_s!r}; e.g. ack_wait_s=60")
        clean = re.sub(r"[^A-Za-z0-9_-]", "_", self.subject)
        self.durable = durable or f"featurecore-{clean}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.durable):
            raise ValidationError(f"durable must be letters, digits, '_' or '-', got {self.durable!r}; e.g. --durable clicks-online")
        self.dead_letter_subject = dead_letter_subject or DEAD_LETTER_PREFIX + self.subject
        self.ack_wait_s = float(ack_wait_s)
        self.stream = ""
        self.identity = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="featurecore-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._max_ack_pending = 0
        self._message_bytes = _FIRST_MESSAGE_BYTES  # the mean size of the last request's messages
        self._by_seq: dict[int, Any] = {}
        self._acked = 0  # the stream sequence acknowledged last (or the position opened after)
        self._delivered = 0  # the consumer sequence of the last delivery received
        self._connect()

    async def _connection_error(self, error: Exception) -> None:
        """nats-py's report of a connection problem (it retries): one log line, no traceback."""
        logger.warning("NATS broker %s: %s: %s", self.server, type(error).__name__, error)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _call(self, coroutine: Any) -> Any:
        """``_run`` for a connected source: losing the broker (nats-py gave up reconnecting)
        becomes one FeatureStoreError naming it; the store's position is committed with the
        rows, so nothing is lost and a restart resumes after the last applied message."""
        from nats import errors

        try:
            return self._run(coroutine)
        except (errors.ConnectionClosedError, errors.NoServersError, errors.StaleConnectionError, errors.UnexpectedEOF,
                errors.ConnectionReconnectingError, errors.OutboundBufferLimitError, errors.FlushTimeoutError, ConnectionError) as error:
            raise FeatureStoreError(
                f"lost the NATS broker {self.server} ({type(error).__name__}); the stream position in the store is safe (committed "
                "with the rows): restart the consumer when the broker is back and it resumes after the last applied message"
            ) from error

    def _connect(self) -> None:
        nats = _import_nats()
        try:
            self._nc = self._run(nats.connect(self.server, connect_timeout=5, max_reconnect_attempts=3, allow_reconnect=True,
                                              error_cb=self._connection_error))
            self._js = self._nc.jetstream()
            self.stream = self._run(self._js.find_stream_name_by_subject(self.subject))
        except Exception as error:
            self.close()
            raise FeatureStoreError(
                f"cannot consume {self.subject!r} from {self.server}: {type(error).__name__}: {error}; start nats-server with "
                "-js and create a JetStream stream that captures the subject"
            ) from error
        self.identity = f"nats:{self.stream}:{self.durable}"

    def open(self, after: int, *, max_in_flight: int = 4096) -> None:
        """Point the durable consumer at ``after + 1`` (see the module docstring)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        async def repoint() -> Any:
            last = (await self._js.stream_info(self.stream)).state.last_seq
            if last < after:
                raise FeatureStoreError(
                    f"stream {self.stream!r} ends at sequence {last:,} but the store applied up to {after:,} from it: the stream "
                    "was recreated (sequences start again at 1); consume it with a new --durable name, which starts a new position"
                )
            try:
                await self._js.delete_consumer(self.stream, self.durable)
            except NotFoundError:
                pass
            config = ConsumerConfig(
                durable_name=self.durable,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after > 0 else DeliverPolicy.ALL,
                opt_start_seq=after + 1 if after > 0 else None,
                ack_policy=AckPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_ack_pending=max_in_flight,
                filter_subject=self.subject,
            )
            if self._sub is not None:
                await self._sub.unsubscribe()
            return await self._js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream, config=config)

        self._max_ack_pending = max_in_flight
        self._sub = self._run(repoint())
        self._acked, self._delivered, self._by_seq = after, 0, {}

    def fetch(self, max_messages: int, timeout_s: float) -> list[StreamMessage]:
        from nats.errors import TimeoutError as NatsTimeout

        if self._sub is None:
            raise FeatureStoreError("NatsSource.fetch before open(after); the ingest loop opens the source at its position")
        wanted = min(max_messages, self._max_ack_pending)
        messages: list[Any] = []
        while len(messages) < wanted:
            count = min(wanted - len(messages), max(1, REQUEST_BYTES // self._message_bytes))
            try:
                got = self._call(self._sub.fetch(count, timeout=timeout_s))
            except (NatsTimeout, asyncio.TimeoutError):  # nats-py raises either when nothing arrived in time
                break
            messages += got
            self._message_bytes = max(1, sum(len(m.data) for m in got) // max(1, len(got)))
            if len(got) < count:  # the stream had no more ready
                break
        metas = [m.metadata for m in messages]
        for meta in metas:
            if meta.sequence.consumer != self._delivered + 1:
                logger.warning(
                    "NATS consumer %s: deliveries %d-%d never arrived (a reconnect or a slow consumer); fetching again after "
                    "stream sequence %d", self.durable, self._delivered + 1, meta.sequence.consumer - 1, self._acked,
                )
                self.open(self._acked, max_in_flight=self._max_ack_pending)
                return []
            self._delivered = meta.sequence.consumer
        self._by_seq.update((meta.sequence.stream, m) for meta, m in zip(metas, messages))  # held until acknowledged
        return [StreamMessage(meta.sequence.stream, m.data, int(meta.timestamp.timestamp() * 1e6), meta.num_pending)
                for meta, m in zip(metas, messages)]

    def ack(self, through: int) -> None:
        held = [seq for seq in self._by_seq if seq <= through]
        if not held:
            return
        last = max(held)
        self._call(self._by_seq[last].ack())  # AckPolicy.ALL: acknowledges every message up to it
        for seq in held:
            del self._by_seq[seq]
        self._acked = last

    def dead_letter(self, message: StreamMessage, reason: str) -> None:
        from nats.js.errors import NoStreamResponseError

        headers = {
            "Featurecore-Error": _HEADER_UNSAFE.sub(" ", reason)[:1024],
            "Featurecore-Sequence": str(message.sequence),
            "Featurecore-Subject": self.subject,
            "Nats-Msg-Id": f"{self.stream}:{message.sequence}",
        }
        try:
            self._call(self._js.publish(self.dead_letter_subject, message.payload, headers=headers, timeout=5))
        except NoStreamResponseError:  # no stream keeps dead letters: core NATS, for live subscribers only
            self._call(self._nc.publish(self.dead_letter_subject, message.payload, headers=headers))
            self._call(self._nc.flush())

    def close(self) -> None:
        if self._nc is not None:
            try:
                if self._nc.is_connected:
                    self._run(self._nc.flush(timeout=5))  # the last ack leaves before the connection closes
                self._run(self._nc.close())
            except Exception as error:  # closing must not hide the error that made us close
                logger.warning("closing the NATS connection to %s: %s", self.server, error)
            self._nc = None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self._sub = None
