"""The worker's ASGI app, importable by any ASGI server, for choosing the stack by
measurement (benchmarks/server_load.py --compare-stacks): serves FEATURECORE_STORE
without keys from one process, as one `featurecore serve` worker does."""

import os
import tempfile

from featurecore.server.app import AppOptions, Worker
from featurecore.store import FeatureStore

store = FeatureStore.open(os.environ["FEATURECORE_STORE"], mode="secondary")
app = Worker(store, AppOptions(auth=None), run_dir=tempfile.mkdtemp(prefix="featurecore-asgi-"), slot=0)
app.start()
