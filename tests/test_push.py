"""`videor1 push` and `push_to_hub:`: a real SFT / RL run on the tiny model, its model card, and what would go to
the Hub. No network: the upload is patched at its single call site (`videor1.hub._upload`), and once
one level deeper (huggingface_hub's `HfApi.create_repo` / `create_commit`) to check our calls into the real
library's classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from videor1 import __version__
from videor1.atomic import model_fingerprint
from videor1.cli import app
from videor1.config import ConfigError, config_from_dict
from videor1 import hub as push_mod
from videor1.hub import CardInputs, model_card

SMALL = dict(video={"min_frames": 4, "max_frames": 4, "min_pixels": 3136, "max_pixels": 3136},
             image={"min_pixels": 3136, "max_pixels": 3136})


class Uploads:
    """Stands in for `_upload`: records every call, returns a repo URL."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, repo_id, model_dir, files, card, *, private):
        self.calls.append({"repo_id": repo_id, "model_dir": Path(model_dir), "files": list(files), "card": card,
                           "private": private})
        return f"https://huggingface.co/{repo_id}"


@pytest.fixture
def uploads(monkeypatch) -> Uploads:
    recorder = Uploads()
    monkeypatch.setattr(push_mod, "_upload", recorder)
    return recorder


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, synth_dir, tmp_path_factory) -> Path:
    """A finished SFT run folder with an evaluation of its final model inside it."""
    from videor1.data.media import ImageSpec, VideoSpec
    from videor1.evaluate.config import EvalConfig
    from videor1.evaluate.runner import run_eval
    from videor1.sft.config import SFTConfig
    from videor1.sft.trainer import train_sft

    out = tmp_path_factory.mktemp("push") / "sft"
    cfg = config_from_dict(SFTConfig, dict(model=str(tiny_model_dir), train_data=str(synth_dir / "cot.jsonl"),
                                           media_root=str(synth_dir), output_dir=str(out), max_steps=2,
                                           per_device_batch_size=2, learning_rate=5e-4, save_steps=1000,
                                           report_to=[], progress=False, **SMALL))
    final = train_sft(cfg)
    run_eval(EvalConfig(model=final, bench="videor1", data=synth_dir / "test.jsonl", media_root=synth_dir,
                        out=out / "eval-16", video=VideoSpec(max_frames=4, max_pixels=3136),
                        image=ImageSpec(max_pixels=3136), max_new_tokens=6, limit=4, report_to=()),
             echo=lambda *_: None)
    return out


def _card_config(card: str) -> dict:
    block = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_push_cli_uploads_final_with_a_card_of_the_run(sft_run, uploads):
    before = model_fingerprint(sft_run / "final")
    result = CliRunner().invoke(app, ["push", str(sft_run), "--repo", "me/tiny-sft", "--private"])
    assert result.exit_code == 0, result.output
    [call] = uploads.calls
    assert call["repo_id"] == "me/tiny-sft" and call["private"] is True
    assert call["model_dir"] == sft_run / "final"
    names = sorted(p.relative_to(sft_run / "final").as_posix() for p in call["files"])
    assert names == sorted(p.relative_to(sft_run / "final").as_posix()
                           for p in (sft_run / "final").rglob("*") if p.is_file())
    assert "model.safetensors" in names and "config.json" in names
    card, config = call["card"], yaml.safe_load((sft_run / "sft_config.yaml").read_text())
    assert card.startswith("---\n") and "pipeline_tag: video-text-to-text" in card
    assert f"Trained with videor1 {__version__}: SFT (full fine-tuning)." in card
    assert f"| base model | {config['model']} |" in card and f"| data | {config['train_data']} " in card
    assert f"| learning_rate | {config['learning_rate']} |" in card
    assert "| video | 4-4 frames at 2.0 fps, <= 3136 pixels per frame |" in card
    scores = json.loads((sft_run / "eval-16" / "scores.json").read_text())
    row = (f"| videor1 | 4 | {100 * scores['official']['overall']:.1f} | "
           f"{100 * scores['reference']['overall']:.1f} | 4 | {scores['counts']['errors']} |")
    assert row in card
    assert _card_config(card) == config  # the resolved config, whole
    assert "base_model:" not in card  # a local path is not a Hub id
    assert "| lora | False |" in card and "lora_rank" not in card.split("## Config")[0]
    assert model_fingerprint(sft_run / "final") == before  # the card is not written into the model directory
    assert "pushed" in result.output and "https://huggingface.co/me/tiny-sft" in result.output


def test_push_through_huggingface_hub_makes_one_commit(sft_run, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi

    seen = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: seen.update(repo=(repo_id, kw))
                        or f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kw: seen.update(
        commit=(repo_id, list(operations), kw)))
    url = push_mod.push(sft_run / "final", "me/tiny-sft", echo=lambda *_: None)  # a model directory works too
    assert url == "https://huggingface.co/me/tiny-sft"
    assert seen["repo"] == ("me/tiny-sft", {"private": False, "exist_ok": True, "repo_type": "model"})
    repo_id, operations, kw = seen["commit"]
    assert repo_id == "me/tiny-sft" and kw["repo_type"] == "model" and __version__ in kw["commit_message"]
    assert all(isinstance(op, CommitOperationAdd) for op in operations)
    paths = [op.path_in_repo for op in operations]
    assert paths[-1] == "README.md" and len(paths) == len(set(paths))
    card = operations[-1].path_or_fileobj
    assert isinstance(card, bytes) and b"SFT (full fine-tuning)" in card
    weights = next(op for op in operations if op.path_in_repo == "model.safetensors")
    assert Path(weights.path_or_fileobj) == sft_run / "final" / "model.safetensors"


def test_push_to_hub_at_the_end_of_rl_training(tiny_model_dir, synth_dir, tmp_path, uploads):
    from videor1.rl.config import RLConfig
    from videor1.rl.trainer import train

    out = tmp_path / "rl"
    cfg = config_from_dict(RLConfig, dict(
        model=str(tiny_model_dir), train_data=str(synth_dir / "rl.jsonl"), media_root=str(synth_dir),
        output_dir=str(out), algorithm="tgrpo", num_generations=2, num_shuffled_generations=1, prompts_per_step=1,
        max_completion_length=4, beta=0.0, learning_rate=1e-2, top_p=1.0, rewards=["accuracy", "format"],
        save_steps=0, report_to=[], progress=False, seed=3, num_threads=1, max_steps=1,
        push_to_hub="me/tiny-tgrpo", **SMALL))
    final = train(cfg)
    [call] = uploads.calls
    assert call["repo_id"] == "me/tiny-tgrpo" and call["model_dir"] == final and call["private"] is False
    card = call["card"]
    assert "Trained with videor1" in card and ": T-GRPO." in card
    for line in ("| num_generations | 2 |", "| num_shuffled_generations | 1 |", "| alpha | 0.3 |",
                 "| rewards | accuracy, format |"):
        assert line in card, line
    assert "No evaluation of this model was found" in card
    assert _card_config(card)["push_to_hub"] == "me/tiny-tgrpo"


def test_card_from_inputs_alone():
    inputs = CardInputs("org/m", "train", {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "algorithm": "grpo",
                                           "num_generations": 8, "alpha": 0.3, "train_data": "d.jsonl"},
                        base_model_on_hub=True, version="9.9")
    card = model_card(inputs)
    assert "base_model: Qwen/Qwen2.5-VL-7B-Instruct" in card and "videor1 9.9: GRPO." in card
    assert "| num_generations | 8 |" in card and "| alpha |" not in card  # T-GRPO's settings only for T-GRPO


def test_push_errors_are_one_line(sft_run, tmp_path, monkeypatch):
    runner = CliRunner()
    bad = runner.invoke(app, ["push", str(sft_run), "--repo", "not a repo id"])
    assert bad.exit_code == 2 and bad.output.startswith("error: push_to_hub: ")
    empty = runner.invoke(app, ["push", str(tmp_path), "--repo", "me/x"])
    assert empty.exit_code == 2 and "neither a run folder" in empty.output

    def offline(*args, **kwargs):
        raise OSError("Connection refused")

    monkeypatch.setattr(push_mod, "_upload", offline)
    down = runner.invoke(app, ["push", str(sft_run), "--repo", "me/x"])
    assert down.exit_code == 2
    assert down.output.strip() == "error: push to me/x failed: OSError: Connection refused"
    with pytest.raises(ConfigError, match="push_to_hub"):
        from videor1.sft.config import SFTConfig

        config_from_dict(SFTConfig, {"model": "m", "train_data": "d", "output_dir": "o", "push_to_hub": "a/b/c"})
