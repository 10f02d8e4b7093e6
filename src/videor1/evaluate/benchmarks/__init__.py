"""The benchmark registry: every module in this package that defines a `Benchmark` subclass with a `name`.

Adding a benchmark is adding one module here (see `base.py` for the three methods an adapter implements);
nothing else is edited. An unknown name fails listing the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from videor1.evaluate.benchmarks.base import Benchmark, Item, LoadResult

__all__ = ["Benchmark", "Item", "LoadResult", "benchmark_names", "get_benchmark"]


@lru_cache(maxsize=1)
def _registry() -> dict[str, type[Benchmark]]:
    found: dict[str, type[Benchmark]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Benchmark) and obj is not Benchmark
                    and obj.__module__ == module.__name__ and obj.name):
                if obj.name in found:
                    raise RuntimeError(f"benchmark name {obj.name!r} defined twice ({module.__name__})")
                found[obj.name] = obj
    return found


def benchmark_names() -> list[str]:
    return sorted(_registry())


def get_benchmark(name: str) -> Benchmark:
    """An instance of the adapter called `name`."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]()
