"""Stream ingestion from a real NATS JetStream server into the online and offline stores.

The server is the Debian ``nats-server`` binary (``.ci/run`` installs it); the tests skip
only when it is absent.
"""

from __future__ import annotations

import gc
import os
import time


import msgpack
import numpy as np
import pandas as pd
import pytest
from stream_helpers import CF, FEATURE_SET, GROUP, SECOND_US, T0_US, definitions, packed, row

from featurecore import _core
from featurecore.errors import ValidationError
from featurecore.storage.rocksdb import column_family
from featurecore.offline.log import OfflineLog
from featurecore.registry.schema import schema_for_group
from featurecore.store import FeatureStore
from featurecore.streams import NatsSource, read_positions
from featurecore.streams.broker import LocalNatsServer, find_nats_server

pytestmark = pytest.mark.skipif(find_nats_server() is None, reason="nats-server is not installed (apt-get install nats-server)")


@pytest.fixture(scope="module")
def server():
    with LocalNatsServer() as running:
        yield running


@pytest.fixture
def subject(server, request):
    """A fresh stream per test (its name from the test's) plus a dead-letter stream."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    server.add_stream(name, [f"{name}.rows"])
    server.add_stream(f"{name}_dead", [f"{name}.dead"])
    return name


@pytest.fixture
def store(tmp_path):
    with FeatureStore.open(tmp_path / "store") as opened:
        opened.apply(definitions())
        yield opened


def ingest(store, server, subject, **kw):
    source = NatsSource(server.url(f"{subject}.rows"), durable="test", dead_letter_subject=f"{subject}.dead")
    try:
        return store.ingestor(GROUP, source, **kw), source
    except BaseException:
        source.close()
        raise


def drain(store, server, subject, **kw):
    ingestor, source = ingest(store, server, subject, **kw)
    try:
        ingestor.run(idle_timeout_s=0.3)
        return ingestor.stats
    finally:
        source.close()


def online_rows(store, ids, tenant="default"):
    """(clicks, dwell, status) of each id's online row."""
    rows = column_family(store.db, CF).get(_core.encode_keys(tenant, "session", ids))
    table = _core.GroupTable.decode(schema_for_group(store.state, GROUP), rows)
    slots = table.slots()
    return slots[:, 0].tolist(), table.status().tolist()


def offline_frame(store):
    return OfflineLog.open(store.root, store.state, GROUP).read().to_pandas().sort_values(["entity_id", "feature_timestamp"])


def test_stream_rows_are_served_and_joined_exactly_as_written(store, server, subject, tmp_path):
    rows = [
        row("s1", T0_US, 1), row("s2", T0_US, 2, kind="sport"),
        [row("s1", T0_US + SECOND_US, 3), row("s3", T0_US, 4, dwell=None)],  # a list of rows, a null cell
        row("s2", T0_US + 2 * SECOND_US, 5, generated=T0_US + 3 * SECOND_US),
    ]
    payloads = [packed(r) for r in rows[:2]] + [packed(rows[2], as_json=True), packed(rows[3])]
    sequences = server.publish(f"{subject}.rows", payloads)
    stats = drain(store, server, subject)
    assert (stats.sequence, stats.messages, stats.rows, stats.dead_letters) == (sequences[-1], 4, 5, 0)
    clicks, status = online_rows(store, ["s1", "s2", "s3", "s9"])
    assert clicks[:3] == [3.0, 5.0, 4.0] and status == [0, 0, 0, 6]

    # The oracle: the same rows through write() into another store.
    flat = [r for item in rows for r in (item if isinstance(item, list) else [item])]
    with FeatureStore.open(tmp_path / "oracle") as oracle:
        oracle.apply(definitions())
        frame = pd.DataFrame([{**r["values"], "id": r["entity_id"], "ts": r["feature_timestamp"],
                               "ga": r.get("generated_at", r["feature_timestamp"])} for r in flat])
        for _, one in frame.iterrows():  # one write per message row keeps the write order
            oracle.write(GROUP, {k: [one[k]] for k in ("clicks", "dwell", "last_kind")}, entity_ids=[one["id"]],
                         feature_timestamp=int(one["ts"]), generated_at=int(one["ga"]))
        events = pd.DataFrame({"session_id": ["s1", "s1", "s2", "s3"],
                               "event_timestamp": pd.to_datetime([T0_US, T0_US + 5 * SECOND_US, T0_US + SECOND_US, T0_US], unit="us", utc=True)})
        got = store.training_set(events, FEATURE_SET).to_pandas()
        want = oracle.training_set(events, FEATURE_SET).to_pandas()
        pd.testing.assert_frame_equal(got, want)
        assert got["clicks:v1"].tolist() == [1.0, 3.0, 2.0, 4.0]
        assert online_rows(oracle, ["s1", "s2", "s3"])[0] == clicks[:3]


def test_malformed_messages_go_to_the_dead_letter_subject_and_the_stream_goes_on(store, server, subject):
    payloads = [
        packed(row("s1", T0_US, 1)),
        b"\xc1 not msgpack",
        packed({"entity_id": "s2", "values": {}}),  # no feature_timestamp
        packed(row("s3", T0_US, "many")),  # an int64 feature given text: refused by write's validator
        packed(row("s4", 1_700_000_000, 1)),  # seconds, not microseconds
        packed(row("s5", T0_US, 5)),
    ]
    sequences = server.publish(f"{subject}.rows", payloads)
    stats = drain(store, server, subject, max_batch=8)
    assert (stats.sequence, stats.rows, stats.dead_letters) == (sequences[-1], 2, 4)
    assert online_rows(store, ["s1", "s3", "s5"])[1] == [0, 6, 0]
    dead = server.messages(f"{subject}_dead")
    assert [int(h["Featurecore-Sequence"]) for _, _, h in dead] == sequences[1:5]
    assert [payload for _, payload, _ in dead] == payloads[1:5]
    reasons = [h["Featurecore-Error"] for _, _, h in dead]
    assert "neither msgpack nor JSON" in reasons[0]
    assert "missing keys ['feature_timestamp']" in reasons[1]
    with pytest.raises(ValidationError) as written:
        store.write(GROUP, {"clicks": ["many"], "dwell": [1.5], "last_kind": ["news"]}, entity_ids=["s3"], feature_timestamp=T0_US)
    assert reasons[2] == str(written.value)  # the very message write() gives
    assert "feature_timestamp" in reasons[3] and "seconds" in reasons[3]


def test_a_late_message_reaches_the_history_but_never_overwrites_a_newer_online_row(store, server, subject):
    server.publish(f"{subject}.rows", [packed(row("s1", T0_US + 10 * SECOND_US, 7))])
    drain(store, server, subject)
    server.publish(f"{subject}.rows", [packed(row("s1", T0_US, 1))])  # older feature_timestamp, published later
    stats = drain(store, server, subject)
    assert stats.skipped_older == 1
    assert online_rows(store, ["s1"])[0] == [7.0]
    assert offline_frame(store)["clicks"].tolist() == [1, 7]


def test_a_restart_resumes_after_the_committed_position(store, server, subject):
    sequences = server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(10)])
    ingestor, source = ingest(store, server, subject, max_batch=4)
    try:
        ingestor.step()
        assert ingestor.position == sequences[3]
    finally:
        source.close()
    stats = drain(store, server, subject, max_batch=4)
    assert (stats.sequence, stats.messages) == (sequences[-1], 10)
    assert sorted(offline_frame(store)["clicks"].tolist()) == list(range(10))
    (position,) = read_positions(store)
    assert (position["group_cf"], position["source"], position["sequence"]) == (CF, f"nats:{subject}:test", sequences[-1])


def test_a_crash_in_the_online_commit_neither_loses_nor_duplicates(store, server, subject, monkeypatch):
    sequences = server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(6)])
    ingestor, source = ingest(store, server, subject, max_batch=3)
    try:
        ingestor.step()
        def crash(*args, **kwargs):
            raise KeyboardInterrupt("killed in the online commit")
        monkeypatch.setattr(store.writer, "commit", crash)
        with pytest.raises(KeyboardInterrupt):
            ingestor.step()  # 4-6 are in neither store
        monkeypatch.undo()
        assert ingestor.position == sequences[2]  # the stored position, so a retry applies 4-6 online
    finally:
        source.close()
    assert len(offline_frame(store)) == 3
    assert online_rows(store, ["s4"])[1] == [6]
    stats = drain(store, server, subject, max_batch=3)
    assert stats.sequence == sequences[-1]
    assert sorted(offline_frame(store)["clicks"].tolist()) == list(range(6))  # no duplicate
    assert online_rows(store, [f"s{i}" for i in range(6)])[0] == [float(i) for i in range(6)]


def test_a_crash_before_the_pending_offline_append_neither_loses_nor_duplicates(store, server, subject, monkeypatch):
    sequences = server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(6)])
    ingestor, source = ingest(store, server, subject, max_batch=3)
    try:
        ingestor.step()
        monkeypatch.setattr(ingestor, "_append_offline", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt("killed before the offline append")))
        with pytest.raises(KeyboardInterrupt):
            ingestor.step()  # 4-6 online, not offline
        monkeypatch.undo()
        assert (ingestor.position, ingestor.offline_position) == (sequences[-1], sequences[2])
    finally:
        source.close()
    del ingestor  # the consumer is gone, with its pending rows
    gc.collect()
    assert len(offline_frame(store)) == 3
    assert online_rows(store, ["s3", "s4", "s5"])[0] == [3.0, 4.0, 5.0]
    # While the consumer is down, a bulk materialization rebuilds online from the offline
    # table, which lacks 4-6; the restart appends them offline once and restores them online.
    store.materialize(GROUP)
    assert online_rows(store, ["s4"])[1] == [6]
    stats = drain(store, server, subject, max_batch=3)
    assert (stats.sequence, stats.messages) == (sequences[-1], 6)  # 4-6 were counted once
    assert sorted(offline_frame(store)["clicks"].tolist()) == list(range(6))
    assert online_rows(store, [f"s{i}" for i in range(6)])[0] == [float(i) for i in range(6)]


def test_offline_trails_online_by_the_interval_and_acknowledges_only_what_both_hold(store, server, subject):
    sequences = server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(5)])
    from prometheus_client import CollectorRegistry
    from featurecore.streams.metrics import IngestExporter
    from featurecore.streams.positions import offline_position

    ingestor, source = ingest(store, server, subject, max_batch=100, offline_interval_s=0.5)
    registry = CollectorRegistry()
    registry.register(IngestExporter([ingestor]))
    labels = {"group": GROUP, "source": f"nats:{subject}:test"}

    def positions():  # Prometheus (online, offline) and what `featurecore monitor` reads (online record, Delta txn)
        (record,) = read_positions(store)
        return ((registry.get_sample_value("featurecore_ingest_position", labels), registry.get_sample_value("featurecore_ingest_offline_position", labels)),
                (record["sequence"], offline_position(store.root, store.state, record)))

    try:
        ingestor.step()
        assert online_rows(store, [f"s{i}" for i in range(5)])[0] == [float(i) for i in range(5)]  # servable now
        assert (ingestor.position, ingestor.offline_position) == (sequences[-1], -1)
        assert positions() == ((sequences[-1], 0), (sequences[-1], 0))
        assert ack_floor(server, subject) == 0  # offline does not hold them: not acknowledged
        time.sleep(0.5)
        assert ingestor.step().offline_rows == 5  # nothing new arrived; the pending rows were due
        assert ingestor.offline_position == sequences[-1] == ack_floor(server, subject)
        assert positions() == ((sequences[-1], sequences[-1]), (sequences[-1], sequences[-1]))
        assert sorted(offline_frame(store)["clicks"].tolist()) == list(range(5))
    finally:
        source.close()


def test_a_bulk_materialization_during_ingestion_keeps_the_rows_pending_offline(store, server, subject):
    store.write(GROUP, {"clicks": [0, 0], "dwell": [0.5, 0.5], "last_kind": ["news", "news"]}, entity_ids=["s1", "s2"], feature_timestamp=T0_US)
    server.publish(f"{subject}.rows", [packed(row("s1", T0_US + SECOND_US, 7))])
    ingestor, source = ingest(store, server, subject, offline_interval_s=3600)
    try:
        ingestor.step()
        assert len(offline_frame(store)) == 2  # s1's stream row waits for its offline append
        store.materialize(GROUP)  # from the offline table: s1 = 0, then the pending row again
        assert online_rows(store, ["s1", "s2"])[0] == [7.0, 0.0]
        assert ingestor.flush() == 1
    finally:
        source.close()
    assert sorted(offline_frame(store)["clicks"].tolist()) == [0, 0, 7]


def test_a_trickling_stream_is_applied_in_micro_batches_a_period_apart(store, server, subject):
    from featurecore.streams.ingest import BATCH_PERIOD_S

    server.publish(f"{subject}.rows", [packed(row("s1", T0_US, 1))])
    ingestor, source = ingest(store, server, subject)
    try:
        started = time.monotonic()
        ingestor.step()  # one message of the max_batch asked for: the next fetch waits
        server.publish(f"{subject}.rows", [packed(row("s2", T0_US, 2))])
        ingestor.step()
        assert time.monotonic() - started >= BATCH_PERIOD_S
        assert (ingestor.stats.batches, ingestor.stats.messages) == (2, 2)
    finally:
        source.close()


def test_lower_priority_lowers_every_thread_and_the_threads_started_after_it():
    import subprocess
    import sys

    script = """
import os, threading
from featurecore.streams.priority import lower_priority
def nices():
    return sorted({int(open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()[16]) for t in os.listdir("/proc/self/task")})
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
base = os.getpriority(os.PRIO_PROCESS, 0)
print(lower_priority(3), base)
after = threading.Thread(target=stop.wait); after.start()
print(nices())
stop.set()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    changed, base = map(int, result.stdout.split("\n")[0].split())
    assert changed >= 2  # the main thread and the one already running
    assert result.stdout.split("\n")[1] == f"[{min(19, base + 3)}]"  # every thread, the later one too


def test_lower_priority_refuses_what_is_not_a_niceness():
    from featurecore.streams.priority import lower_priority

    for bad in (-1, 20, True, 2.5, "10"):
        with pytest.raises(ValidationError, match="nice must be an int from 0"):
            lower_priority(bad)
    assert lower_priority(0) == 0


def thread_niceness(pid):
    """The set of nice values of process ``pid``'s threads."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                found.add(int(f.read().rsplit(")", 1)[1].split()[16]))  # field 19: nice
        except (FileNotFoundError, ProcessLookupError):  # the thread ended after listdir
            continue
    return found


def ack_floor(server, subject):
    async def work(nc, js):
        return (await js.consumer_info(subject, "test")).ack_floor.stream_seq

    return server._call(work)


def test_the_position_is_committed_in_the_same_write_batch_as_the_rows(store, server, subject):
    sequences = server.publish(f"{subject}.rows", [packed(row("s1", T0_US, 1))])
    drain(store, server, subject)
    record = msgpack.unpackb(column_family(store.db, "meta").get(b"stream/" + f"{CF}/nats:{subject}:test".encode()))
    assert record["sequence"] == sequences[0]
    assert store.writer.sequence == 1  # one changelog entry: the rows and the position were one commit


def test_a_micro_batch_larger_than_the_brokers_client_buffer_arrives_whole(server, subject):
    """nats-server drops a client with more than 64 MiB waiting to be written to it (a slow
    consumer); its unacknowledged messages then come back only after ack_wait (60 s). A
    micro-batch of 2,000 messages of 60 KB (120 MB) is fetched in requests of at most 8 MiB,
    and the source's event loop keeps reading the socket while a batch is applied."""
    sequences = server.publish(f"{subject}.rows", [bytes([i % 251]) * 60_000 for i in range(2_000)])
    source = NatsSource(server.url(f"{subject}.rows"), durable="big")
    try:
        source.open(0, max_in_flight=2_000)
        got, deadline = [], time.monotonic() + 30
        while len(got) < len(sequences) and time.monotonic() < deadline:
            batch = source.fetch(2_000, timeout_s=0.1)
            if batch:
                time.sleep(0.5)  # applying it: the source's loop keeps reading meanwhile
                source.ack(batch[-1].sequence)
            got += batch
        assert [m.sequence for m in got] == sequences
        assert all(m.payload == bytes([i % 251]) * 60_000 for i, m in enumerate(got))
    finally:
        source.close()
    assert "Slow Consumer" not in server.log()


def test_deliveries_lost_in_transit_are_fetched_again_not_skipped(server, subject, caplog):
    """A delivery lost on the way (a reconnect, a slow consumer) is followed by later ones;
    acknowledging those (AckPolicy.ALL) would acknowledge it unapplied. Here the first three
    deliveries are taken off the source's subscription behind its back: the source sees the
    consumer sequence jump, re-points after its last acknowledged message and fetches again."""
    sequences = server.publish(f"{subject}.rows", [b"m%d" % i for i in range(10)])
    source = NatsSource(server.url(f"{subject}.rows"), durable="lossy")
    try:
        source.open(0, max_in_flight=100)
        first = source.fetch(2, timeout_s=2.0)
        source.ack(first[-1].sequence)
        lost = source._run(source._sub.fetch(3, timeout=2.0))  # delivered, never seen by the source
        assert [m.metadata.sequence.stream for m in lost] == sequences[2:5]
        got = list(first)
        deadline = time.monotonic() + 10
        while len(got) < len(sequences) and time.monotonic() < deadline:
            batch = source.fetch(100, timeout_s=0.5)
            if batch:
                source.ack(batch[-1].sequence)
            got += batch
        assert [m.sequence for m in got] == sequences
        assert "deliveries 3-5 never arrived" in caplog.text
    finally:
        source.close()


def test_bad_arguments_name_the_fix(store, server, subject):
    with pytest.raises(ValidationError, match="nats://HOST:PORT/SUBJECT"):
        NatsSource("http://localhost/x")
    with pytest.raises(ValidationError, match="max_batch must be a positive int"):
        ingest(store, server, subject, max_batch=0)
    url = server.url(f"{subject}.rows")
    with pytest.raises(ValidationError, match=r"durable must be a str or None, got int 5; e.g. durable='clicks-online'"):
        store.ingestor(GROUP, url, durable=5)
    with pytest.raises(ValidationError, match="dead_letter_subject must be a str or None, got bytes"):
        store.ingestor(GROUP, url, dead_letter_subject=b"dead")
    with pytest.raises(ValidationError, match="ack_wait_s must be seconds > 0"):
        NatsSource(url, ack_wait_s=0)


def test_lag_throughput_and_freshness_metrics_move(store, server, subject):
    from prometheus_client import CollectorRegistry
    from featurecore.streams.metrics import IngestExporter

    server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(20)] + [b"junk"])
    ingestor, source = ingest(store, server, subject, max_batch=5)
    registry = CollectorRegistry()
    registry.register(IngestExporter([ingestor]))
    labels = {"group": GROUP, "source": f"nats:{subject}:test"}

    def metric(name):
        return registry.get_sample_value(name, labels)

    try:
        ingestor.step()
        assert metric("featurecore_ingest_lag_messages") == 16
        assert metric("featurecore_ingest_lag_seconds") > 0
        assert metric("featurecore_ingest_freshness_seconds_count") == 5
        ingestor.run(idle_timeout_s=0.3)
    finally:
        source.close()
    assert metric("featurecore_ingest_lag_messages") == 0 and metric("featurecore_ingest_lag_seconds") == 0
    assert metric("featurecore_ingest_messages_total") == 21 and metric("featurecore_ingest_rows_total") == 20
    assert metric("featurecore_ingest_dead_letters_total") == 1
    assert metric("featurecore_ingest_freshness_seconds_count") == 21
    assert 0 < metric("featurecore_ingest_freshness_seconds_sum") / 21 < 30
    assert metric("featurecore_ingest_rows_per_second") > 0
    (record,) = read_positions(store)  # what `featurecore monitor` shows
    assert (record["rows"], record["dead_letters"], record["lag_messages"]) == (20, 1, 0)
    assert record["freshness_p99_s"] > 0


def test_the_cli_consumer_serves_metrics_stops_gracefully_on_sigterm_and_monitor_shows_it(store, server, subject):
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    sequences = server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(50)])
    root = store.root
    store.close()  # the CLI process opens it as primary
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "featurecore.cli", "ingest", GROUP, "--from", server.url(f"{subject}.rows"), "--durable", "cli",
         "--dead-letter", f"{subject}.dead", "--max-batch", "8", "--metrics-port", str(port), "--store", root],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        scraped = ""
        while time.monotonic() < deadline and f'featurecore_ingest_position{{group="{GROUP}",source="nats:{subject}:cli"}} {float(sequences[-1])}' not in scraped:
            time.sleep(0.2)
            try:
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
        assert "featurecore_ingest_freshness_seconds_bucket" in scraped
        assert f'featurecore_ingest_rows_total{{group="{GROUP}",source="nats:{subject}:cli"}} 50.0' in scraped
        # `featurecore ingest` runs below serving's priority by default (--nice 10), every thread of it
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert thread_niceness(process.pid) == {min(19, own + 10)}
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"stopped at sequence {sequences[-1]:,}: 50 messages, 50 rows" in out
    with FeatureStore.open(root, mode="read_only") as reopened:
        assert online_rows(reopened, ["s0", "s49"])[1] == [0, 0]
    report = subprocess.run([sys.executable, "-m", "featurecore.cli", "monitor", "--store", root], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "streams" in report.stdout and f"nats:{subject}:cli" in report.stdout
    header, line = report.stdout.split("streams (position: online, as last reported by each consumer; offline: its Delta transaction)\n")[1].splitlines()[:2]
    assert header.split()[:6] == ["GROUP", "SOURCE", "POSITION", "OFFLINE", "POS", "LAG"]
    assert line.split()[2:4] == [f"{sequences[-1]:,}"] * 2  # SIGTERM appended the pending rows offline too


def test_a_broker_that_dies_under_the_cli_consumer_ends_it_with_one_line_naming_the_broker(store, subject):
    import subprocess
    import sys

    root = store.root
    store.close()  # the CLI process opens it as primary
    with LocalNatsServer() as broker:  # its own server: this test kills it
        broker.add_stream(subject, [f"{subject}.rows"])
        sequences = broker.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(20)])
        process = subprocess.Popen(
            [sys.executable, "-m", "featurecore.cli", "ingest", GROUP, "--from", broker.url(f"{subject}.rows"), "--durable", "cli",
             "--max-batch", "8", "--store", root],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:  # until all 20 are applied and acknowledged
                with FeatureStore.open(root, mode="read_only", preload=False) as reader:
                    if [p["sequence"] for p in read_positions(reader)] == [sequences[-1]]:
                        break
                time.sleep(0.2)
            broker.process.kill()
            broker.process.wait()
            out, err = process.communicate(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 1, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("featurecore ingest: error: lost the NATS broker nats://127.0.0.1:") and "position in the store is safe" in last
    with FeatureStore.open(root, mode="read_only") as reopened:
        assert [p["sequence"] for p in read_positions(reopened)] == [sequences[-1]]
        assert online_rows(reopened, ["s0", "s19"])[1] == [0, 0]


def test_hybrid_a_bulk_materialization_as_of_a_time_keeps_the_stream_deltas_after_it(store, server, subject):
    # The batch base: s1 and s2 as of T0.
    store.write(GROUP, {"clicks": [1, 2], "dwell": [0.5, 0.5], "last_kind": ["news", "news"]}, entity_ids=["s1", "s2"], feature_timestamp=T0_US)
    # Stream deltas: s1 after the base's as-of time, s3 before it, s2 long after.
    server.publish(f"{subject}.rows", [packed(row("s1", T0_US + 10 * SECOND_US, 7)), packed(row("s3", T0_US + SECOND_US, 3)),
                                       packed(row("s2", T0_US + 3600 * SECOND_US, 9))])
    drain(store, server, subject)
    summaries = store.materialize(GROUP, as_of=T0_US + 5 * SECOND_US)
    assert [s.mode for s in summaries] == ["bulk", "incremental"]
    assert online_rows(store, ["s1", "s2", "s3"])[0] == [7.0, 9.0, 3.0]  # base + every delta newer than as_of
    # A group no stream feeds is rebuilt exactly as of the time (repair, rollback).
    with FeatureStore.open(store.root + "-plain") as plain:
        plain.apply(definitions())
        plain.write(GROUP, {"clicks": [1, 7], "dwell": [0.5, 0.5], "last_kind": ["news", "news"]}, entity_ids=["s1", "s1"],
                    feature_timestamp=[T0_US, T0_US + 10 * SECOND_US])
        assert [s.mode for s in plain.materialize(GROUP, as_of=T0_US + 5 * SECOND_US)] == ["bulk"]
        assert online_rows(plain, ["s1"])[0] == [1.0]


def test_hybrid_no_delta_is_lost_while_materializing_during_ingestion(store, server, subject):
    import threading

    store.write(GROUP, {"clicks": [0] * 20, "dwell": [0.5] * 20, "last_kind": ["news"] * 20}, entity_ids=[f"s{i}" for i in range(20)],
                feature_timestamp=T0_US)
    stop = threading.Event()
    source = NatsSource(server.url(f"{subject}.rows"), durable="test", dead_letter_subject=f"{subject}.dead")
    ingestor = store.ingestor(GROUP, source, max_batch=4)
    consumer = threading.Thread(target=ingestor.run, args=(stop,))
    consumer.start()
    try:
        for k in range(1, 6):
            server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US + k * SECOND_US, 100 * k + i)) for i in range(20)])
            store.materialize(GROUP, as_of=T0_US)
        deadline = time.monotonic() + 20
        while ingestor.stats.messages < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        consumer.join()
        source.close()
    store.materialize(GROUP, as_of=T0_US)
    assert online_rows(store, [f"s{i}" for i in range(20)])[0] == [500.0 + i for i in range(20)]


def test_a_recreated_stream_is_refused_instead_of_silently_skipped(store, server, subject):
    from featurecore.errors import FeatureStoreError

    server.publish(f"{subject}.rows", [packed(row("s1", T0_US, 1)), packed(row("s2", T0_US, 2))])
    drain(store, server, subject)
    server._call(lambda nc, js: js.purge_stream(subject))  # keeps the sequence: fine
    server.publish(f"{subject}.rows", [packed(row("s3", T0_US, 3))])
    assert drain(store, server, subject).rows == 3
    server._call(lambda nc, js: js.delete_stream(subject))
    server.add_stream(subject, [f"{subject}.rows"])
    server.publish(f"{subject}.rows", [packed(row("s4", T0_US, 4))])
    with pytest.raises(FeatureStoreError, match="was recreated"):
        drain(store, server, subject)


def test_a_new_snapshot_generation_keeps_the_stream_deltas(store, server, subject):
    """A generation is built from RocksDB under the commit lock and stamped with its changelog
    sequence; the stream's commits after it reach serving through the overlay (changelog), in
    this process and in a secondary that maps the generation."""
    server.publish(f"{subject}.rows", [packed(row(f"s{i}", T0_US, i)) for i in range(5)])
    ingestor, source = ingest(store, server, subject, max_batch=2)
    try:
        ingestor.run(idle_timeout_s=0.3)
        store.snapshots.publish(store.group_schema(GROUP), force=True)
        server.publish(f"{subject}.rows", [packed(row("s1", T0_US + SECOND_US, 100)), packed(row("s9", T0_US, 9))])
        ingestor.run(idle_timeout_s=0.3)
    finally:
        source.close()

    def served(opened, entity):
        matrix = opened.get_features(features=["clicks:v1"], entities={"session": entity}, request_time=T0_US + 2 * SECOND_US)
        return float(matrix.values[0, 0])

    with FeatureStore.open(store.root, mode="secondary") as secondary:
        for opened in (store, secondary):
            assert [served(opened, e) for e in ("s0", "s1", "s4", "s9")] == [0.0, 100.0, 4.0, 9.0]
