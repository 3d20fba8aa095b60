"""Bad requests to a real ``featurecore serve`` process: every answer is a 4xx with a JSON
error naming the field, never a 500, a hang or an answer a client cannot read.

Found by a sweep (/tmp/qa9/http_probe.py):
- a request or engine error (wrong count of ids, a candidate list of the wrong length, an
  unknown context value, an implausible request_time, ...) was a 400 with ``field: null``;
- ``tenant: ""`` and ``purpose: ""`` were silently read as the key's own (a typo served
  another tenant's defaults instead of being refused, as it is in process);
- a 100,000-character request_id was echoed in the X-Request-Id header: Python's
  http.client refuses a header line over 64 KiB, so the client saw no answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.server import wire
from featurecore.store import FeatureStore
from online_defs import T0, creator_frame, definitions, item_frame, user_frame
from server_helpers import ServerProcess

ITEMS = [f"i{i}" for i in range(50)]
CREATORS = [f"c{i}" for i in range(10)]
USERS = [f"u{i}" for i in range(10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening-server") / "store"
    rng = np.random.default_rng(3)
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        store.write_online("item_stats:v1", item_frame(ITEMS, rng), entity_ids=ITEMS, feature_timestamp=T0)
        store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0)
        store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0)
    proc = ServerProcess("--store", str(root), "--insecure-local", "--workers", "1", "--max-candidates", "100")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def body(n: int = 4, **overrides) -> dict:
    out = {
        "feature_set": "ranker:v1",
        "entities": {"user": "u3", "item": ITEMS[:n], "creator": CREATORS[:n]},
        "request_time": "2026-07-01T01:00:00Z",
        "context": {"hour": 5.0},
        "candidate": {"source_rank": [float(i) for i in range(n)]},
    }
    out.update(overrides)
    return out


def post(server, payload) -> tuple[int, dict, bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return server.request("POST", "/v1/features", data, timeout=20)


@pytest.mark.parametrize(
    "b, field, match",
    [
        (body(entities={}), "entities", "entities must map entity name -> id(s)"),
        (body(entities={"user": "u3", "item": ITEMS[:4], "creator": CREATORS[:3]}), "entities",
         "one id per candidate each, got counts {'item': 4, 'creator': 3}"),
        (body(entities={"user": ["u1", "u2"], "item": ITEMS[:4], "creator": CREATORS[:4]}), "entities.user",
         "entities['user'] has 2 ids"),
        (body(entities={"": "x", **body()["entities"]}), "entities", "entities names '', which is no registered entity"),
        (body(candidate={"source_rank": [1.0]}), "candidate.source_rank", "must have shape (4,)"),
        (body(candidate={"source_rank": [1.0] * 4, "zzz": [1.0] * 4}), "candidate.zzz", "is not a candidate feature"),
        (body(context={"hour": 1.0, "zzz": 2.0}), "context.zzz", "is not a context feature"),
        (body(context={"hour": 1e308}), "context.hour", "finite number within float32 range"),
        (body(request_time=1782950400), "request_time", "read as microseconds, before the earliest plausible time"),
        (body(request_time=-1), "request_time", "before the earliest plausible time"),
        (body(deadline_ms=-1), "deadline_ms", "deadline_ms must be a positive number"),
        (body(feature_set=""), "feature_set", "feature_set must be a ref like"),
        (body(tenant=""), "tenant", "tenant must be a non-empty name, or left out for the API key's own"),
        (body(purpose=""), "purpose", "purpose must be a non-empty name, or left out for the API key's own"),
        (body(request_id="r" * 100_000), "request_id", "request_id must be at most 256 characters, got 100000"),
        (b'{"feature_set": "ranker:v1"}', "entities", "missing required field `entities`"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_a_bad_request_is_a_400_naming_its_field(server, b, field, match):
    status, headers, data = post(server, b)
    error = json.loads(data)
    assert (status, error["field"]) == (400, field), error
    assert match in error["message"] and headers["content-type"] == wire.JSON


def test_a_request_id_at_the_limit_is_echoed(server):
    status, headers, _ = post(server, body(request_id="r" * 256))
    assert status == 200 and headers[wire.REQUEST_ID_HEADER] == "r" * 256


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["feature_set", "entities", "request_time", "request_id", "tenant", "privacy_mode", "purpose", "context",
          "candidate", "deadline_ms"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replaced=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=3),
       entity_ids=st.dictionaries(st.sampled_from(["user", "item", "creator"]), JSON_VALUES, max_size=3))
def test_junk_in_any_field_is_a_json_4xx_and_the_worker_lives(server, replaced, entity_ids):
    """Random JSON in up to three fields of a valid request (and in entity ids): the answer
    is 200, or a 4xx whose JSON body names the problem; never a 500."""
    payload = body(**replaced)
    if isinstance(payload.get("entities"), dict):
        payload["entities"] = {**payload["entities"], **entity_ids}
    status, headers, data = post(server, payload)
    assert status == 200 or 400 <= status < 500, data
    if status != 200:
        error = json.loads(data)
        assert error["status"] == status and error["message"] and "field" in error
        assert headers["content-type"] == wire.JSON


@pytest.mark.parametrize("request_id, match", [
    ("r" * 257, "request_id must be at most 256 characters, got 257"),
    ("r1\r\nX-Evil: 1", "request_id must be printable text"),
])
def test_the_client_refuses_a_request_id_the_server_would_refuse_before_sending(request_id, match):
    """One rule (wire.request_id_problem) on both sides: the client checks it first, so an
    unreachable server is never even tried."""
    from featurecore.client import FeatureClient
    from featurecore.errors import ValidationError
    from featurecore.serving import FeatureRequest

    with FeatureClient("http://127.0.0.1:1", api_key="k") as client:
        with pytest.raises(ValidationError, match=match):
            client.get_features(FeatureRequest("ranker:v1", {"user": "u1"}, 1_782_950_400_000_000), request_id=request_id)
