"""The online store: the storage seam (backend.py, RocksDB: backend_rocksdb.py), write
path, resident snapshots, direct reads and cross-process refresh.
``featurecore.store.FeatureStore`` is the public entry point."""

from .batch import FieldSpec, GroupSchema, validate_batch
from ..layout import group_cf_name

__all__ = ["FieldSpec", "GroupSchema", "group_cf_name", "validate_batch"]
