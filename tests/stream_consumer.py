"""A consumer "zygote" for tests/test_streams_kill.py (not a test module).

Run as ``python stream_consumer.py ROOT URL DEAD_SUBJECT``: it imports featurecore once
and never opens RocksDB itself (a fork of a process with RocksDB's background threads
would inherit locks but no threads), then reads commands on stdin, one per line:

* ``run MAX_BATCH IDLE_S OFFLINE_S``: fork a consumer process (it opens the store as primary and
  ingests until the stream is idle for IDLE_S, appending offline every OFFLINE_S); prints its pid;
* ``wait PID``: reap it; prints ``signaled`` or ``exit CODE``;
* ``position``: in a forked child, print the committed stream position;
* ``apply``: in a forked child, open the store as primary and apply the test definitions.
"""

from __future__ import annotations

import os
import sys

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stream_helpers import CF, GROUP, definitions  # noqa: E402

from featurecore.layout import META_CF  # noqa: E402
from featurecore.storage.rocksdb import column_family, open_database  # noqa: E402
from featurecore.store import FeatureStore  # noqa: E402
from featurecore.streams import NatsSource  # noqa: E402
from featurecore.streams.positions import position_key  # noqa: E402


def in_child(work) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        work()
        code = 0
    finally:
        sys.stdout.flush()
        os._exit(code)


def main() -> None:
    root, url, dead = sys.argv[1:4]
    for line in sys.stdin:
        command, *args = line.split()
        if command == "run":
            max_batch, idle, offline = int(args[0]), float(args[1]), float(args[2])

            def consume() -> None:
                with FeatureStore.open(root, preload=False) as store:
                    source = NatsSource(url, durable="killed", dead_letter_subject=dead)
                    store.ingestor(GROUP, source, max_batch=max_batch, offline_interval_s=offline).run(idle_timeout_s=idle)
                    source.close()

            print(in_child(consume), flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            print("signaled" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}", flush=True)
        elif command == "position":

            def position() -> None:
                db = open_database(root, read_only=True)
                raw = column_family(db, META_CF, create=False).get(position_key(CF, "nats:killed:killed"))
                print(0 if raw is None else msgpack.unpackb(raw)["sequence"], flush=True)
                db.close()

            os.waitpid(in_child(position), 0)
        elif command == "apply":

            def apply() -> None:
                with FeatureStore.open(root) as store:
                    store.apply(definitions())

            os.waitpid(in_child(apply), 0)
            print("applied", flush=True)


if __name__ == "__main__":
    main()
