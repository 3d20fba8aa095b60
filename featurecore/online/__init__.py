"""The RocksDB online store: layout, write path, resident snapshots, direct reads and
cross-process refresh. ``featurecore.store.FeatureStore`` is the public entry point."""

from .batch import FieldSpec, GroupSchema, validate_batch
from ..layout import group_cf_name, open_database

__all__ = ["FieldSpec", "GroupSchema", "group_cf_name", "open_database", "validate_batch"]
