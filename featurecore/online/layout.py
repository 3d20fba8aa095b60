"""Moved to ``featurecore.layout`` (the store directory's layout sits below the registry,
which persists itself in it). This alias keeps branches in flight importing; new code
imports ``featurecore.layout``."""

from ..layout import (  # noqa: F401
    CHANGELOG_CF,
    FIXED_CFS,
    META_CF,
    REGISTRY_CF,
    column_family,
    group_cf_name,
    online_path,
    open_database,
    raw_options,
)
