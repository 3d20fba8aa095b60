"""The access policy: the one object that decides what a request may read.

The seed's access rules are privacy mode, consent, tenant boundary, service identity and
purpose. ``AccessPolicy`` owns all of them; the serving engine asks it:

- once per route (registry revision, feature set, tenant, purpose, privacy mode; cached
  by the engine): ``policy.route(state, compiled, purpose, privacy_mode)`` raises
  AccessDeniedError unless the purpose's ``AccessRule`` allows every group the privacy
  mode lets it read, and returns the groups the privacy mode skips (a
  ``non_personalized`` request never reads groups holding ``PERSONAL_PRIVACY_CLASSES``);
  ``policy.tenant_denial(...)`` says why the tenant's ``TenantAccess`` forbids the route
  (raised for every request of it);
- once per request: ``policy.consent_off(tenant, entities, groups, cache)``, the groups
  the user's withdrawn consent disables (served as privacy_disabled): a dict lookup of
  the user, nothing when nobody in the store withdrew anything.

``policy.check(state, request, compiled)`` is both decisions for one request, uncached.
Any denial is recorded with ``policy.denied(request, error)`` in ``policy.audit``
(``AccessAudit``: counters plus a bounded log, logger ``featurecore.access``).

``ConsentRegistry``: per-user revoked privacy classes, persisted in ``meta`` under
``b"consent/" + encode_key(tenant, "user", user_id)`` (a ``RecordStore``,
storage/records.py), checked in O(1) per request. Every ``ConsentRegistry`` opened on the
same record store (``ConsentRegistry(store)``, ``ConsentRegistry(store.backend)``,
``store.access_policy.consent``) shares one in-memory state, so a change made through any of them is served on the next request in this
process; other processes pick it up on ``reload()`` (secondaries do on every refresh).
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import msgpack

from . import _core
from .errors import AccessDeniedError, FeatureStoreError, NotFoundError, ValidationError
from .keys import check_tenant
from .layout import META_CF
from .online.batch import id_at, one_id
from .storage.records import RecordStore, records_of
from .registry.model import PERSONAL_PRIVACY_CLASSES, PRIVACY_CLASSES, RegistryState

CONSENT_PREFIX = b"consent/"
#: u64 BE count of consent changes, written with each change: reload() skips when unchanged.
CONSENT_VERSION_KEY = b"consent@version"
#: What ``revoke_consent`` withdraws by default: what is learned from the user.
DEFAULT_REVOKED: tuple[str, ...] = tuple(sorted(PERSONAL_PRIVACY_CLASSES))

logger = logging.getLogger("featurecore.access")
_NONE: frozenset[str] = frozenset()


def tenant_denial(state: RegistryState, feature_set_ref: str, tenant: str, purpose: str, classes: Iterable[str]) -> str | None:
    """Why ``tenant``'s TenantAccess forbids serving ``feature_set_ref`` to ``purpose``
    when the request reads privacy ``classes``; None when it is allowed (or the tenant
    has no TenantAccess)."""
    rule = state.tenant_rule(tenant)
    if rule is None:
        return None
    if not rule.allows_feature_set(feature_set_ref):
        return (
            f"tenant {tenant!r} may not be served feature set {feature_set_ref}; its feature sets are "
            f"{list(rule.feature_sets)} (add it to the tenant's TenantAccess.feature_sets)"
        )
    if rule.purposes and purpose not in rule.purposes:
        return f"purpose {purpose!r} may not read in tenant {tenant!r}; its purposes are {list(rule.purposes)}"
    denied = sorted(set(classes) - set(rule.privacy_classes))
    if denied:
        return (
            f"feature set {feature_set_ref} reads privacy classes {denied}, which tenant {tenant!r} does not allow "
            f"(allowed: {list(rule.privacy_classes)}); use a feature set without them or privacy_mode='non_personalized'"
        )
    return None


@dataclass(frozen=True)
class Denial:
    """One denied request."""

    at_us: int
    caller: str
    feature_set: str
    tenant: str
    purpose: str
    reason: str


class AccessAudit:
    """Denied requests: counters plus the newest ``capacity`` records. Thread-safe.

    >>> audit = AccessAudit(capacity=2)
    >>> _ = audit.record(caller="svc", feature_set="fs:v1", tenant="t", purpose="ads", reason="no rule")
    >>> audit.summary()["total"]
    1
    """

    def __init__(self, capacity: int = 1000, log: logging.Logger = logger):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValidationError(f"capacity must be a positive int, got {capacity!r}")
        self._records: collections.deque[Denial] = collections.deque(maxlen=capacity)
        self._counts: dict[str, collections.Counter] = {
            k: collections.Counter() for k in ("caller", "feature_set", "tenant", "purpose")
        }
        self._total = 0
        self._lock = threading.Lock()
        self._log = log

    def record(self, *, caller: str, feature_set: str, tenant: str, purpose: str, reason: str) -> Denial:
        """Count, keep and log one denial."""
        denial = Denial(time.time_ns() // 1000, caller or "<unnamed>", feature_set, tenant, purpose, reason)
        with self._lock:
            self._records.append(denial)
            self._total += 1
            for key, counter in self._counts.items():
                counter[getattr(denial, key)] += 1
        self._log.warning(
            "access denied: caller=%s feature_set=%s tenant=%s purpose=%s: %s",
            denial.caller, feature_set, tenant, purpose, reason,
        )
        return denial

    def record_request(self, request: Any, error: BaseException) -> Denial:
        """Record the denial of a FeatureRequest with the error that denied it."""
        return self.record(
            caller=request.caller, feature_set=request.feature_set, tenant=request.tenant,
            purpose=request.purpose, reason=str(error),
        )

    @property
    def total(self) -> int:
        """Denials recorded since creation (including those no longer kept)."""
        return self._total

    def denials(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest kept denials as dicts, oldest first (the last ``limit`` if given)."""
        with self._lock:
            records = list(self._records)
        return [asdict(d) for d in (records[-limit:] if limit else records)]

    def summary(self) -> dict[str, Any]:
        """``{"total", "by_caller", "by_feature_set", "by_tenant", "by_purpose"}`` (plain dicts)."""
        with self._lock:
            return {"total": self._total, **{f"by_{k}": dict(c) for k, c in self._counts.items()}}


def _user_key(tenant: str, user_id: str | int) -> bytes:
    return CONSENT_PREFIX + _core.encode_key(tenant, "user", user_id)


class _ConsentState:
    """The revocations of one record store, shared by every ConsentRegistry opened on it."""

    def __init__(self, records: RecordStore):
        self.records = records
        self.lock = threading.Lock()
        self.revoked: dict[tuple[str, str], frozenset[str]] = {}
        self.version: int | None = None


#: id(record store) -> its shared state (which holds the store, so the id stays unique
#: while the entry lives; the entry goes with the last ConsentRegistry of that store).
_SHARED: "weakref.WeakValueDictionary[int, _ConsentState]" = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_state(records: RecordStore) -> _ConsentState:
    with _SHARED_LOCK:
        state = _SHARED.get(id(records))
        if state is None or state.records is not records:
            state = _SHARED[id(records)] = _ConsentState(records)
        return state


class ConsentRegistry:
    """Privacy classes each user has withdrawn consent for, per tenant.

    Every ConsentRegistry of one open database shares its state: a change made through
    any of them (``ConsentRegistry(store).revoke_consent(...)``) is served on the next
    request of this process. Other processes see it after ``reload()`` (8 bytes read when
    nothing changed; secondaries reload on every refresh). ``allows`` and ``revoked`` are
    dict lookups.

    Args:
        db: a FeatureStore (its ``backend``) or a record store.
    """

    def __init__(self, db: Any):
        self._shared = _shared_state(records_of(db))
        self._records = self._shared.records
        if self._shared.version is None:
            self.reload()

    def _stored_version(self) -> int:
        raw = self._records.read_record(META_CF, CONSENT_VERSION_KEY)
        return 0 if raw is None else struct.unpack(">Q", raw)[0]

    def reload(self) -> None:
        """Re-read every revocation from ``meta`` if any changed since the last read."""
        shared = self._shared
        with shared.lock:
            version = self._stored_version()
            if version == shared.version:
                return
            revoked = {}
            for _, value in self._records.scan_records(META_CF, CONSENT_PREFIX):
                data = msgpack.unpackb(value, raw=False)
                revoked[data["tenant"], data["user_id"]] = frozenset(data["classes"])
            shared.revoked, shared.version = revoked, version

    def _write(self, tenant: str, user_id: str, classes: frozenset[str]) -> None:
        """Store the user's revocations and bump the version in one atomic write (under the
        shared lock), then publish them in memory."""
        key = _user_key(tenant, user_id)
        version = self._stored_version() + 1
        puts = [(CONSENT_VERSION_KEY, struct.pack(">Q", version))]
        if classes:
            record = {"tenant": tenant, "user_id": user_id, "classes": sorted(classes), "updated_at_us": time.time_ns() // 1000}
            puts.append((key, msgpack.packb(record)))
        try:
            self._records.write_records(META_CF, puts, deletes=() if classes else (key,))
        except FeatureStoreError as exc:
            raise FeatureStoreError(f"cannot change consent of user {user_id!r}: {exc}; change it through the primary") from exc
        revoked = dict(self._shared.revoked)  # copy-on-write: readers hold no lock
        if classes:
            revoked[tenant, user_id] = classes
        else:
            revoked.pop((tenant, user_id), None)
        self._shared.revoked, self._shared.version = revoked, version

    def revoke_consent(self, tenant: str, user_id: str | int, classes: Iterable[str] = DEFAULT_REVOKED) -> frozenset[str]:
        """Withdraw consent for ``classes``: from the next request on, requests of this
        user in ``tenant`` serve groups holding those classes as ``privacy_disabled``.

        Returns:
            Every class now revoked for the user.
        """
        classes = _check_classes(classes)
        user = one_id(user_id, "user_id")
        check_tenant(tenant)
        with self._shared.lock:
            now = self._shared.revoked.get((tenant, user), frozenset()) | classes
            self._write(tenant, user, now)
        return now

    def restore_consent(self, tenant: str, user_id: str | int, classes: Iterable[str] | None = None) -> frozenset[str]:
        """Give consent back for ``classes`` (default: all). Returns the classes still revoked."""
        user = one_id(user_id, "user_id")
        check_tenant(tenant)
        with self._shared.lock:
            before = self._shared.revoked.get((tenant, user), frozenset())
            now = frozenset() if classes is None else before - _check_classes(classes)
            self._write(tenant, user, now)
        return now

    def revoked(self, tenant: str, user_id: str | int) -> frozenset[str]:
        """Classes the user has withdrawn consent for (empty when none)."""
        return self._shared.revoked.get((tenant, str(user_id)), frozenset())

    def allows(self, tenant: str, user_id: str | int, privacy_class: str) -> bool:
        """True unless the user has withdrawn consent for ``privacy_class`` in ``tenant``."""
        return privacy_class not in self._shared.revoked.get((tenant, str(user_id)), ())

    def disabled_groups(self, tenant: str, user_id: str | int, groups: Iterable[Any]) -> frozenset[str]:
        """Refs of ``groups`` (objects with ``.ref`` and ``.privacy_classes``, e.g. a compiled
        feature set's GroupBindings) the user's revocations disable."""
        revoked = self._shared.revoked.get((tenant, str(user_id)))
        if not revoked:
            return frozenset()
        return frozenset(b.ref for b in groups if revoked & b.privacy_classes)


def _check_classes(classes: Iterable[str]) -> frozenset[str]:
    if isinstance(classes, str):
        classes = (classes,)
    try:
        out = frozenset(classes)
    except TypeError:  # not an iterable of names (None, 5), or holding a list
        out = frozenset()
    if not out or not out <= set(PRIVACY_CLASSES):
        shown = sorted(out, key=repr) if out else classes
        raise ValidationError(f"classes must be privacy classes among {list(PRIVACY_CLASSES)}, got {shown!r}")
    return out


class AccessPolicy:
    """Purpose rules, privacy mode, tenant rules and consent: what a request may read.

    ``route`` (cache its result per registry revision, feature set, purpose and privacy
    mode) and ``check`` (per request) are what the serving engine calls; see the module
    docstring. Thread-safe.
    """

    def __init__(self, consent: ConsentRegistry | None = None, audit: AccessAudit | None = None):
        self.consent = consent
        self.audit = audit if audit is not None else AccessAudit()

    @staticmethod
    def skipped_groups(compiled: Any, privacy_mode: str) -> frozenset[str]:
        """Refs of the compiled feature set's groups the privacy mode forbids reading
        (served as privacy_disabled, never read)."""
        if privacy_mode != "non_personalized":
            return frozenset()
        return frozenset(b.ref for b in compiled.groups if b.privacy_classes & PERSONAL_PRIVACY_CLASSES)

    def route(self, state: RegistryState, compiled: Any, purpose: str, privacy_mode: str) -> frozenset[str]:
        """Raise AccessDeniedError unless ``purpose`` may read every group the privacy mode
        lets the request read; return the groups the privacy mode skips."""
        skipped = self.skipped_groups(compiled, privacy_mode)
        try:
            allowed = set(state.access_rule(purpose).allowed_privacy_classes)
        except NotFoundError:
            raise AccessDeniedError(
                f"purpose {purpose!r} has no access rule, so it may read nothing; use one of "
                f"{sorted(state.access_rules)} or register an AccessRule for it"
            ) from None
        for binding in compiled.groups:
            denied = sorted(binding.privacy_classes - allowed)
            if binding.ref not in skipped and denied:
                raise AccessDeniedError(
                    f"purpose {purpose!r} may not read group {binding.ref} of feature set {compiled.ref}: its "
                    f"privacy classes {denied} are not in the purpose's allowed classes {sorted(allowed)}; "
                    "use a feature set without them, request privacy_mode='non_personalized', or change the access rule"
                )
        return skipped

    def tenant_denial(self, state: RegistryState, compiled: Any, tenant: str, purpose: str, privacy_mode: str) -> str | None:
        """Why ``tenant``'s TenantAccess forbids serving ``compiled`` to ``purpose`` in
        ``privacy_mode`` (None: allowed). Depends on the registry state alone: the engine
        decides it once per route (registry revision, feature set, tenant, purpose, mode)."""
        skipped = self.skipped_groups(compiled, privacy_mode)
        classes = {c for b in compiled.groups if b.ref not in skipped for c in b.privacy_classes}
        return tenant_denial(state, compiled.ref, tenant, purpose, classes)

    def consent_off(
        self, tenant: str, entities: Mapping[str, Any], groups: Iterable[Any], decided: dict[frozenset[str], frozenset[str]]
    ) -> frozenset[str]:
        """Refs of ``groups`` (a compiled feature set's GroupBindings) that the request's
        user (``entities["user"]``) has withdrawn consent for in ``tenant``: served as
        privacy_disabled. ``decided``: the caller's cache of revoked classes -> refs for
        these groups (the answer depends on nothing else, so it never goes stale).

        The revocations are read per request (the consent registry replaces its dict on
        every change, never edits it): a change applies to the next request.
        """
        consent = self.consent
        if consent is None:
            return _NONE
        revoked = consent._shared.revoked
        if not revoked:  # nobody has withdrawn anything: no user id to look at
            return _NONE
        ids = entities.get("user")
        if ids is None or len(ids) == 0:
            return _NONE
        user = str(id_at(ids, 0))
        classes = revoked.get((tenant, user))
        if not classes:
            return _NONE
        off = decided.get(classes)
        if off is None:
            off = decided[classes] = frozenset(b.ref for b in groups if classes & b.privacy_classes)
        return off

    def check(self, state: RegistryState, request: Any, compiled: Any) -> frozenset[str]:
        """Raise AccessDeniedError if the tenant forbids ``request``; else the refs of the
        compiled feature set's groups to serve as privacy_disabled for this user
        (``tenant_denial`` then ``consent_off``, undecided: the engine caches both per route)."""
        reason = self.tenant_denial(state, compiled, request.tenant, request.purpose, request.privacy_mode)
        if reason is not None:
            raise AccessDeniedError(reason)
        return self.consent_off(request.tenant, request.entities, compiled.groups, {})

    def denied(self, request: Any, error: BaseException) -> Denial:
        """Record a denied request in the audit."""
        return self.audit.record_request(request, error)
