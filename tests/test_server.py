"""The feature server as users run it: a real ``featurecore serve`` process (2 workers,
RocksDB secondaries) on a free loopback port, next to the primary that writes."""

from __future__ import annotations

import hmac
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from featurecore.cli import main
from featurecore.client import FeatureClient, decode_json
from featurecore.errors import AccessDeniedError, FeatureStoreError, FeatureUnavailableError, NotFoundError, ValidationError
from featurecore.registry import FeatureGroup, FeatureSet
from featurecore.serving import FeatureRequest
from featurecore.server import auth as auth_module
from featurecore.server import wire
from featurecore.server.auth import ApiKey, AuthTable, hash_key
from featurecore.store import FeatureStore
from online_defs import T0, T0_US, HOUR_US, _feature, creator_frame, definitions, item_frame, policy, user_frame
from server_helpers import ServerProcess

KEY_A = "fck_test_key_ranker_a"  # tenant default, purposes ranking + analytics
KEY_B = "fck_test_key_other_b"  # tenant acme, purpose ranking
ITEMS = [f"i{i}" for i in range(200)]
CREATORS = [f"c{i}" for i in range(10)]
USERS = [f"u{i}" for i in range(10)]
LIVE = _feature("live_ctr", "item", "float32", "public_catalog", "item_live", default_policy=policy(timeout="fail"))


def extra_definitions() -> list:
    """A direct group whose feature fails on timeout, and the feature set reading it."""
    group = FeatureGroup("item_live", 1, "item", (LIVE.ref,), 3_600.0, "direct", owner="ranking-team")
    return [LIVE, group, FeatureSet("strict", 1, (LIVE.ref,), owner="ranking-team")]


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    root = tmp_path_factory.mktemp("server") / "store"
    rng = np.random.default_rng(7)
    with FeatureStore.open(root) as store:
        store.apply(definitions() + extra_definitions())
        store.write_online("item_stats:v1", item_frame(ITEMS, rng, null_share=0.1), entity_ids=ITEMS, feature_timestamp=T0)
        store.write_online("creator_stats:v1", creator_frame(CREATORS, rng), entity_ids=CREATORS, feature_timestamp=T0)
        store.write_online("user_profile:v1", user_frame(USERS, rng), entity_ids=USERS, feature_timestamp=T0)
        store.write_online("item_live:v1", {"live_ctr": rng.random(len(ITEMS))}, entity_ids=ITEMS, feature_timestamp=T0)
        store.build_generations()  # as a served store has them: the server's workers map these files
        yield store


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [
        {"caller": "ranker-a", "tenant": "default", "purposes": ["ranking", "analytics"], "sha256": hash_key(KEY_A)},
        {"caller": "other-b", "tenant": "acme", "purposes": ["ranking"], "sha256": hash_key(KEY_B)},
    ]}))
    return path


@pytest.fixture(scope="module")
def server(primary, auth_file):
    proc = ServerProcess("--store", primary.root, "--workers", "2", "--auth", str(auth_file), "--refresh-interval", "0.2",
                         "--max-candidates", "1000")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def body(n: int = 40, **overrides) -> dict:
    items = [ITEMS[(i * 7) % len(ITEMS)] for i in range(n - 2)] + ["unknown-1", ""]
    out = {
        "request_id": "req_001",
        "feature_set": "ranker:v1",
        "entities": {"user": "u3", "item": items, "creator": [CREATORS[i % 10] for i in range(n)]},
        "request_time": "2026-07-01T01:00:00Z",
        "context": {"hour": 5.0},
        "candidate": {"source_rank": [float(i) for i in range(n)]},
    }
    out.update(overrides)
    return out


def in_process(primary: FeatureStore, b: dict):
    return primary.get_features(FeatureRequest(
        b["feature_set"], b["entities"], T0_US + HOUR_US, context=b.get("context", {}),
        candidate={k: np.array(v) for k, v in b.get("candidate", {}).items()},
    ))


def key(k: str = KEY_A) -> dict:
    return {"Authorization": f"Bearer {k}"}


def post(server: ServerProcess, b, *, headers: dict | None = None, query: str = "") -> tuple[int, dict, bytes]:
    return server.request("POST", "/v1/features" + query, b, {**key(), **(headers or {})})


def error_of(status_headers_body) -> dict:
    return json.loads(status_headers_body[2])


# ------------------------------------------------------------------------------------ forms


@pytest.mark.parametrize("fmt", ["binary", "arrow", "json"])
def test_every_form_decodes_to_the_matrix_of_get_features(server, primary, fmt):
    b = body()
    expected = in_process(primary, b)
    request = FeatureRequest(b["feature_set"], b["entities"], T0_US + HOUR_US, context=b["context"],
                             candidate={"source_rank": np.array(b["candidate"]["source_rank"])})
    with FeatureClient(f"http://127.0.0.1:{server.port}", api_key=KEY_A, format=fmt) as client:
        got = client.get_features(request)
    assert got.columns == expected.columns
    np.testing.assert_array_equal(got.values, expected.values)  # NaN == NaN here
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    assert list(got.row_ids) == b["entities"]["item"] and got.row_entity == "item"
    assert got.diagnostics["missing_count"] == expected.diagnostics["missing_count"]


def test_missing_request_values_reach_the_server_as_they_do_in_process(server, primary):
    """NaN in context/candidate means 'missing' in process; the client sent it as the JSON
    literal NaN, which the server refused as 'not valid JSON'. JSON null is NaN now."""
    b = body(n=4)
    b["context"], b["candidate"] = {"hour": float("nan")}, {"source_rank": [1.0, float("nan"), 3.0, float("nan")]}
    expected = in_process(primary, b)
    request = FeatureRequest(b["feature_set"], b["entities"], T0_US + HOUR_US, context=b["context"],
                             candidate={"source_rank": np.array(b["candidate"]["source_rank"])})
    with FeatureClient(f"http://127.0.0.1:{server.port}", api_key=KEY_A, format="json") as client:
        got = client.get_features(request)
    np.testing.assert_array_equal(got.values, expected.values)  # NaN == NaN here
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    nulls = dict(b, context={"hour": None}, candidate={"source_rank": [1.0, None, 3.0, None]})
    np.testing.assert_array_equal(decode_json(post(server, nulls)[2]).values, expected.values)


def test_client_mistakes_and_an_unreachable_server_are_featurecore_errors(server):
    request = FeatureRequest("ranker:v1", {"user": "u1", "item": ["i1"], "creator": ["c1"]}, T0_US + HOUR_US)
    with FeatureClient(f"http://127.0.0.1:{server.port}", api_key=KEY_A) as client:
        with pytest.raises(ValidationError, match=r"format must be one of \['binary', 'arrow', 'json'\], got 'csv'"):
            client.get_features(request, format="csv")
        with pytest.raises(ValidationError, match=r"get_features takes a FeatureRequest, got dict"):
            client.get_features({"feature_set": "ranker:v1"})
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with FeatureClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(FeatureUnavailableError, match=rf"cannot reach the feature server at http://127.0.0.1:{port}"):
            client.get_features(request)


def test_columnar_json_and_the_binary_layout_as_the_readme_describes_them(server, primary):
    b = body()
    expected = in_process(primary, b)
    status, _, data = post(server, b, query="?layout=columnar")
    assert status == 200
    columnar = json.loads(data)
    assert set(columnar) == {"feature_set", "request_id", "columns", "rows", "values", "reasons", "diagnostics"}
    assert columnar["request_id"] == "req_001" and columnar["rows"][0] == f"item:{b['entities']['item'][0]}"
    got = decode_json(data)
    np.testing.assert_array_equal(got.values, expected.values)
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    # the seed's keyed form: features by "item:<id>", missing reasons, diagnostics
    keyed = json.loads(post(server, b)[2])
    assert keyed["feature_set"] == "ranker:v1"
    assert keyed["features"]["item:unknown-1"]["ctr:v1"] == -6.0  # entity_not_found's constant
    assert keyed["missing"]["item:unknown-1"]["ctr:v1"] == "entity_not_found"
    assert set(keyed["diagnostics"]) >= {"missing_count", "stale_count", "latency_ms"}
    # binary: float32 LE row-major values, then uint8 reasons; shape and fingerprint headers
    status, headers, raw = post(server, b, headers={"Accept": wire.BINARY})
    n, f = (int(x) for x in headers[wire.SHAPE_HEADER].split(","))
    assert (n, f) == expected.values.shape and len(raw) == n * f * 5
    assert headers[wire.FINGERPRINT_HEADER] == wire.columns_fingerprint(expected.columns)
    np.testing.assert_array_equal(np.frombuffer(raw[: n * f * 4], "<f4").reshape(n, f), expected.values)
    np.testing.assert_array_equal(np.frombuffer(raw[n * f * 4 :], np.uint8).reshape(n, f), expected.reasons)
    status, _, described = server.request("GET", "/v1/feature_sets/ranker:v1", None, key())
    assert json.loads(described)["columns"] == list(expected.columns)


def test_int_ids_and_str_ids_are_the_same_entities(server, primary):
    b = body(n=3)
    b["entities"] = {"user": 3, "item": [1, 2, 3], "creator": [1, 1, 1]}
    status, _, data = post(server, b, query="?layout=columnar")
    assert status == 200
    as_str = dict(b, entities={"user": "3", "item": ["1", "2", "3"], "creator": ["1", "1", "1"]})
    np.testing.assert_array_equal(decode_json(data).values, decode_json(post(server, as_str, query="?layout=columnar")[2]).values)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "b, status, field, match",
    [
        (body(colour="red"), 400, "colour", "unknown field"),
        (body(feature_set=5), 400, "feature_set", "Expected `str`"),
        (body(request_time="2026-07-01T01:00:00"), 400, "request_time", "timezone"),
        (body(privacy_mode="anonymous"), 400, "privacy_mode", "privacy_mode must be one of"),
        # a line break in request_id (echoed as the X-Request-Id header) closed the connection unanswered
        (body(request_id="r1\r\nX-Evil: 1"), 400, "request_id", "request_id must be printable text (no control characters), got 'r1\\r\\nX-Evil: 1'"),
        (body(request_id="r1\x00"), 400, "request_id", "request_id must be printable text"),
        (b"{not json", 400, None, "not valid JSON"),
        (body(feature_set="nope:v1"), 404, "feature_set", "not registered"),
        # an entity name nobody registered was ignored (a typo of one the request means)
        (body(entities={**body()["entities"], "gadget": "g1"}), 400, "entities", "entities names 'gadget', which is no registered entity"),
        (body(n=1001), 413, "entities", "more than this server's cap of 1000"),
        (body(feature_set="strict:v1", candidate={}, context={}, deadline_ms=0.0001), 504, "deadline_ms", "timeout"),
    ],
)
def test_error_statuses_name_the_field_and_the_fix(server, b, status, field, match):
    got_status, headers, data = post(server, b)
    error = json.loads(data)
    assert got_status == status, error
    assert error["status"] == status and error["field"] == field
    assert match in error["message"]
    assert headers["content-type"] == wire.JSON and headers[wire.REQUEST_ID_HEADER]


def test_unsupported_accept_and_method(server):
    assert post(server, body(), headers={"Accept": "text/csv"})[0] == 406
    assert server.request("GET", "/v1/features", None, key())[0] == 405
    assert server.request("GET", "/nowhere")[0] == 404


def test_malformed_bodies_never_crash_a_worker(server):
    workers = sorted(server.workers())
    for junk in (b"", b"\x00\xff" * 100, b"[1,2,3]", b'{"entities": {"item": [[1]]}}', b"null", b'{"feature_set": "ranker:v1"' + b" " * 10_000,
                 json.dumps(body(entities={"item": [{"a": 1}]})).encode(), json.dumps(body(candidate={"source_rank": [1.0]})).encode()):
        status, _, data = post(server, junk)
        assert status == 400, data
    assert post(server, body())[0] == 200
    assert sorted(server.workers()) == workers


# ------------------------------------------------------------------------------------ auth


def test_auth_missing_bad_wrong_tenant_wrong_purpose(server):
    status, headers, data = server.request("POST", "/v1/features", body())
    assert status == 401 and "Bearer" in headers["www-authenticate"] and "no API key" in error_of((status, headers, data))["message"]
    assert post(server, body(), headers=key("fck_wrong"))[0] == 401
    status, _, data = post(server, body(), headers=key(KEY_B))  # acme's key; tenant defaults to acme: allowed
    assert status == 200
    wrong_tenant = post(server, body(tenant="default"), headers=key(KEY_B))
    assert wrong_tenant[0] == 403 and error_of(wrong_tenant)["field"] == "tenant"
    wrong_purpose = post(server, body(purpose="ads"))
    assert wrong_purpose[0] == 403 and "purposes ['ranking', 'analytics']" in error_of(wrong_purpose)["message"]
    rule = post(server, body(purpose="analytics"))  # the key allows it, the access rule does not (personal_data)
    assert rule[0] == 403 and "may not read group user_profile:v1" in error_of(rule)["message"]
    # every denial is audited: the access audit's counters, exported per caller, and a log line
    # (the worker that served the request writes it; it may land after the counters are scraped)
    deadline = time.monotonic() + 10
    wanted = ('caller="<no key>"', 'caller="<unknown key>"', 'caller="other-b"', 'caller="ranker-a"')
    while time.monotonic() < deadline:
        text = server.request("GET", "/metrics")[2].decode()
        counted = all(any(line.startswith("featurecore_access_denials_total{") and w in line for line in text.splitlines()) for w in wanted)
        if counted and "access denied: caller=other-b" in server.log():
            break
        time.sleep(0.2)
    else:
        pytest.fail("denials missing from /metrics or the log:\n" + text + "\n" + server.log())


def test_keys_are_compared_in_constant_time_with_every_entry(monkeypatch):
    table = AuthTable([ApiKey(f"c{i}", "t", ("ranking",), bytes.fromhex(hash_key(f"key{i}"))) for i in range(3)])
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(auth_module.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert table.authenticate("key0").caller == "c0"
    assert len(calls) == 3  # no early exit on the first match
    assert table.authenticate("key9") is None


def test_auth_file_mistakes_name_the_entry(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"caller": "x", "tenant": "t", "purposes": ["ranking"], "sha256": "abc"}]}))
    with pytest.raises(FeatureStoreError, match=r"keys\[0\]\.sha256 must be 64 hex digits"):
        AuthTable.load(path)


def test_new_keys_added_to_an_auth_file_are_all_granted(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    keys = []
    for caller in ("ranker-a", "ranker-b"):
        assert auth_module.main(["--caller", caller, "--purpose", "ranking", "--add-to", str(path)]) == 0
        keys.append(capsys.readouterr().err.split("): ")[1].split()[0])
    table = AuthTable.load(path)
    assert [table.authenticate(key).caller for key in keys] == ["ranker-a", "ranker-b"]
    assert table.authenticate("fck_not_a_key") is None
    (tmp_path / "other.yaml").write_text("caller: x\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        auth_module.main(["--caller", "c", "--purpose", "ranking", "--add-to", str(tmp_path / "other.yaml")])
    assert "has no `keys:` line" in capsys.readouterr().err
    assert (tmp_path / "other.yaml").read_text(encoding="utf-8") == "caller: x\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["--caller", ""], r"--caller must be a non-empty string, got ''"),
    (["--tenant", ""], r"--tenant: tenant must be a non-empty str of at most 255 UTF-8 bytes, got ''"),
    (["--tenant", "t" * 256], r"--tenant: tenant must be a non-empty str of at most 255 UTF-8 bytes"),
    (["--purpose", ""], r"--purpose must be a non-empty list of purposes, got \['ranking', ''\]"),
])
def test_a_key_entry_the_server_would_refuse_is_not_added_to_the_auth_file(tmp_path, capsys, argv, message):
    """`--caller ''` or `--tenant ''` was appended to the --auth file, and then the server
    refused to load the whole file (every other key with it); a 256-byte tenant loaded but
    no request can name it."""
    path = tmp_path / "keys.yaml"
    assert auth_module.main(["--caller", "ranker-a", "--purpose", "ranking", "--add-to", str(path)]) == 0
    before = path.read_text(encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        auth_module.main(["--caller", "c", "--purpose", "ranking", *argv, "--add-to", str(path)])
    assert re.search(message, capsys.readouterr().err)
    assert path.read_text(encoding="utf-8") == before and len(AuthTable.load(path).keys) == 1
    entry = yaml.safe_load(before)["keys"][0]
    path.write_text(yaml.safe_dump({"keys": [dict(entry, tenant="t" * 256)]}))
    with pytest.raises(FeatureStoreError, match=r"keys\[0\]\.tenant: tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        AuthTable.load(path)


def test_serve_refuses_to_run_without_keys_or_off_loopback(primary, capsys):
    assert main(["serve", "--store", primary.root]) == 1
    assert "pass --auth FILE" in capsys.readouterr().err
    assert main(["serve", "--store", primary.root, "--insecure-local", "--host", "0.0.0.0"]) == 1
    assert "only on a loopback address" in capsys.readouterr().err



def test_serve_refuses_more_workers_than_the_machine_can_run(primary, capsys):
    from featurecore.server.supervisor import MAX_WORKERS_PER_CPU, max_workers

    cpus = len(os.sched_getaffinity(0))
    assert max_workers() == MAX_WORKERS_PER_CPU * cpus
    assert main(["serve", "--store", primary.root, "--insecure-local", "--workers", str(max_workers() + 1)]) == 1
    err = capsys.readouterr().err
    assert f"--workers {max_workers() + 1} is more than this machine can serve with" in err and "one worker per core" in err
    from featurecore.server import ServeOptions

    ServeOptions(store=primary.root, insecure_local=True, workers=max_workers()).check()  # the cap itself is accepted


@pytest.mark.parametrize("interval", [0.0, -1.0, float("inf"), float("nan")])
def test_serve_refuses_a_refresh_interval_the_workers_cannot_use(primary, interval):
    from featurecore.server import ServeOptions

    with pytest.raises(ValidationError, match=r"--refresh-interval must be a positive number of seconds"):
        ServeOptions(store=primary.root, insecure_local=True, refresh_interval_s=interval).check()


# ------------------------------------------------------------------------------------ operations


def test_health_metrics_and_request_ids(server):
    assert json.loads(server.request("GET", "/healthz")[2])["status"] == "ok"
    ready = server.wait_ready()  # (a refresh pass can lag on a loaded machine)
    assert set(ready["checks"]) == {"registry", "resident", "refresh", "freshness"}
    status, headers, _ = post(server, body(request_id=""), headers={"Accept": wire.BINARY, "X-Request-Id": "abc-123"})
    assert status == 200 and headers[wire.REQUEST_ID_HEADER] == "abc-123"  # the body's request_id first, else the header
    assert post(server, body())[1][wire.REQUEST_ID_HEADER] == "req_001"
    post(server, body(feature_set="nope:v1", request_id="bad-req-7"))
    # the workers publish their monitoring figures once a second and write their log lines
    # themselves: on a loaded machine both can land after the next scrape
    wanted = ('featurecore_http_request_duration_seconds_bucket{feature_set="ranker:v1",format="binary"', "featurecore_requests_total{")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server.request("GET", "/metrics")[2].decode()
        if all(w in text for w in wanted) and "request_id=bad-req-7" in server.log():
            break
        time.sleep(0.2)
    else:
        pytest.fail("request figures missing from /metrics or the log:\n" + text + "\n" + server.log())


def test_a_registry_change_is_served_without_restart(server, primary):
    primary.apply([FeatureSet("ranker_small", 1, ("ctr:v1", "followers:v1"), owner="ranking-team")])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, headers, data = post(server, body(feature_set="ranker_small:v1", context={}, candidate={}), headers={"Accept": wire.BINARY})
        assert status in (200, 404), data
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200 and headers[wire.SHAPE_HEADER] == "40,2"


def generation_mappings(pid: int) -> dict[str, set[str]]:
    """The generation files process ``pid`` maps: path -> start addresses of its mappings."""
    out: dict[str, set[str]] = {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5].endswith(".fcgen"):
                out.setdefault(fields[5], set()).add(fields[0].split("-")[0])
    return out


def test_workers_are_forked_and_serve_from_the_mapping_the_supervisor_verified(server):
    """The supervisor maps and checksums each resident group's generation once, then forks
    its workers: each serves from that mapping (one per file, at the same address in every
    worker: inherited, not mapped and checksummed again), and the supervisor keeps none,
    so it pins no generation the workers have moved past."""
    workers = server.workers()
    with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
        supervisor_cmdline = f.read()
    for pid in workers:  # forked: the supervisor's command line, not `python -m ...worker`
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read() == supervisor_cmdline
    maps = [generation_mappings(pid) for pid in workers]
    assert len(maps[0]) >= 2 and all(m == maps[0] for m in maps), maps  # item_stats, creator_stats, ... generations
    assert all(len(addresses) == 1 for addresses in maps[0].values()), maps
    assert generation_mappings(server.proc.pid) == {}


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(server):
    first, second = server.workers()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert post(server, body(), headers={"Accept": wire.BINARY})[0] == 200
        live = server.workers()
        if len(live) == 2 and first not in live:
            break
        time.sleep(0.05)
    replacement = (set(server.workers()) - {second}).pop()
    assert replacement != first
    # It is a process before it listens (imports take seconds on a loaded machine): kill
    # the other one only once the replacement has loaded, or requests queue past their timeout.
    deadline = time.monotonic() + 60
    while not any(f"pid {replacement}]" in line and "resident groups loaded" in line for line in server.lines):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    os.kill(second, signal.SIGKILL)  # now only the replacement can answer
    for _ in range(20):
        assert post(server, body(), headers={"Accept": wire.BINARY})[0] == 200
    assert "exited with code -9; starting a replacement" in server.log()


def test_graceful_shutdown(server):
    assert server.stop() == 0
    assert "featurecore serve: stopped" in server.log()


# ------------------------------------------------------------------------------------ readiness


def test_readiness_waits_for_the_resident_load(tmp_path):
    root = tmp_path / "big"
    n = 300_000
    with FeatureStore.open(root) as store:
        store.apply(definitions())
        ids = np.arange(n, dtype=np.int64)
        store.write_online("creator_stats:v1", {"followers": np.ones(n, np.float32)}, entity_ids=ids, feature_timestamp=T0)
    proc = ServerProcess("--store", str(root), "--insecure-local")
    try:
        status, _, data = proc.request("GET", "/readyz", timeout=60)  # queued until the worker listens
        first = json.loads(data)
        assert status == 503 and first["checks"]["resident"]["ok"] is False, first
        assert proc.wait_ready()["checks"]["resident"]["pending"] == []
    finally:
        assert proc.stop() == 0
