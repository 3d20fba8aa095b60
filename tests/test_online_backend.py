"""The conformance suite of ``OnlineBackend`` (featurecore/online/backend.py).

Every implementation runs all of it: add a factory to ``BACKENDS``. A factory opens the
backend on a directory (the same directory again = a reopen, which must show every
committed spec and nothing else). The model is a plain dict per key space.
"""

from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.layout import open_database
from featurecore.online import changelog
from featurecore.online.backend import GroupWrite, OnlineBackend, RocksDBBackend, WriteBatchSpec


class Opened:
    """A backend plus what must happen to close it (its database)."""

    def __init__(self, backend: OnlineBackend, close: Callable[[], None]):
        self.backend, self._close = backend, close

    def close(self) -> None:
        self.backend.close()
        self._close()


def rocksdb(path: str) -> Opened:
    db = open_database(path)
    return Opened(RocksDBBackend(db), db.close)


BACKENDS = {"rocksdb": rocksdb}


@pytest.fixture(params=sorted(BACKENDS))
def open_backend(request, tmp_path):
    """open_backend() -> a backend on this test's directory; each call closes the previous one."""
    factory = BACKENDS[request.param]
    current: list[Opened] = []

    def open_() -> OnlineBackend:
        if current:
            current.pop().close()
        current.append(factory(str(tmp_path / "store")))
        return current[0].backend

    yield open_
    for opened in current:
        opened.close()


G1, G2 = "g/a/v1", "g/b/v1"


def entry(group: str, keys: "list[bytes] | None") -> bytes:
    return changelog.encode_entry(group, keys, 1_782_864_000_000_000)


def test_a_group_never_written_reads_as_absent(open_backend):
    backend = open_backend()
    assert backend.read_many(G1, [b"k1", b"k2"]) == [None, None]
    assert backend.read_many(G1, []) == []
    assert list(backend.scan_group(G1)) == []
    assert backend.last_sequence() == 0 and backend.changelog_after(0) == []
    assert backend.read_meta(b"nothing") is None


def test_one_commit_writes_rows_of_several_groups_changelog_and_meta(open_backend):
    backend = open_backend()
    spec = WriteBatchSpec(
        writes=(GroupWrite(G1, [b"k1", b"k2"], [b"r1", b"r2"]), GroupWrite(G2, [b"k1"], [b"other"])),
        changelog=((1, entry(G1, [b"k1", b"k2"])), (2, entry(G2, [b"k1"]))),
        meta=((b"stream/pos", b"\x00\x07"),),
    )
    backend.commit(spec)
    assert backend.read_many(G1, [b"k2", b"k1", b"k3"]) == [b"r2", b"r1", None]
    assert backend.read_many(G2, [b"k1"]) == [b"other"]
    assert [(e.sequence, e.group_cf, e.keys) for e in backend.changelog_after(0)] == [(1, G1, [b"k1", b"k2"]), (2, G2, [b"k1"])]
    assert backend.last_sequence() == 2
    assert backend.read_meta(b"stream/pos") == b"\x00\x07"
    reopened = open_backend()
    assert reopened.read_many(G1, [b"k1", b"k2"]) == [b"r1", b"r2"] and reopened.last_sequence() == 2


def test_deletes_and_later_puts_in_one_spec_apply_in_order(open_backend):
    backend = open_backend()
    backend.commit(WriteBatchSpec(writes=(GroupWrite(G1, [b"a", b"b"], [b"1", b"2"]),)))
    backend.commit(WriteBatchSpec(writes=(GroupWrite(G1, [b"a"]), GroupWrite(G1, [b"b"], [b"3"]), GroupWrite(G1, [b"b"], [b"4"]))))
    assert backend.read_many(G1, [b"a", b"b"]) == [None, b"4"]


def test_a_commit_that_fails_writes_nothing(open_backend):
    backend = open_backend()
    backend.commit(WriteBatchSpec(writes=(GroupWrite(G1, [b"a"], [b"1"]),), changelog=((1, entry(G1, [b"a"])),)))
    bad = WriteBatchSpec(
        writes=(GroupWrite(G1, [b"a", b"b"], [b"new", b"2"]), GroupWrite(G2, [b"x"], [None])),  # type: ignore[list-item]
        changelog=((2, entry(G1, [b"a", b"b"])),),
        meta=((b"pos", b"9"),),
    )
    with pytest.raises((TypeError, ValueError)):
        backend.commit(bad)
    def unchanged(current: OnlineBackend) -> None:
        assert current.read_many(G1, [b"a", b"b"]) == [b"1", None]
        assert current.read_many(G2, [b"x"]) == [None]
        assert current.last_sequence() == 1 and current.read_meta(b"pos") is None

    unchanged(backend)
    unchanged(open_backend())


def test_mismatched_keys_and_rows_are_refused_before_anything_is_written(open_backend):
    backend = open_backend()
    with pytest.raises(ValueError, match="has 2 keys but 1 rows"):
        backend.commit(WriteBatchSpec(writes=(GroupWrite(G1, [b"a", b"b"], [b"1"]),), meta=((b"pos", b"1"),)))
    assert backend.read_many(G1, [b"a"]) == [None] and backend.read_meta(b"pos") is None


def test_an_empty_spec_writes_nothing(open_backend):
    backend = open_backend()
    backend.commit(WriteBatchSpec())
    assert not WriteBatchSpec() and backend.last_sequence() == 0


def test_changelog_trim_keeps_the_newer_entries(open_backend):
    backend = open_backend()
    for sequence in range(1, 6):
        backend.commit(WriteBatchSpec(changelog=((sequence, entry(G1, [b"k"])),)))
    backend.commit(WriteBatchSpec(changelog=((6, entry(G1, None)),), trim_changelog_below=4))
    assert [e.sequence for e in backend.changelog_after(0)] == [4, 5, 6]
    assert backend.changelog_after(0)[-1].keys is None
    assert [e.sequence for e in backend.changelog_after(4, limit=1)] == [5]


KEY = st.binary(min_size=1, max_size=6)
WRITE = st.tuples(st.sampled_from([G1, G2]), st.lists(KEY, min_size=1, max_size=6, unique=True), st.booleans())


@settings(max_examples=25, deadline=None)
@given(specs=st.lists(st.lists(WRITE, min_size=1, max_size=3), min_size=1, max_size=6), chunk=st.integers(1, 5))
def test_commits_match_a_dict_oracle_and_scan_in_key_order(tmp_path_factory, specs, chunk):
    for name, factory in BACKENDS.items():
        opened = factory(str(tmp_path_factory.mktemp(name)))
        try:
            backend = opened.backend
            model: dict[str, dict[bytes, bytes]] = {G1: {}, G2: {}}
            for n, writes in enumerate(specs):
                group_writes = []
                for group, keys, put in writes:
                    rows = [b"%d:%s" % (n, key) for key in keys] if put else None
                    group_writes.append(GroupWrite(group, keys, rows))
                    for i, key in enumerate(keys):
                        if rows is None:
                            model[group].pop(key, None)
                        else:
                            model[group][key] = rows[i]
                backend.commit(WriteBatchSpec(writes=tuple(group_writes)))
            for group, expected in model.items():
                chunks = list(backend.scan_group(group, chunk_rows=chunk))
                assert all(0 < len(keys) <= chunk and len(keys) == len(rows) for keys, rows in chunks)
                scanned = [(k, r) for keys, rows in chunks for k, r in zip(keys, rows)]
                assert scanned == sorted(expected.items())
                probe = sorted(expected) + [b"\xff" * 7]
                assert backend.read_many(group, probe) == [expected.get(k) for k in probe]
        finally:
            opened.close()
