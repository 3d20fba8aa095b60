"""The native as-of search (featurecore._core.AsofJoin) against obvious pandas oracles."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore._core import AsofJoin, LatestPerKey, decimal_text_order
from featurecore.reasons import Reason


def merge_asof_reference(keys, ft, ga, ev_keys, ev_ts, ev_valid):
    """Non-strict rule with pandas.merge_asof: per (key, feature_ts) keep the latest
    (generated_at, write order), then take the greatest feature_ts <= event_ts."""
    hist = pd.DataFrame({"key": keys, "ft": ft, "ga": ga, "ref": np.arange(len(keys))})
    hist = hist.sort_values(["key", "ft", "ga", "ref"]).drop_duplicates(["key", "ft"], keep="last")
    events = pd.DataFrame({"key": ev_keys, "t": ev_ts, "pos": np.arange(len(ev_keys))})
    joined = pd.merge_asof(
        events.sort_values("t"), hist.sort_values("ft"), left_on="t", right_on="ft", by="key", direction="backward"
    ).sort_values("pos")
    refs = joined["ref"].fillna(-1).to_numpy(np.int64)
    reasons = np.where(refs >= 0, Reason.present, Reason.entity_not_found)
    reasons = np.where(ev_valid == 1, reasons, Reason.not_applicable)
    return np.where(ev_valid == 1, refs, -1), reasons.astype(np.uint8)


def brute_force_reference(keys, ft, ga, ev_keys, ev_ts, ev_valid, strict):
    refs, reasons = [], []
    for key, t, valid in zip(ev_keys, ev_ts, ev_valid):
        if not valid:
            refs.append(-1)
            reasons.append(Reason.not_applicable)
            continue
        same = [j for j in range(len(keys)) if keys[j] == key]
        eligible = [j for j in same if ft[j] <= t and (not strict or ga[j] <= t)]
        if eligible:
            refs.append(max(eligible, key=lambda j: (ft[j], ga[j], j)))
            reasons.append(Reason.present)
        else:
            refs.append(-1)
            reasons.append(Reason.entity_not_found)
    return np.array(refs, np.int64), np.array(reasons, np.uint8)


def run(keys, ft, ga, ev_keys, ev_ts, ev_valid, *, strict, chunks=(), threads=1):
    join = AsofJoin(ev_keys, ev_ts, ev_valid, strict=strict, threads=threads)
    bounds = [0, *sorted(chunks), len(keys)]
    for lo, hi in zip(bounds, bounds[1:]):
        join.add(keys[lo:hi], ft[lo:hi], ga[lo:hi], lo)
    refs, reasons, winners = join.finish()
    # winners: sorted, distinct, each used by some event
    assert np.all(np.diff(winners) > 0) and set(refs[refs >= 0].tolist()) == set(range(len(winners)))
    return np.where(refs >= 0, winners[np.maximum(refs, 0)] if len(winners) else -1, -1), reasons


small_ints = st.integers(min_value=0, max_value=6)


@st.composite
def cases(draw):
    m = draw(st.integers(0, 40))
    n = draw(st.integers(0, 30))
    keys = np.array(draw(st.lists(small_ints, min_size=m, max_size=m)), np.int64)
    # Few distinct times so ties on feature_ts and generated_at are common.
    ft = np.array(draw(st.lists(st.integers(0, 8), min_size=m, max_size=m)), np.int64)
    lag = np.array(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), np.int64)
    ev_keys = np.array(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)), np.int64)
    ev_ts = np.array(draw(st.lists(st.integers(-1, 10), min_size=n, max_size=n)), np.int64)
    ev_valid = np.array(draw(st.lists(st.sampled_from([1, 1, 1, 0]), min_size=n, max_size=n)), np.uint8)
    chunks = draw(st.lists(st.integers(0, m), max_size=3))
    return keys, ft, ft + lag, ev_keys, ev_ts, ev_valid, chunks


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from([1, 2]))
def test_non_strict_matches_merge_asof(case, threads):
    keys, ft, ga, ev_keys, ev_ts, ev_valid, chunks = case
    refs, reasons = run(keys, ft, ga, ev_keys, ev_ts, ev_valid, strict=False, chunks=chunks, threads=threads)
    want_refs, want_reasons = merge_asof_reference(keys, ft, ga, ev_keys, ev_ts, ev_valid)
    np.testing.assert_array_equal(refs, want_refs)
    np.testing.assert_array_equal(reasons, want_reasons)


@settings(max_examples=150, deadline=None)
@given(cases(), st.booleans(), st.sampled_from([1, 2]))
def test_matches_brute_force_in_both_modes(case, strict, threads):
    keys, ft, ga, ev_keys, ev_ts, ev_valid, chunks = case
    refs, reasons = run(keys, ft, ga, ev_keys, ev_ts, ev_valid, strict=strict, chunks=chunks, threads=threads)
    want_refs, want_reasons = brute_force_reference(keys, ft, ga, ev_keys, ev_ts, ev_valid, strict)
    np.testing.assert_array_equal(refs, want_refs)
    np.testing.assert_array_equal(reasons, want_reasons)


def test_strict_mode_hides_late_computed_values():
    keys = np.array([7, 7], np.int64)
    ft = np.array([100, 200], np.int64)
    ga = np.array([100, 500], np.int64)  # the second value was computed late
    ev = np.array([7], np.int64), np.array([300], np.int64)
    assert run(keys, ft, ga, *ev, None, strict=False)[0].tolist() == [1]
    assert run(keys, ft, ga, *ev, None, strict=True)[0].tolist() == [0]


def test_large_random_two_threads_equal_one_thread():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 5_000, 200_000).astype(np.int64)
    ft = rng.integers(0, 1_000, keys.size).astype(np.int64)
    ga = ft + rng.integers(0, 50, keys.size)
    ev_keys = rng.integers(0, 6_000, 100_000).astype(np.int64)
    ev_ts = rng.integers(0, 1_100, ev_keys.size).astype(np.int64)
    one = run(keys, ft, ga, ev_keys, ev_ts, None, strict=False)
    two = run(keys, ft, ga, ev_keys, ev_ts, None, strict=False, chunks=[50_000, 120_000], threads=2)
    want = merge_asof_reference(keys, ft, ga, ev_keys, ev_ts, np.ones(ev_keys.size, np.uint8))
    for got in (one, two):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(3, np.int32), np.zeros(3, np.int64)), r"event_keys must be a C-contiguous int64 array of shape \(\*,\), got int32 \(3,\)"),
        ((np.zeros(3, np.int64), np.zeros(2, np.int64)), r"event_ts must be a C-contiguous int64 array of shape \(3,\), got int64 \(2,\)"),
        ((np.zeros(4, np.int64)[::2], np.zeros(2, np.int64)), "event_keys must be a C-contiguous int64 array"),
    ],
)
def test_rejects_malformed_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        AsofJoin(*args)


def test_add_rejects_mismatched_chunk():
    join = AsofJoin(np.zeros(2, np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"generated_at must be a C-contiguous int64 array of shape \(2,\), got int64 \(1,\)"):
        join.add(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(1, np.int64))


def latest_reference(keys, ft, ga, as_of, strict):
    """Per key, the max (feature_ts, generated_at, row) among eligible rows, in pandas."""
    frame = pd.DataFrame({"key": keys, "ft": ft, "ga": ga, "ref": np.arange(len(keys))})
    eligible = frame[(frame.ft <= as_of) & ((frame.ga <= as_of) if strict else True)]
    best = eligible.sort_values(["ft", "ga", "ref"]).drop_duplicates("key", keep="last").sort_values("ref")
    return best["ref"].to_numpy(np.int64), best["key"].to_numpy(np.int64)


@settings(max_examples=150, deadline=None)
@given(cases(), st.integers(-1, 10), st.booleans())
def test_latest_per_key_matches_pandas(case, as_of, strict):
    keys, ft, ga, _, _, _, chunks = case
    latest = LatestPerKey(as_of, strict=strict)
    bounds = [0, *sorted(chunks), len(keys)]
    for lo, hi in zip(bounds, bounds[1:]):
        latest.add(keys[lo:hi], ft[lo:hi], ga[lo:hi], lo)
    refs, got_keys = latest.finish()
    want_refs, want_keys = latest_reference(keys, ft, ga, as_of, strict)
    np.testing.assert_array_equal(refs, want_refs)
    np.testing.assert_array_equal(got_keys, want_keys)


def test_latest_per_key_grows_past_many_keys():
    keys = np.arange(100_000, dtype=np.int64)[::-1].copy()
    latest = LatestPerKey(10)
    latest.add(keys, np.zeros(keys.size, np.int64), np.zeros(keys.size, np.int64))
    refs, got = latest.finish()
    assert latest.n_keys == 100_000
    np.testing.assert_array_equal(refs, np.arange(100_000))
    np.testing.assert_array_equal(got, keys)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-1000, 1000)), max_size=60))
def test_decimal_text_order_is_the_order_of_the_id_text(ids):
    ids = np.array(ids, np.int64)
    order = decimal_text_order(ids)
    assert sorted(order.tolist()) == list(range(len(ids)))
    text = [str(i) for i in ids[order].tolist()]
    assert [t.encode() for t in text] == sorted(t.encode() for t in text)
