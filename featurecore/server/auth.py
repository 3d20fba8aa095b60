"""API keys of the feature server: ``--auth FILE`` maps keys, stored as SHA-256 hashes,
to the tenant, purposes and caller they may act as.

The file (YAML or JSON)::

    keys:
      - caller: home-ranker            # who the key is (audit logs, metrics)
        tenant: acme                   # the only tenant its requests may name
        purposes: [ranking]            # the purposes it may name (first = default)
        sha256: 3f2a...                # hex SHA-256 of the key; the key itself is never stored

A new key and its entry: ``python -m featurecore.server.auth --caller home-ranker
--tenant acme --purpose ranking``. Keys are random 32-byte tokens, so one unsalted
SHA-256 is enough (there is nothing to brute-force). A presented key is hashed and
compared with every entry by ``hmac.compare_digest`` (constant time, and no early exit,
so the time does not tell which entry, if any, matched).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from ..errors import FeatureStoreError
from ..keys import tenant_problem


@dataclass(frozen=True)
class ApiKey:
    """What one key may act as."""

    caller: str
    tenant: str
    purposes: tuple[str, ...]
    digest: bytes  # SHA-256 of the key


def hash_key(key: str) -> str:
    """The hex SHA-256 stored for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


class AuthTable:
    """The keys of an auth file; ``authenticate`` finds the entry of a presented key."""

    def __init__(self, keys: list[ApiKey]):
        self.keys = tuple(keys)

    @classmethod
    def load(cls, path: str | Path) -> "AuthTable":
        """Read and check an auth file (FeatureStoreError naming the entry and the fix)."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise FeatureStoreError(f"cannot read --auth file {str(path)!r}: {error}") from None
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise FeatureStoreError(
                f"--auth file {str(path)!r} must hold `keys:`, a non-empty list of entries with caller, tenant, "
                "purposes and sha256; create one with `python -m featurecore.server.auth`"
            )
        keys = []
        for i, entry in enumerate(entries):
            where = f"--auth file {str(path)!r} keys[{i}]"
            if not isinstance(entry, dict):
                raise FeatureStoreError(f"{where} must be a mapping, got {entry!r}")
            unknown = sorted(set(entry) - {"caller", "tenant", "purposes", "sha256"})
            if unknown:
                raise FeatureStoreError(f"{where} has unknown fields {unknown}; use caller, tenant, purposes, sha256")
            digest = str(entry.get("sha256", ""))
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise FeatureStoreError(f"{where}.sha256 must be 64 hex digits (the SHA-256 of the key), got {digest!r}")
            purposes = entry.get("purposes")
            if isinstance(purposes, str):
                purposes = [purposes]
            problem = entry_problem(entry.get("caller"), entry.get("tenant"), purposes)
            if problem:
                raise FeatureStoreError(f"{where}.{problem[0]}{problem[1]}")
            keys.append(ApiKey(entry["caller"], entry["tenant"], tuple(cast("list[str]", purposes)), bytes.fromhex(digest)))
        return cls(keys)

    def authenticate(self, key: str) -> ApiKey | None:
        """The entry of ``key`` or None; every entry is compared, in constant time."""
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for entry in self.keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found


def entry_problem(caller: Any, tenant: Any, purposes: Any) -> "tuple[str, str] | None":
    """What the server would refuse in a key entry: (field, the text that follows its name),
    or None. One rule for reading an --auth file and for adding a key to one."""
    if not isinstance(caller, str) or not caller:
        return "caller", f" must be a non-empty string, got {caller!r}"
    problem = tenant_problem(tenant)
    if problem:
        return "tenant", f": {problem}"
    if not isinstance(purposes, list) or not purposes or not all(isinstance(p, str) and p for p in purposes):
        return "purposes", f" must be a non-empty list of purposes, got {purposes!r}"
    return None


def new_key_entry(caller: str, tenant: str, purposes: list[str]) -> tuple[str, str]:
    """A fresh random key and the YAML entry that grants it (print the key once, store
    only the entry)."""
    key = "fck_" + secrets.token_urlsafe(32)
    entry = yaml.safe_dump(
        [{"caller": caller, "tenant": tenant, "purposes": purposes, "sha256": hash_key(key)}], sort_keys=False
    )
    return key, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featurecore.server.auth", description="Create an API key for featurecore serve --auth.")
    parser.add_argument("--caller", required=True)
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--purpose", action="append", required=True, help="repeatable; the first is the default")
    parser.add_argument("--add-to", metavar="FILE", help="append the entry to this --auth file (created if absent) instead of printing it")
    args = parser.parse_args(argv)
    problem = entry_problem(args.caller, args.tenant, args.purpose)
    if problem:  # before the file is touched: the server would refuse the whole file
        field, text = problem
        parser.error(f"--{'purpose' if field == 'purposes' else field}{text}")
    key, entry = new_key_entry(args.caller, args.tenant, args.purpose)
    if args.add_to is None:
        print(f"# API key (shown once; give it to {args.caller}): {key}", file=sys.stderr)
        print("# append under `keys:` in the --auth file:", file=sys.stderr)
        print(entry, end="")
        return 0
    path = Path(args.add_to)
    try:
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
        parser.error(f"--add-to {args.add_to!r} cannot be read ({getattr(exc, 'strerror', None) or exc}); give an --auth file")
    if existing.strip() and not re.search(r"^keys:\s*$", existing, re.MULTILINE):
        parser.error(f"--add-to {args.add_to!r} has no `keys:` line; give a new file or an --auth file made by this command")
    text = existing if existing.endswith("\n") or not existing.strip() else existing + "\n"
    try:  # the whole file written beside it and renamed over it: a failed write leaves the old file whole
        _replace_text(path, ("keys:\n" if not existing.strip() else text) + entry)
    except OSError as exc:
        parser.error(f"--add-to {args.add_to!r} cannot be written ({exc.strerror or exc}); nothing was added and no key was made")
    print(f"# API key (shown once; give it to {args.caller}): {key}", file=sys.stderr)  # only once it is granted
    print(f"# added to {args.add_to} (caller {args.caller}, tenant {args.tenant})", file=sys.stderr)
    return 0


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole (temp file, fsync, rename), keeping an existing file's mode
    (an --auth file is often 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
