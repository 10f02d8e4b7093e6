"""`videor1 eval` at 128 frames, end to end on a real video (bikes.mp4, 250 frames): the CLI's `--frames` with
`video.min_frames`, the decoder, the processor and the tiny model of Qwen2.5-VL and of Qwen3-VL. Qwen3-VL's
video processor reads its pixel limit per whole video (frames x H x W): with the previous limit passed on every
call (16384*28*28) it shrank these frames and the run failed ("processor changed video sizes")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import videor1.generation.engines as engines
from videor1.cli import app
from videor1.model.tiny import build_tiny

FRAMES = 128
PIXELS = 160 * 28 * 28   # x 128 frames: more than 16384*28*28 in all (the old per-call limit)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, bikes_mp4) -> Path:
    root = tmp_path_factory.mktemp("long_eval")
    (root / "media").mkdir()
    shutil.copy(bikes_mp4, root / "media/bikes.mp4")
    rec = {"problem_id": "q0", "problem": "Which way do the bikes move?", "data_type": "video",
           "problem_type": "multiple choice", "options": ["A. left", "B. right"], "solution": "<answer>A</answer>",
           "path": "media/bikes.mp4"}
    (root / "test.jsonl").write_text(json.dumps(rec) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_eval_at_128_frames(family, bench_dir, tiny_model_dir, tmp_path, monkeypatch, caplog):
    model = tiny_model_dir if family == "qwen2_5_vl" else build_tiny(tmp_path / "tiny", family=family, seed=0)
    grids = []
    real_encode = engines.encode

    def spy(processor, samples, **kwargs):
        batch = real_encode(processor, samples, **kwargs)
        grids.append(batch["video_grid_thw"].tolist())
        return batch

    monkeypatch.setattr(engines, "encode", spy)
    monkeypatch.setattr(engines, "_WARNED", set())
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", "--model", str(model), "--bench", "videor1",
                                   "--data", str(bench_dir / "test.jsonl"), "--media-root", str(bench_dir),
                                   "--out", str(out), "--frames", str(FRAMES), "--max-pixels", str(PIXELS),
                                   "--max-new-tokens", "2", "--batch-size", "1", f"video.min_frames={FRAMES}",
                                   "report_to=[]"])
    assert res.exit_code == 0, res.output
    # 64 x 160 vision tokens: past the tiny model's 4,096 positions, which HF runs anyway, with a warning
    assert "more than the model's max_position_embeddings 4096" in caplog.text
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["n_tokens"] >= 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["video"]["max_frames"] == FRAMES and meta["video"]["min_frames"] == FRAMES
    (t, h, w), = grids[0]
    assert t == FRAMES // 2                                     # 128 frames: 64 temporal patches
    patch = 14 if family == "qwen2_5_vl" else 16
    assert h * w * patch * patch <= PIXELS and h * w * patch * patch > PIXELS * 0.7   # the frame budget, kept
