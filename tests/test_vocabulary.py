"""One owner per shared vocabulary (issue 9): reason, action and dtype codes live in
csrc/reasons.h, the key, pair-id and tenant-name formats in csrc/keys.h; Python reads
them through _core (featurecore/reasons.py and featurecore/keys.py). These tests pin the
two sides together and fail if a copy of a format reappears in the sources."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import _core
from featurecore.errors import ValidationError
from featurecore.keys import MAX_NAME_BYTES, check_tenant, join_pair_ids, split_pair_ids, tenant_problem
from featurecore.reasons import Action, Reason
from featurecore.registry.model import DTYPES, TenantAccess
from featurecore.registry.validation import check_tenant_access
from featurecore.serving import FeatureRequest

NOW = datetime(2026, 7, 2, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = sorted((ROOT / "featurecore").rglob("*.py"))
NATIVE = sorted(p for p in (ROOT / "csrc").iterdir() if p.suffix in (".h", ".cc", ".cpp"))


def sources(files: list[Path], *, but: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in files if str(p.relative_to(ROOT)) not in but}


def test_python_enums_are_the_native_codes():
    assert {r.name: r.value for r in Reason} == _core.REASONS
    assert {a.name: a.value for a in Action} == _core.ACTIONS
    assert dict(DTYPES) == _core.DTYPES


def test_native_codes_are_defined_only_in_reasons_h():
    header = (ROOT / "csrc" / "reasons.h").read_text()
    names = re.findall(r"^\s+(k[A-Z]\w*) = \d+,", header, re.M)
    assert len(names) == len(_core.REASONS) + len(_core.ACTIONS) + len(_core.DTYPES)
    copies = [
        (path, name)
        for path, text in sources(NATIVE, but=("csrc/reasons.h",)).items()
        for name in names
        if re.search(rf"\b{name}\s*=\s*\d", text)
    ]
    assert copies == []


def test_python_defines_no_code_table_of_its_own():
    """Code numbers appear only as the enum bodies of featurecore/reasons.py (pinned
    above); a dict literal such as {"float32": 0, ...} or {"stale": 7} is a copy."""
    names = "|".join([*_core.REASONS, *_core.ACTIONS, *_core.DTYPES])
    table = re.compile(rf"""["']({names})["']\s*:\s*\d""")
    assert [path for path, text in sources(PACKAGE).items() if table.search(text)] == []


def test_pair_id_and_key_formats_are_built_only_by_keys_cc():
    """No Python copy of '<len>:<id>' or of the key prefix, and no second C++ writer."""
    python_copies = re.compile(
        r"""len\([^()]*(\([^()]*\))?[^()]*\)\}:"""  # f"{len(x.encode())}:{x}"
        r"""|ord\(["']:["']\)|scalar\(["']:["']\)"""  # parsing or joining on ':' by hand
        r"""|encode_key\([^)]*\)\[:-?\d*\]"""  # a key prefix cut from a key
        r"""|b["']\\x01"""  # the key format byte
    )
    assert [p for p, text in sources(PACKAGE).items() if python_copies.search(text)] == []
    native_copies = re.compile(r"""push_back\(':'\)|== ':'|!= ':'""")
    # (matrix_json.cc writes JSON, whose ':' is not a pair id.)
    others = sources(NATIVE, but=("csrc/keys.cc", "csrc/matrix_json.cc"))
    assert [p for p, text in others.items() if native_copies.search(text)] == []


def test_the_name_length_limit_is_written_once():
    assert MAX_NAME_BYTES == 255
    assert [p for p, text in sources(PACKAGE).items() if re.search(r"\b255\b", text)] == []
    assert [p for p, text in sources(NATIVE, but=("csrc/keys.h",)).items() if re.search(r"\b255\b", text)] == []


@pytest.mark.parametrize("tenant", ["", "t" * (MAX_NAME_BYTES + 1), "\udfff", None, 3])
def test_every_tenant_check_refuses_the_same_names(tenant):
    with pytest.raises(ValidationError, match="tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        check_tenant(tenant)
    with pytest.raises(ValidationError, match="tenant must be a non-empty str of at most 255 UTF-8 bytes"):
        FeatureRequest("fs:v1", {"user": "u1"}, NOW, tenant=tenant)
    problems = check_tenant_access(TenantAccess(tenant=tenant), _empty_state())  # type: ignore[arg-type]
    assert [p for p in problems if "field 'tenant'" in p] == [problems[0]]
    assert problems[0].endswith(f"field 'tenant': {tenant_problem(tenant)}")


def test_the_longest_tenant_is_accepted_everywhere():
    tenant = "é" * (MAX_NAME_BYTES // 2)
    assert check_tenant(tenant) == tenant
    assert FeatureRequest("fs:v1", {"user": "u1"}, NOW, tenant=tenant).tenant == tenant
    assert _core.encode_key(tenant, "user", "u1") == _core.key_prefix(tenant, "user") + b"u1"
    with pytest.raises(ValidationError, match="tenant is 256 bytes long; keys allow at most 255 UTF-8 bytes"):
        _core.key_prefix(tenant + "é", "user")


ID = st.text(st.sampled_from("ab:19\u00e9"), max_size=5)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(ID, min_size=3, max_size=3), max_size=10), k=st.integers(2, 3))
def test_join_and_split_pair_ids_agree_with_pair_id(rows, k):
    columns = [pa.array([row[c] for row in rows], pa.string()) for c in range(k)]
    joined = join_pair_ids(columns)
    assert joined.to_pylist() == [_core.pair_id(*row[:k]) for row in rows]
    parts = split_pair_ids(joined, k)
    assert [[p[i].as_py().decode() for p in parts] for i in range(len(rows))] == [row[:k] for row in rows]


def test_join_pair_ids_of_ints_nulls_and_slices():
    first = pa.chunked_array([pa.array(["u1", None]), pa.array(["u3"])]).slice(1)
    joined = join_pair_ids([first, pa.array([7, 8])])
    assert joined.to_pylist() == [None, "2:u38"]
    assert [c.to_pylist() for c in split_pair_ids(joined, 2)] == [[None, b"u3"], [None, b"8"]]


def _empty_state():
    from featurecore.registry import Definitions, RegistryState, validate

    return validate(Definitions.of(), RegistryState())


def test_tombstones_are_one_typed_filter():
    """Every row filter takes a ``Tombstones`` (``NO_TOMBSTONES`` when none), never None,
    and the filtering is ``Tombstones``' own (featurecore/online/tombstones.py)."""
    untyped = re.compile(r"tombstones(: Any)?\s*=\s*None|tombstones is (not )?None|def filter_tombstoned")
    assert [p for p, text in sources(PACKAGE).items() if untyped.search(text)] == []
