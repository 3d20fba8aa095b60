"""FeatureRequest: one ranking request, validated before anything is read."""

from __future__ import annotations

import math
from collections.abc import Mapping  # (an isinstance check against typing.Mapping is 3x slower)
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..keys import MAX_NAME_BYTES, tenant_problem
from ..online.batch import request_ids

PRIVACY_MODES: tuple[str, ...] = ("personalized", "non_personalized")
#: The matrix is float32: a request value beyond this would be served as inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, init=False)
class FeatureRequest:
    """What a ranking service asks for.

    Attributes:
        feature_set: feature set ref (``"home_ranker_features:v18"``).
        entities: entity name -> id (per-request entities such as ``user``) or ids
            (list of str or int64 numpy array, one per candidate).
        request_time: timezone-aware datetime or int microseconds since the epoch (UTC).
        tenant: key namespace.
        privacy_mode: ``personalized`` or ``non_personalized`` (the latter never reads
            behavioral/personal groups).
        purpose: the caller's purpose, checked against access rules.
        caller: free text for audit logs.
        context: request-time feature name -> number.
        candidate: per-candidate feature name -> numeric array (n,).
        deadline_ms: budget for direct reads, or None.

    >>> FeatureRequest("home:v1", {"user": "u1", "item": ["i1", "i2"]}, 1_750_000_000_000_000)  # doctest: +SKIP
    """

    feature_set: str
    entities: Mapping[str, Any]
    request_time: datetime | int
    tenant: str = "default"
    privacy_mode: str = "personalized"
    purpose: str = "ranking"
    caller: str = ""
    context: Mapping[str, float] = field(default_factory=dict)
    candidate: Mapping[str, np.ndarray] = field(default_factory=dict)
    deadline_ms: float | None = None

    # Written out rather than generated: a request is built per ranking call, and the
    # generated frozen __init__ (one object.__setattr__ per field) plus __post_init__
    # cost about twice this. The common request (str names, an ASCII tenant, int time,
    # no context or candidate values) takes the first branch of every check.
    def __init__(
        self,
        feature_set: str,
        entities: Mapping[str, Any],
        request_time: datetime | int,
        tenant: str = "default",
        privacy_mode: str = "personalized",
        purpose: str = "ranking",
        caller: str = "",
        context: Mapping[str, float] | None = None,
        candidate: Mapping[str, np.ndarray] | None = None,
        deadline_ms: float | None = None,
    ) -> None:
        if not isinstance(feature_set, str) or not feature_set:
            raise ValidationError(f"feature_set must be a ref like 'home_ranker_features:v18', got {feature_set!r}")
        if not (type(entities) is dict or isinstance(entities, Mapping)) or not entities:
            raise ValidationError(
                f"entities must map entity name -> id(s), got {entities!r}; e.g. {{'user': 'u1', 'item': [...]}}"
            )
        ids_by_name = {}
        for key, ids in entities.items():
            name = key if type(key) is str else str(key)
            ids_by_name[name] = request_ids(ids, name)
        if type(request_time) is not int:
            _check_time(request_time)
        if not (type(tenant) is str and 0 < len(tenant) <= MAX_NAME_BYTES and tenant.isascii()):
            problem = tenant_problem(tenant)  # (non-ASCII text: its UTF-8 length decides)
            if problem:
                raise ValidationError(problem)
        if privacy_mode not in PRIVACY_MODES:
            raise ValidationError(f"privacy_mode must be one of {PRIVACY_MODES}, got {privacy_mode!r}")
        if not (isinstance(purpose, str) and purpose):
            raise ValidationError(
                f"purpose must be a non-empty str naming an access rule's purpose, got {purpose!r}; e.g. purpose='ranking'"
            )
        if not isinstance(caller, str):
            raise ValidationError(f"caller must be a str (free text for audit logs), got {caller!r}; e.g. caller='home-feed'")
        if context is None:
            context = {}
        elif type(context) is not dict and not isinstance(context, Mapping):
            raise ValidationError(
                f"context must map a context feature name to a number, got {type(context).__name__} {context!r}; "
                "e.g. context={'hour': 10.0}"
            )
        elif context:
            _check_context(context)
        if candidate is None:
            candidate = {}
        elif type(candidate) is not dict and not isinstance(candidate, Mapping):
            raise ValidationError(
                f"candidate must map a candidate feature name to one value per candidate, got {type(candidate).__name__}; "
                "e.g. candidate={'source_rank': np.arange(n)}"
            )
        elif candidate:  # (an empty mapping is kept as given)
            candidate = _candidate_arrays(candidate)
        if deadline_ms is not None and not (  # (a bool is an int: True would be a 1 ms deadline)
            isinstance(deadline_ms, (int, float)) and not isinstance(deadline_ms, bool) and deadline_ms > 0
            and math.isfinite(deadline_ms)
        ):
            raise ValidationError(f"deadline_ms must be a positive number or None, got {deadline_ms!r}")
        self.__dict__.update(  # (frozen: attributes are set once, here)
            feature_set=feature_set, entities=ids_by_name, request_time=request_time, tenant=tenant,
            privacy_mode=privacy_mode, purpose=purpose, caller=caller, context=context, candidate=candidate,
            deadline_ms=deadline_ms,
        )

    @property
    def request_time_us(self) -> int:
        """request_time as int microseconds since the epoch (UTC)."""
        t = self.request_time
        if type(t) is int:
            return t
        if isinstance(t, datetime):
            delta = t.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return int(t)

    def n_candidates(self, entity: str) -> int:
        """Number of ids given for ``entity`` (the candidate count for a per-candidate entity)."""
        if entity not in self.entities:
            raise ValidationError(f"entities has no {entity!r}; pass entities={{{entity!r}: [...]}}")
        return len(self.entities[entity])


def _check_time(t: Any) -> None:
    if isinstance(t, datetime):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValidationError(f"request_time must be timezone-aware, got {t}; pass datetime(..., tzinfo=timezone.utc)")
    elif isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise ValidationError(
            f"request_time must be a timezone-aware datetime or int microseconds, got {type(t).__name__} {t!r}"
        )


def _check_context(context: Mapping[str, float]) -> None:
    for name, value in context.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValidationError(
                f"context[{name!r}] must be a number, got {type(value).__name__} {value!r}; encode categories as codes"
            )
        if abs(value) > _FLOAT32_MAX:  # (NaN passes: a missing value, served not_computed)
            raise ValidationError(
                f"context[{name!r}] must be a finite number within float32 range (+-3.4e38), got {value!r}; "
                "rescale it, or pass NaN for a missing value"
            )


def _candidate_arrays(candidate: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, values in candidate.items():
        arr = np.asarray(values)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValidationError(
                f"candidate[{name!r}] must be a 1-d numeric array (one value per candidate), got {arr.dtype} {arr.shape}"
            )
        if arr.dtype.kind == "c":  # served as float32: the imaginary part would be dropped
            raise ValidationError(
                f"candidate[{name!r}] must be a 1-d array of real numbers, got {arr.dtype}; pass the real part or the magnitude"
            )
        if arr.dtype.kind == "f":
            beyond = np.abs(arr) > _FLOAT32_MAX  # inf included, NaN (missing) not
            if beyond.any():
                row = int(np.flatnonzero(beyond)[0])
                raise ValidationError(
                    f"candidate[{name!r}] row {row}: values must be finite and within float32 range (+-3.4e38), "
                    f"got {arr[row].item()!r}; rescale them, or pass NaN for a missing value"
                )
        out[name] = arr
    return out
