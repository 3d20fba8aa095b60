"""``import featurecore`` and opening a store to serve import neither pandas, pyarrow, yaml nor
matplotlib (issue 11): a ranking worker pays for the offline stack only if it uses it.
Checked in a fresh interpreter, since this test process has imported them already."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import ITEMS, T0_US, populate

from featurecore.store import FeatureStore

HEAVY = ("pandas", "pyarrow", "matplotlib", "yaml")


def heavy_modules_after(code: str) -> list[str]:
    script = textwrap.dedent(code) + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_featurecore_loads_no_offline_or_plotting_library():
    assert heavy_modules_after("import featurecore") == []


def test_opening_a_store_and_serving_loads_no_offline_or_plotting_library(store_dir, example_repo):
    root = str(store_dir)
    with FeatureStore.open(root) as store:
        store.apply(example_repo)
        populate(store)
    for mode in ("primary", "secondary"):
        code = f"""
            import featurecore as fc
            with fc.FeatureStore.open({root!r}, mode={mode!r}) as store:
                request = fc.FeatureRequest(
                    "home_ranker_features:v18",
                    {{"user": "u1", "session": "s1", "item": {ITEMS!r}, "creator": ["c0"] * {len(ITEMS)}}},
                    {T0_US},
                )
                matrix = store.get_features(request)
                assert matrix.values.shape[0] == {len(ITEMS)}
        """
        assert heavy_modules_after(code) == [], mode


def test_import_featurecore_defers_numpy_and_the_store_until_a_name_is_used():
    code = """
        import sys
        import featurecore as fc
        early = sorted(m for m in ("numpy", "rocksdict", "featurecore._core", "featurecore.store") if m in sys.modules)
        assert early == [], early
        from featurecore import FeatureStore, pair_id
        from featurecore.store import FeatureStore as Direct
        assert FeatureStore is Direct and fc.FeatureStore is Direct and "numpy" in sys.modules
        assert pair_id("a", "b") == fc.pair_id("a", "b")
        assert set(fc.__all__) <= set(dir(fc))
        missing = [name for name in fc.__all__ if getattr(fc, name, None) is None]
        assert missing == [], missing
        try:
            fc.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        else:
            raise AssertionError("fc.no_such_name did not raise")
    """
    assert heavy_modules_after(code) == []


def test_a_server_worker_and_the_serving_collector_load_no_offline_library():
    """``featurecore serve``'s workers (forked from the supervisor, which imports what they
    run) must not hold pandas and pyarrow: ~80 MB a worker when ``monitoring`` imported
    its parity monitor, and through it the offline layer, eagerly."""
    assert [m for m in heavy_modules_after("import featurecore.server.worker") if m != "yaml"] == []
    code = """
        import featurecore.monitoring as mon
        from featurecore.monitoring import ServingCollector
        assert ServingCollector is mon.collector.ServingCollector
    """
    assert heavy_modules_after(code) == []


def test_every_monitoring_name_resolves_to_its_module_object():
    code = """
        import importlib
        import featurecore.monitoring as mon
        for name in mon.__all__:
            value = getattr(mon, name)
            assert value is getattr(importlib.import_module(mon._LAZY[name], "featurecore.monitoring"), name), name
        assert set(mon.__all__) == set(mon._LAZY) and set(mon.__all__) <= set(dir(mon))
        try:
            mon.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        else:
            raise AssertionError("mon.no_such_name did not raise")
    """
    heavy_modules_after(code)
