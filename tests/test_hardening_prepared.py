"""Requests and prepared handles given what a user may hand them: ids in any numpy layout
serve what the same ids as a list of str serve; a wrong type is a ValidationError naming
the argument, never an AttributeError from inside featurecore.

Found by a sweep (/tmp/qa9/prep_probe.py):
- ``context=[("hour", 3.0)]`` or ``candidate=[...]`` (a list of pairs, not a mapping) was
  ``AttributeError: 'list' object has no attribute 'items'``;
- ``deadline_ms=True`` was taken as a 1 ms deadline (bool is an int), where every other
  flag-like mistake is refused;
- complex candidate values passed the numeric check and lost their imaginary part.
"""

from __future__ import annotations

import numpy as np
import pytest

from featurecore.errors import FeatureStoreError, ValidationError
from featurecore.serving import FeatureRequest
from featurecore.store import FeatureStore
from online_defs import T0, T0_US, creator_frame, definitions, item_frame, user_frame

ITEMS = [str(i) for i in range(50)]  # integer-like ids: an int id and its text are one id
CREATORS = [f"c{i}" for i in range(10)]
USERS = [f"u{i}" for i in range(10)]
AT = T0_US + 10**6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(11)
    store = FeatureStore.open(tmp_path_factory.mktemp("hardening-prepared") / "store")
    store.apply(definitions(user_mode="resident"))
    store.write_online("item_stats:v1", item_frame(ITEMS, rng), entity_ids=ITEMS, feature_timestamp=T0)
    store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0)
    store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0)
    yield store
    store.close()


def entities(items) -> dict:
    return {"user": "u1", "item": items, "creator": ["c1"] * len(items)}


def same(a, b) -> None:
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.reasons, b.reasons)


@pytest.mark.parametrize(
    "make",
    [
        lambda ids: np.asarray(ids, dtype=np.int64).repeat(2)[::2],  # a strided view
        lambda ids: np.asarray(ids, dtype=np.int32),
        lambda ids: np.asarray(ids, dtype=np.uint8),
        lambda ids: np.asarray(ids, dtype=">i8"),  # big-endian
        lambda ids: [np.int64(i) for i in ids],
        lambda ids: np.asarray([str(i) for i in ids]),  # 'U<n>'
    ],
    ids=["strided-int64", "int32", "uint8", "big-endian", "list-of-np-int64", "unicode-array"],
)
def test_ids_in_any_accepted_layout_serve_what_a_list_of_str_serves(store, make):
    wanted = [3, 0, 49, 7, 60, 3]  # 60: unknown
    expected = store.get_features(FeatureRequest("ranker:v1", entities([str(i) for i in wanted]), AT))
    handle = store.prepare("ranker:v1")
    same(handle(entities(make(wanted)), AT), expected)
    same(store.get_features(FeatureRequest("ranker:v1", entities(make(wanted)), AT)), expected)
    out = handle.outputs(len(wanted))
    same(handle(entities(make(wanted)), AT, out=out), expected)


@pytest.mark.parametrize("argument, value, match", [
    ("context", [("hour", 3.0)], r"context must map a context feature name to a number, got list"),
    ("context", "hour=3", r"context must map a context feature name to a number, got str"),
    ("candidate", [("source_rank", [1.0, 2.0])], r"candidate must map a candidate feature name to one value per candidate, got list"),
    ("candidate", {"source_rank": np.array([1j, 2j])}, r"candidate\['source_rank'\] must be a 1-d array of real numbers"),
    ("deadline_ms", True, r"deadline_ms must be a positive number or None, got True"),
])
def test_a_request_argument_of_the_wrong_type_is_named(store, argument, value, match):
    items = ["1", "2"]
    with pytest.raises(ValidationError, match=match):
        FeatureRequest("ranker:v1", entities(items), AT, **{argument: value})
    with pytest.raises(ValidationError, match=match):
        store.prepare("ranker:v1")(entities(items), AT, **{argument: value})


def test_a_handle_of_a_closed_store_refuses_every_call(tmp_path):
    with FeatureStore.open(tmp_path / "store") as closed:
        closed.apply(definitions(user_mode="resident"))
        handle = closed.prepare("ranker:v1")
        out = handle.outputs(2)
        assert handle(entities(["1", "2"]), AT, out=out).values is out[0]
    for call in (lambda: handle(entities(["1", "2"]), AT), lambda: handle(entities(["1", "2"]), AT, out=out),
                 lambda: handle(entities(["1", "2"]), AT, context={"hour": 3.0})):
        with pytest.raises(FeatureStoreError, match="is closed; reopen it"):
            call()
