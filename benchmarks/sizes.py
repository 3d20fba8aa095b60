"""Benchmark sizes: the documented full size by default, a tiny one for smoke runs.

``FEATURECORE_BENCH_TINY=1`` makes every benchmark build a small data set and time a
round or two, so `.ci/run` runs each file in seconds and a benchmark cannot rot unseen
(an API change breaks it there, not on the next person who measures). Numbers from a tiny
run mean nothing, so gates only report in that mode (``gate``). Every new benchmark
takes its sizes from ``size`` and its gate verdicts through ``gate``.

    FEATURECORE_BENCH_TINY=1 python -m pytest benchmarks/bench_*.py -q \\
        --benchmark-min-rounds=1 --benchmark-max-time=0 --benchmark-warmup=off
"""

from __future__ import annotations

import os

TINY = os.environ.get("FEATURECORE_BENCH_TINY") == "1"


def size(full: int, tiny: int) -> int:
    """``full`` normally, ``tiny`` in a smoke run."""
    return tiny if TINY else full


def gate(failures: list[str]) -> None:
    """Fail on gate violations, except in a smoke run, where the sizes make them noise."""
    assert TINY or not failures, "; ".join(failures)
