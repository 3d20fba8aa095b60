"""Entity ids are normalized in one place (online/batch.py ``normalize_ids`` and its request
fast path ``request_ids``) for writes, deletes, requests and the feature server: the same
ids name the same entity on every path. The oracle is the rule itself: an int and its
decimal text are one entity; a key is built from that text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import ValidationError
from featurecore.online.batch import normalize_ids, request_ids
from featurecore.server.protocol import HttpError, _ids
from featurecore.serving.request import FeatureRequest

NOW = 1_782_864_000_000_000
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
INT = st.integers(0, 2**63 - 1)
IDS = st.lists(st.one_of(TEXT, INT), min_size=1, max_size=12)


def oracle_keys(ids: list) -> list[bytes]:
    """Keys of ``ids`` by the rule: each id's text (an int's decimal text)."""
    return _core.encode_keys("default", "item", [str(i) for i in ids])


def keys(ids) -> list[bytes]:
    return _core.encode_keys("default", "item", ids)


def request_keys(ids) -> list[bytes]:
    return keys(FeatureRequest("home:v1", {"item": ids}, NOW).entities["item"])


@settings(max_examples=200, deadline=None)
@given(ids=IDS)
def test_writes_requests_and_the_server_name_the_same_entities(ids):
    expected = oracle_keys(ids)
    assert keys(normalize_ids(ids)) == expected  # write_online, write, delete_online
    assert keys(normalize_ids(tuple(ids))) == expected
    assert keys(_ids("item", list(ids))) == expected  # the feature server's JSON lists
    if all(isinstance(i, int) for i in ids):
        assert request_keys(np.array(ids, dtype=np.int64)) == expected
        assert request_keys(np.array(ids, dtype=np.uint64)) == expected
    if isinstance(ids[0], str) and not all(isinstance(i, str) for i in ids):
        # The request fast path leaves a list starting with text to the native key
        # builder, which refuses an int among text ids and names it.
        with pytest.raises(ValidationError, match=r"must be str, got int; pass ids as a list of str or an int64"):
            request_keys(ids)
    else:
        assert request_keys(ids) == expected
    if len(ids) == 1:
        assert request_keys(ids[0]) == expected  # one id


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(INT, min_size=1, max_size=6), row=st.integers(0, 5), missing=st.sampled_from([-1, -(2**63), ""]))
def test_a_row_without_an_entity_is_refused_in_writes_and_not_applicable_in_requests(ids, row, missing):
    row = min(row, len(ids) - 1)
    given_ids = list(ids)
    given_ids[row] = missing
    if isinstance(missing, int):
        with pytest.raises(ValidationError, match=rf"entity_ids row {row}: integer ids must be >= 0"):
            normalize_ids(np.array(given_ids, dtype=np.int64))
        got = request_keys(np.array(given_ids, dtype=np.int64))
    else:
        given_ids = [str(i) for i in ids]
        given_ids[row] = ""
        with pytest.raises(ValidationError, match=rf"entity_ids row {row}: id is empty"):
            normalize_ids(given_ids)
        got = request_keys(given_ids)
        # ints mixed with "" (a list starting with an int): their text, the empty one stays empty
        assert keys(request_ids([*ids, ""], "item")) == [*oracle_keys(ids), b""]
    assert got[row] == b""  # served not_applicable
    assert [k for i, k in enumerate(got) if i != row] == [k for i, k in enumerate(oracle_keys(ids)) if i != row]


@pytest.mark.parametrize("bad", [[1.5], [True], [None], ["a", 2.0], [b"bytes"]])
def test_ids_of_other_types_are_refused_everywhere_naming_the_row(bad):
    row = next(i for i, value in enumerate(bad) if type(value) not in (str, int))
    with pytest.raises(ValidationError, match=rf"entity_ids (row {row}: ids must be str or int|must be str or int, got dtype)"):
        normalize_ids(bad)
    with pytest.raises(HttpError, match=r"entities\['item'\]"):
        _ids("item", list(bad))
    with pytest.raises(ValidationError, match=r"entities\['item'\]|must be str, got"):
        request_keys(list(bad))


def test_an_id_too_long_for_a_key_is_refused_before_anything_is_written():
    long_id = "x" * 70_000
    with pytest.raises(ValidationError, match=r"entity_ids row 1: id has 70,000 UTF-8 bytes"):
        normalize_ids(["a", long_id])
    with pytest.raises(HttpError, match=r"entities\['item'\] row 1: id has 70,000 UTF-8 bytes"):
        _ids("item", ["a", long_id])
