"""`report_to`: the trackers beside metrics.jsonl. W&B runs for real in offline mode (`WANDB_MODE=offline`): its
run files are read back (tests/wandb_offline.py) and compared with metrics.jsonl / scores.json; TensorBoard's
event files are read back with tensorboard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videor1 import trackers
from videor1.cli import app
from videor1.config import ConfigError, config_from_dict, load_config
from videor1.rl.config import RLConfig
from videor1.sft.config import SFTConfig
from videor1.train.metrics import read_metrics
from wandb_offline import offline_runs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = dict(video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
             image={"min_pixels": 3136, "max_pixels": 3136})


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """Real wandb, offline: nothing leaves the machine, nothing is written outside tmp_path."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "videor1-test",
                       "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                       "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(key, str(value))
    yield
    import wandb

    if wandb.run is not None:  # a test that failed half-way leaves no run open for the next one
        wandb.run.finish()


def _rl_config(model, synth_dir, out, **extra) -> RLConfig:
    base = dict(model=str(model), train_data=str(synth_dir / "rl.jsonl"), media_root=str(synth_dir),
                output_dir=str(out), algorithm="grpo", num_generations=2, prompts_per_step=1,
                max_completion_length=4, beta=0.0, learning_rate=1e-2, top_p=1.0, rewards=["accuracy", "format"],
                save_steps=2, report_to=["tensorboard", "wandb"], progress=False, seed=3, num_threads=1,
                max_steps=4, **SMALL)
    base.update(extra)
    return config_from_dict(RLConfig, base)


def _by_step(history: list[dict]) -> dict[int, dict]:
    return {int(row["_step"]): row for row in history if "_step" in row}


def _tensorboard_scalars(out: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_rl_run_killed_and_resumed_continues_the_same_wandb_run(tiny_model_dir, synth_dir, tmp_path,
                                                                 killed_after, wandb_offline):
    import videor1.rl.trainer as trainer

    out = tmp_path / "run"
    with killed_after(3):
        trainer.train(_rl_config(tiny_model_dir, synth_dir, out))
    first_id = json.loads((out / trackers.WANDB_RUN_FILE).read_text())["id"]
    trainer.train(_rl_config(tiny_model_dir, synth_dir, out, resume=True))

    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    runs = offline_runs(out)
    assert len(runs) == 2 and {r.run_id for r in runs} == {first_id}  # one W&B run, continued
    assert json.loads((out / trackers.WANDB_RUN_FILE).read_text())["id"] == first_id
    assert all(r.project == "videor1-test" for r in runs)
    killed, resumed = (_by_step(r.history) for r in runs)
    assert sorted(killed) == [1, 2, 3] and 4 in resumed and 1 not in resumed
    merged = {**killed, **resumed}  # the resumed run's step 3 (after the checkpoint) is the one that counts
    for row in metrics:
        got = merged[row["step"]]
        for key in ("loss", "reward", "lr", "grad_norm", "completion_length", "step_time"):
            assert got[key] == pytest.approx(row[key]), (row["step"], key)
        assert "engine" not in got  # strings stay in metrics.jsonl
    config = runs[0].config
    assert config["output_dir"] == str(out.resolve()) and config["command"] == "train"
    assert config["algorithm"] == "grpo" and config["learning_rate"] == 0.01 and config["videor1_version"]
    curves = [row for row in resumed.values() if row.get("curves/_type") == "image-file"]  # keys come nested
    assert len(curves) == 1 and (runs[1].config and curves[0]["curves/path"].endswith(".png"))
    assert list(out.glob(f"wandb/offline-run-*/files/{curves[0]['curves/path']}"))
    # TensorBoard: the steps after the checkpoint were purged and written again, once each
    loss = _tensorboard_scalars(out, "loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx([m["loss"] for m in metrics])


def test_sft_reports_its_metrics_and_curves_to_wandb(tiny_model_dir, synth_dir, tmp_path, wandb_offline):
    from videor1.sft.trainer import train_sft

    out = tmp_path / "sft"
    cfg = config_from_dict(SFTConfig, dict(model=str(tiny_model_dir), train_data=str(synth_dir / "cot.jsonl"),
                                           media_root=str(synth_dir), output_dir=str(out), max_steps=3,
                                           per_device_batch_size=2, learning_rate=5e-4, lr_scheduler="constant",
                                           save_steps=1000, report_to=["wandb"], progress=False, **SMALL))
    train_sft(cfg)
    metrics = read_metrics(out / "metrics.jsonl")
    [run] = offline_runs(out)
    history = _by_step(run.history)
    assert sorted(k for k, row in history.items() if "loss" in row) == [m["step"] for m in metrics] == [1, 2, 3]
    for row in metrics:
        assert history[row["step"]]["loss"] == pytest.approx(row["loss"])
    assert run.config["command"] == "sft" and run.config["output_dir"] == str(out.resolve())
    assert run.config["train_data"] == str(synth_dir / "cot.jsonl")
    assert any(row.get("curves/_type") == "image-file" for row in history.values())
    assert not (out / "tensorboard").exists()  # only the trackers asked for


def test_eval_sends_scores_and_plot_and_a_second_pass_continues_the_run(tiny_model_dir, synth_dir, tmp_path,
                                                                       wandb_offline):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--bench", "videor1", "--data", str(synth_dir / "test.jsonl"),
            "--media-root", str(synth_dir), "--out", str(out), "--frames", "4", "--max-pixels", "3136",
            "--max-new-tokens", "6", "--limit", "6", "--batch-size", "3", "--report-to", "wandb,tensorboard",
            "video.min_frames=4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [run] = offline_runs(out)
    scores = json.loads((out / "scores.json").read_text())
    assert run.summary["official/overall"] == pytest.approx(scores["official"]["overall"])
    assert run.summary["reference/overall"] == pytest.approx(scores["reference"]["overall"])
    assert run.summary["counts/items"] == scores["counts"]["items"] == 6
    assert run.config["command"] == "eval" and run.config["bench"] == "videor1"
    assert run.config["output_dir"] == str(out.resolve()) and run.config["report_to"] == ["wandb", "tensorboard"]
    assert any(row.get("scores/_type") == "image-file" for row in run.history)
    assert _tensorboard_scalars(out, "official/overall")[0][1] == pytest.approx(scores["official"]["overall"])

    again = CliRunner().invoke(app, args)  # the same folder again (nothing left to predict): the same W&B run
    assert again.exit_code == 0, again.output
    runs = offline_runs(out)
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id
    none = CliRunner().invoke(app, [*args[:args.index("--out") + 1], str(tmp_path / "quiet"),
                                    *args[args.index("--out") + 2:-3], "--report-to", "none"])
    assert none.exit_code == 0, none.output
    assert not (tmp_path / "quiet" / "wandb").exists() and not (tmp_path / "quiet" / "tensorboard").exists()


def test_asking_for_wandb_without_it_is_one_clear_line(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb"
                        else real(name, *a))
    result = CliRunner().invoke(app, ["train", "--config", str(CONFIGS / "rl_demo_cpu.yaml"),
                                      f"model={tiny_model_dir}", f"train_data={synth_dir / 'rl.jsonl'}",
                                      f"output_dir={tmp_path / 'run'}", "report_to=[tensorboard,wandb]"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: report_to: wandb is not installed (pip install 'videor1[wandb]')"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_report_to_checks_and_the_replaced_tensorboard_key(tmp_path):
    base = [f"model={tmp_path}", f"train_data={tmp_path / 'x.jsonl'}", f"output_dir={tmp_path / 'o'}"]
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'; known: tensorboard, wandb"):
        load_config(RLConfig, CONFIGS / "rl_demo_cpu.yaml", [*base, "report_to=[mlflow]"])
    with pytest.raises(ConfigError, match="named twice"):
        load_config(SFTConfig, CONFIGS / "sft_demo_cpu.yaml", [*base, "report_to=[wandb,wandb]"])
    old = tmp_path / "old.yaml"  # a config written before report_to
    old.write_text((CONFIGS / "sft_demo_cpu.yaml").read_text().replace("report_to: [tensorboard]",
                                                                         "tensorboard: false"))
    with pytest.raises(ConfigError, match=r"'tensorboard' of SFTConfig was replaced: use report_to"):
        load_config(SFTConfig, old, base)
    assert load_config(RLConfig, CONFIGS / "rl_demo_cpu.yaml", [*base, "report_to=[]"]).report_to in ((), [])
