"""kill -9 of a real consumer process at random points, over and over: no acknowledged
message is lost and none is applied twice, in the online or the offline store.

The consumer is a process forked by tests/stream_consumer.py (so it starts in milliseconds:
the imports are done once), which opens the store as primary and runs the ingest loop; the
test keeps publishing, kills the consumer with SIGKILL after a random delay, and checks
after every kill that JetStream's acknowledged floor never passed the position committed
in the store. At the end every valid published row is in the offline history exactly
once and the online store holds each entity's newest row.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import nats
import pytest
from stream_helpers import CF, GROUP, T0_US, packed, row

from featurecore import _core
from featurecore.storage.rocksdb import column_family
from featurecore.offline.log import OfflineLog
from featurecore.registry.schema import schema_for_group
from featurecore.store import FeatureStore
from featurecore.streams.broker import LocalNatsServer, find_nats_server

pytestmark = pytest.mark.skipif(find_nats_server() is None, reason="nats-server is not installed (apt-get install nats-server)")
KILLS = int(os.environ.get("FEATURECORE_KILLS", "110"))
ENTITIES = 50


class Zygote:
    """tests/stream_consumer.py: forks consumer processes without RocksDB threads in the forking process."""

    def __init__(self, root: str, url: str, dead: str):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_consumer.py")
        self.process = subprocess.Popen([sys.executable, script, root, url, dead], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str) -> str:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the consumer zygote died on {command!r}"
        return answer

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()


def ack_floor(server: LocalNatsServer, stream: str) -> int:
    async def work() -> int:
        nc = await nats.connect(server.address)
        try:
            return (await nc.jetstream().consumer_info(stream, "killed")).ack_floor.stream_seq
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()

    return asyncio.run(work())


def test_kill_9_at_random_points_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(15)
    root = str(tmp_path / "store")
    with LocalNatsServer() as server:
        server.add_stream("killed", ["killed.rows"])
        server.add_stream("killed_dead", ["killed.dead"])
        zygote = Zygote(root, server.url("killed.rows"), "killed.dead")
        assert zygote.ask("apply") == "applied"
        expected: list[tuple[str, int, int]] = []  # (entity, feature_ts, clicks) of every valid row
        bad: list[int] = []
        n = 0

        def publish(count: int) -> None:
            nonlocal n
            payloads = []
            for _ in range(count):
                n += 1
                if n % 37 == 0:
                    payloads.append(packed(row("bad", T0_US, "not a number")))
                    bad.append(len(payloads) - 1)
                    continue
                rows = [row(f"s{(n * 7 + k) % ENTITIES}", T0_US + n * 1000 + k, n * 10 + k) for k in range(1 + n % 3)]
                expected.extend((r["entity_id"], r["feature_timestamp"], r["values"]["clicks"]) for r in rows)
                payloads.append(packed(rows if len(rows) > 1 else rows[0]))
            sequences = server.publish("killed.rows", payloads)
            dead_sequences.extend(sequences[i] for i in bad)
            bad.clear()

        dead_sequences: list[int] = []
        killed_alive = 0
        try:
            for _ in range(KILLS):
                publish(rng.randint(4, 16))
                pid = int(zygote.ask(f"run {rng.randint(1, 12)} 5.0 {rng.choice([0.0, 1.0, 60.0])}"))  # offline every batch/1 s/half-full
                time.sleep(rng.uniform(0.0, 0.15))
                os.kill(pid, signal.SIGKILL)
                killed_alive += zygote.ask(f"wait {pid}") == "signaled"
                assert ack_floor(server, "killed") <= int(zygote.ask("position"))
            assert killed_alive >= min(100, KILLS)
            # Consumers that are not killed run to the end (one stops when the stream is idle
            # for 0.5 s, which on a loaded machine can come before the end: then another runs).
            last = server.messages("killed")[-1][0]
            deadline = time.monotonic() + 60
            while True:
                assert zygote.ask("wait " + zygote.ask("run 64 0.5 1.0")) == "exit 0"
                if int(zygote.ask("position")) >= last or time.monotonic() > deadline:
                    break
            assert int(zygote.ask("position")) == last == ack_floor(server, "killed")
        finally:
            zygote.close()
        dead = server.messages("killed_dead")
        assert sorted({int(h["Featurecore-Sequence"]) for _, _, h in dead}) == dead_sequences

    with FeatureStore.open(root, preload=False) as store:
        history = OfflineLog.open(store.root, store.state, GROUP).read(["entity_id", "feature_timestamp", "clicks"]).to_pylist()
        got = sorted((r["entity_id"], r["feature_timestamp"].timestamp() * 1e6 // 1, r["clicks"]) for r in history)
        assert len(got) == len(expected)
        assert got == sorted((e, float(ts), c) for e, ts, c in expected)  # each row once: none lost, none twice
        newest = {}
        for entity, ts, clicks in expected:
            newest[entity] = max(newest.get(entity, (0, 0)), (ts, clicks))
        ids = sorted(newest)
        rows = column_family(store.db, CF).get(_core.encode_keys("default", "session", ids))
        table = _core.GroupTable.decode(schema_for_group(store.state, GROUP), rows)
        assert table.slots()[:, 0].tolist() == [float(newest[i][1]) for i in ids]
