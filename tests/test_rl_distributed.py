"""Two CPU processes under `accelerate launch` train together, with bad samples on one of them.

accelerate 1.15's `launch --cpu --num_processes 2` starts a single process unless an MPI hostfile is
given; `--multi_gpu --num_processes 2` starts two through torchrun, and the trainer (Accelerator(cpu=True)
on a machine without an accelerator) joins them with gloo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from videor1.rl.step import prompt_indices
from videor1.train.metrics import read_metrics
from wandb_offline import offline_runs

SEED = 5

LAUNCHER = textwrap.dedent('''
    import sys
    from accelerate import PartialState
    from videor1.rewards import register
    from videor1.rl.trainer import run_training

    @register("rl_test_variety", overwrite=True)
    def variety(completions, **columns):
        return [len(set(c)) / (1.0 + len(c)) for c in completions]

    final = run_training(None, sys.argv[1:])
    state = PartialState()
    print(f"rank={state.process_index} num_processes={state.num_processes} final={final}", flush=True)
''')


@pytest.mark.slow
@pytest.mark.parametrize("dynamic_sampling", [False, True])
def test_two_processes_train_with_unequal_skips(tiny_model_dir, synth_dir, tmp_path, dynamic_sampling):
    """Also: with report_to W&B (offline) only the main process opens a tracker run."""
    rows = [json.loads(x) for x in (synth_dir / "rl.jsonl").read_text().splitlines()]
    good = [r for r in rows if r["data_type"] == "video" and r["problem_type"] == "multiple choice"][:1] + \
        [r for r in rows if r["data_type"] == "image"][:1]
    for r in good:
        (tmp_path / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_dir / r["path"], tmp_path / r["path"])
    (tmp_path / "media" / "bad.mp4").write_bytes(b"garbage" * 50)
    bad = [dict(good[0], problem_id=f"bad-{i}", path="media/bad.mp4") for i in range(2)]
    # place the records so that the seeded data order gives rank 0 a good and rank 1 a bad one each step
    order = prompt_indices(4, SEED, 0, 4)
    rows = [None] * 4
    for slot, record in zip(order, [good[0], bad[0], good[1], bad[1]]):
        rows[slot] = record
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    out = tmp_path / "run"
    # one prompt per process and step, 2 steps = the 4 records once: rank 1 has nothing to train on in
    # either step (the zero-weighted dummy path) while rank 0 trains; with dynamic sampling the processes also
    # agree (one gather) on whether any of them kept a group
    overrides = [f"model={tiny_model_dir}", f"train_data={data}", f"media_root={tmp_path}", f"output_dir={out}",
                 "algorithm=tgrpo", "num_generations=2", "num_shuffled_generations=1", "prompts_per_step=1",
                 "max_steps=2", "max_completion_length=6", "beta=0.04", "learning_rate=1e-2",
                 "lr_scheduler=constant", "top_p=1.0", "rewards=[rl_test_variety]", "save_steps=0",
                 "report_to=[tensorboard,wandb]", "progress=false", "video.min_frames=4", "video.max_frames=4",
                 "video.min_pixels=3136", "video.max_pixels=3136", "image.min_pixels=3136",
                 "image.max_pixels=3136", "num_threads=1", "loss_type=dapo", f"seed={SEED}",
                 f"dynamic_sampling={str(dynamic_sampling).lower()}"]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(script), *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "num_processes=2" in proc.stdout, proc.stdout[-2000:]

    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert [m["prompts"] for m in metrics] == [1, 1] and [m["samples_skipped"] for m in metrics] == [1, 1]
    assert metrics[-1]["samples_skipped_total"] == 2
    [run] = offline_runs(out)   # one W&B run for the two processes, with the gathered metrics
    logged = {int(h["_step"]): h for h in run.history if "loss" in h}
    assert sorted(logged) == [1, 2] and [logged[m["step"]]["loss"] for m in metrics] == \
        pytest.approx([m["loss"] for m in metrics])
    assert all(h["num_processes"] == 2 for h in logged.values())  # the metrics of both processes, logged once
    assert all(np.isfinite(m["loss"]) for m in metrics)
    if dynamic_sampling:   # rank 0's one group per step (its completions differ, so do their rewards) is kept
        assert [m["kept_group_rate"] for m in metrics] == [1.0, 1.0]
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(s["id"] for s in skipped) == ["bad-0", "bad-1"]
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
