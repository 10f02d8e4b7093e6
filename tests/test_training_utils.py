"""videor1.train: RNG state (common), metrics log (resumable) and skip log (metrics), atomic checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from videor1.train.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state, save_checkpoint
from videor1.train.common import rng_state, seed_everything, set_rng_state
from videor1.train.metrics import MetricsLogger, plot_curves, read_metrics, skip_log


def _draw() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), float(torch.rand(1))


def test_rng_state_round_trip(tmp_path):
    seed_everything(3)
    _draw()
    np.random.randn()  # leaves a cached gaussian in numpy's state
    saved = rng_state()
    torch.save(saved, tmp_path / "rng.pt")
    expected = _draw()
    seed_everything(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draw() == expected
    seed_everything(3)
    first = _draw()
    seed_everything(3)
    assert _draw() == first


def test_metrics_logger_resume_drops_lines_past_the_checkpoint(tmp_path):
    log = MetricsLogger(tmp_path, report_to=["tensorboard"])
    for step in range(1, 6):
        log.log(step, {"loss": torch.tensor(step / 10), "lr": np.float32(0.5), "name": "x"})
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["loss"] == pytest.approx(0.2) and rows[1]["lr"] == 0.5
    assert list((tmp_path / "tensorboard").iterdir())

    resumed = MetricsLogger(tmp_path, report_to=(), resume_step=3)
    resumed.log(4, {"loss": 9.0})
    resumed.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == pytest.approx([0.1, 0.2, 0.3, 9.0])

    MetricsLogger(tmp_path, report_to=()).close()  # a fresh run starts a fresh log
    assert read_metrics(tmp_path / "metrics.jsonl") == []
    MetricsLogger(tmp_path / "other", enabled=False).log(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()


def test_plot_curves_writes_a_png(tmp_path):
    log = MetricsLogger(tmp_path, report_to=())
    for step in range(1, 4):
        log.log(step, {"loss": 1.0 / step, "reward": step})
    png = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", ["loss", "reward", "absent"])
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "none.png", ["absent"]) is None


def test_skip_log_appends(tmp_path):
    skip_log(tmp_path, "v7", "MediaError: truncated", step=2)
    skip_log(tmp_path, 8, "prompt too long")
    rows = [json.loads(x) for x in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert rows == [{"id": "v7", "reason": "MediaError: truncated", "step": 2}, {"id": 8, "reason": "prompt too long"}]


class _Saver(torch.nn.Module):
    """Stands in for a HF model: save_pretrained writes its weights with safetensors."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def save_pretrained(self, path, state_dict=None):
        from safetensors.torch import save_file

        save_file(state_dict or self.state_dict(), str(path / "model.safetensors"))


def test_checkpoints_atomic_keep_last_and_restore(tmp_path):
    model = _Saver()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.lin.weight.sum().backward()
    opt.step()
    seed_everything(0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, model, None, {"optimizer": opt.state_dict(), "data_position": step * 3},
                        save_total_limit=2)
    (tmp_path / "checkpoint-8.tmp").mkdir()  # a kill mid-save leaves only a .tmp directory
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "checkpoint-6" and (ckpt / "model.safetensors").is_file()
    expected = _draw()
    state = load_trainer_state(ckpt)
    assert state["step"] == 6 and state["data_position"] == 18
    new_opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    new_opt.load_state_dict(state["optimizer"])
    assert torch.equal(new_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    set_rng_state(state["rng"])
    assert _draw() == expected
    with pytest.raises(FileNotFoundError, match="rank 1"):
        load_trainer_state(ckpt, rank=1)
    assert latest_checkpoint(tmp_path / "missing") is None


def test_the_collectives_deepspeed_calls_do_not_flood_the_log_with_deprecation_warnings():
    """torch 2.14 marks the collectives DeepSpeed 0.19 calls as deprecated; libraries reset the once-per-place
    registry, so each step printed them again (256 lines in 3 tiny ZeRO-3 steps). Other warnings still show."""
    import warnings

    import torch.distributed as dist

    from videor1.train.engine import make_accelerator

    deprecated = [f.__deprecated__ for f in (dist.all_gather_into_tensor, dist.reduce_scatter_tensor,
                                             dist._all_gather_base, dist._reduce_scatter_base)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make_accelerator()
        for message in deprecated + ["`torch.distributed.all_reduce_coalesced` will be deprecated."]:
            warnings.warn(message, FutureWarning)
    assert [str(w.message) for w in seen if w.category is FutureWarning] == [
        "`torch.distributed.all_reduce_coalesced` will be deprecated."]
