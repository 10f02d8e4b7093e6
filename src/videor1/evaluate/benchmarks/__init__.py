"""The benchmark registry, `BENCHMARKS`: every adapter class registers itself under its `name` when defined.

Adding a benchmark is one module here (see `base.py` for what an adapter supplies) plus its line in the
import below; nothing else is edited. An unknown name fails listing the known ones.
"""

from __future__ import annotations

# The built-in adapters: importing a module registers its benchmark.
from videor1.evaluate.benchmarks import (  # noqa: F401
    mmvu,
    mvbench,
    tempcompass,
    videomme,
    videommmu,
    videor1_records,
    vsibench,
)
from videor1.evaluate.benchmarks.base import BENCHMARKS, BadRow, Benchmark, Item, LoadResult, RowSource, SkipRow

__all__ = ["BENCHMARKS", "BadRow", "Benchmark", "Item", "LoadResult", "RowSource", "SkipRow", "benchmark_names",
           "get_benchmark"]


def benchmark_names() -> list[str]:
    """The registered benchmark names, sorted."""
    return BENCHMARKS.names()


def get_benchmark(name: str) -> Benchmark:
    """An instance of the adapter called `name`; ValueError listing the known names otherwise."""
    try:
        adapter = BENCHMARKS.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return adapter()
