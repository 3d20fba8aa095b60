"""Storage below the registry: the record-store interface the registry, lineage and
consent keep their records through (``records.RecordStore``) and the one module that
speaks RocksDB's primitives (``rocksdb``: options, opening a database, records).

The online layer builds its storage seam on top: ``online/backend.py``'s
``OnlineBackend`` extends ``RecordStore`` and ``online/backend_rocksdb.py``'s
``RocksDBBackend`` extends ``rocksdb.RocksDBRecords``. Nothing else in featurecore
uses RocksDB's Python binding (tests/test_online_backend.py checks it).
"""
