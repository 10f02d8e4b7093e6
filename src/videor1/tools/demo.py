"""`videor1 demo`: the whole Video-R1 pipeline on the synthetic default, offline, on a CPU, in minutes.

Stages (each timed; the times go into the report):

1. **data** — the synthetic dataset (:func:`videor1.data.synth.build.make_dataset`): RL, CoT and test sets of
   real mp4 clips / PNG images; and a tiny random Qwen2.5-VL (:func:`videor1.model.tiny.build_tiny`).
2. **SFT** — cold start on the CoT set (:func:`videor1.sft.trainer.train_sft`).
3. **RL** — from the SFT model, two runs with the same seed, data and budget: GRPO and T-GRPO
   (:func:`videor1.rl.trainer.train`).
4. **eval** — base, SFT, GRPO and T-GRPO on the synthetic test set, greedy, with ordered and with shuffled
   frames (:func:`videor1.evaluate.runner.run_eval`).
5. **report** — ``DIR/report.md`` (results table, per-task table, findings, stage times, settings) and
   PNG plots (training curves; accuracy bars), built by :mod:`videor1.tools.demo_report` from the files the run
   wrote.

What differs from the paper, by necessity: a ~1 M-parameter random model instead of Qwen2.5-VL-7B, a
synthetic dataset instead of Video-R1-260k / CoT-165k, learning rates of 5e-4 (SFT) and 5e-5 (RL) (a random tiny
model needs large steps; the paper uses 1e-6), 4 frames of 56x56 (84x84 for text) per video, a handful
of new tokens per completion, no KL term (``beta`` 0: no reference model, as the CPU RL config), and
minutes of training instead of days. The schedule is in :data:`DEFAULT` / :data:`QUICK`; every setting is
also written to ``DIR/demo_settings.json``.

How the default was sized (seed 0, this project's 2-core CPU, 2026-12-01):

- Multiple-choice options are listed in one fixed order per task (``shuffle_options=False``), so a letter
  follows from the answer and the tiny model does not also have to learn to read the option list.
- 512 CoT records x 200 SFT steps of 16 taught direction (0.76) but left colour at chance (the model said
  "red" to every colour question), although colour alone reaches 0.95 in 200 steps: the mix is slow, not
  too hard. 2,048 CoT records x 250 steps of 32 (about 2 minutes) reach direction 1.00 and colour ~0.6.
  Direction then leaves RL nothing to add on this seed; colour_change and the open answers do.
- RL at lr 2e-4 or 1e-4 for 100 steps undid much of the colour skill (0.58 -> 0.21 / 0.37); at 5e-5 GRPO
  kept it (0.58) in that run and kept most of it (0.63 -> 0.53) in the run the README reports.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import load_records
from videor1.data.synth.build import make_dataset
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.runner import run_eval
from videor1.model.tiny import build_tiny
from videor1.rl.config import RLConfig
from videor1.rl.trainer import train
from videor1.sft.config import SFTConfig
from videor1.sft.trainer import train_sft
from videor1.tools.demo_report import (chance_by_task, findings, plot_accuracy_bars, plot_training, results_table,
                                       task_table)

MODEL_NAMES = ("base", "SFT", "GRPO", "T-GRPO")
TEMPORAL_TASKS = {"direction", "first_shape", "colour_change"}
#: The demo's task mix: mostly multiple choice that a tiny model learns in minutes, both order-dependent
#: (direction) and order-independent (colour), plus a few questions of every other type.
DEMO_MIX: dict[str, float] = {
    "direction": 0.40,
    "colour": 0.20,
    "image_colour": 0.10,
    "colour_change": 0.05,
    "count": 0.05,
    "image_count": 0.04,
    "describe": 0.04,
    "distance": 0.04,
    "ocr": 0.04,
    "image_ocr": 0.04,
}


@dataclass(frozen=True)
class DemoSettings:
    """Every knob of the demo (sizes, schedules, sampling). Two presets: DEFAULT and QUICK."""

    n_train: int = 512             # RL set size (prompts are drawn from it in a seeded order)
    n_cot: int = 2048              # CoT (SFT) set size (512, repeated 6 times, left colour at chance)
    n_test: int = 96               # test questions (each evaluated with ordered and shuffled frames)
    tasks: Mapping[str, float] = field(default_factory=lambda: dict(DEMO_MIX))
    shuffle_options: bool = False  # fixed option order: the letter follows from the answer (module doc)
    hidden_size: int = 128         # tiny model: text hidden size
    num_layers: int = 2            # tiny model: text layers
    frames: int = 4                # frames per video (2 s clips sampled at fps)
    fps: float = 2.0
    max_pixels: int = 84 * 84      # per frame / image: 56x56 clips and 84x84 text clips are kept as drawn
    sft_steps: int = 250
    sft_batch: int = 32
    sft_lr: float = 5e-4
    rl_steps: int = 100
    rl_prompts: int = 8            # prompts per RL step
    rl_generations: int = 4        # G (T-GRPO adds G/2 shuffled-frame completions per video prompt)
    rl_lr: float = 5e-5             # 1e-4 and above undo part of what SFT taught (colour) in 100 steps
    rl_max_tokens: int = 32        # max new tokens per rollout completion
    rl_temperature: float = 1.0
    eval_max_tokens: int = 40
    eval_batch: int = 48
    torch_threads: int = 1         # intra-op threads: 1 is several times faster than 2 for a model this
    #                                small on a 2-core CPU (and far faster when other work shares the cores)


DEFAULT = DemoSettings()
QUICK = replace(DEFAULT, n_train=128, n_cot=256, n_test=48, sft_steps=80, sft_batch=16, rl_steps=6)


# ------------------------------------------------------------------------------------------- stages
class StageTimer:
    """Wall-clock seconds per named stage, in order."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.seconds: dict[str, float] = {}
        self.echo = echo

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.echo(f"\n== {name} ==")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.echo(f"== {name}: {self.seconds[name]:.1f} s ==")


def media_specs(s: DemoSettings) -> tuple[VideoSpec, ImageSpec]:
    """The one video / image spec of the demo: SFT, both RL runs and the evaluation all use it."""
    return (VideoSpec(fps=s.fps, min_frames=s.frames, max_frames=s.frames, max_pixels=s.max_pixels),
            ImageSpec(max_pixels=s.max_pixels))


def make_data(out: Path, s: DemoSettings, seed: int) -> dict[str, Path]:
    return make_dataset(out / "data", n_train=s.n_train, n_test=s.n_test, n_cot=s.n_cot, seed=seed,
                        tasks=dict(s.tasks), shuffle_options=s.shuffle_options)


def make_model(out: Path, s: DemoSettings, seed: int) -> Path:
    return build_tiny(out / "models" / "base", seed=seed, hidden_size=s.hidden_size, num_layers=s.num_layers)


def run_sft_stage(out: Path, s: DemoSettings, seed: int, base: Path, data: Mapping[str, Path]) -> Path:
    video, image = media_specs(s)
    cfg = SFTConfig(model=str(base), train_data=str(data["cot"]), media_root=str(data["media_root"]),
                    output_dir=str(out / "sft"), seed=seed, max_steps=s.sft_steps, per_device_batch_size=s.sft_batch,
                    learning_rate=s.sft_lr, lr_scheduler="constant", weight_decay=0.01, max_grad_norm=1.0,
                    video=video, image=image, save_steps=10 ** 9, resume=False, tensorboard=False)
    return train_sft(cfg)


def run_rl_stage(out: Path, s: DemoSettings, seed: int, start: Path, data: Mapping[str, Path],
                 algorithm: str) -> Path:
    video, image = media_specs(s)
    cfg = RLConfig(model=str(start), train_data=str(data["rl"]), media_root=str(data["media_root"]),
                   output_dir=str(out / f"rl_{algorithm}"), algorithm=algorithm, max_steps=s.rl_steps,
                   num_generations=s.rl_generations, prompts_per_step=s.rl_prompts, beta=0.0,
                   learning_rate=s.rl_lr, lr_scheduler="constant", max_grad_norm=5.0, seed=seed,
                   video=video, image=image, max_completion_length=s.rl_max_tokens,
                   temperature=s.rl_temperature, top_p=1.0, save_steps=0, resume=False, tensorboard=False)
    cfg.validate()
    return train(cfg)


def run_eval_stage(out: Path, s: DemoSettings, seed: int, models: Mapping[str, Path],
                   data: Mapping[str, Path], echo: Callable[[str], None]) -> dict[str, dict]:
    video, image = media_specs(s)
    summaries = {}
    for name, path in models.items():
        echo(f"-- evaluating {name} ({path})")
        cfg = EvalConfig(model=Path(path), bench="videor1", data=Path(data["test"]),
                         media_root=Path(data["media_root"]), out=out / "eval" / name.lower().replace("-", ""),
                         video=video, image=image, batch_size=s.eval_batch, limit=None, decoding="greedy",
                         max_new_tokens=s.eval_max_tokens, shuffle_frames=True, seed=seed, engine="hf")
        summaries[name] = run_eval(cfg, echo=echo)
    return summaries


# ------------------------------------------------------------------------------------------- report
def write_report(out: Path, s: DemoSettings, seed: int, quick: bool, data: Mapping[str, Path],
                 summaries: Mapping[str, dict], timer: StageTimer) -> tuple[Path, str]:
    """report.md + the two PNGs; returns (report path, the results table)."""
    test = load_records(data["test"])
    chance = chance_by_task(load_records(data["rl"]) + test)   # the RL set shows each task's answer range
    group_chance = {}
    for label, flag in (("order-dependent", True), ("order-independent", False)):
        items = [chance.get(str(r.data_source).split("/", 1)[-1]) or 0.0 for r in test if bool(r.temporal) == flag]
        group_chance[label] = sum(items) / len(items) if items else None
    curves = plot_training(out / "sft", {"GRPO": out / "rl_grpo", "T-GRPO": out / "rl_tgrpo"},
                           out / "training_curves.png",
                           {"loss": ["loss"], "reward": ["reward"], "accuracy": ["accuracy", "ordered_accuracy"],
                            "ordered": ["ordered_accuracy"], "shuffled": ["shuffled_accuracy"]})
    bars = plot_accuracy_bars(summaries, out / "accuracy_bars.png", group_chance)
    table = results_table(summaries)
    n_dep = sum(1 for r in test if r.temporal)
    lines = [
        "# Video-R1 demo report", "",
        f"Seed {seed}, {'quick' if quick else 'default'} schedule; {platform.machine()} CPU with "
        f"{os.cpu_count()} cores; total {sum(timer.seconds.values()):.0f} s. Every number below was "
        "measured in this run.", "",
        f"## Results on the synthetic test set ({len(test)} questions: {n_dep} order-dependent, "
        f"{len(test) - n_dep} order-independent; greedy decoding)", "",
        "Accuracy is the reference protocol's score per question (multiple choice and counts: exact; OCR: "
        "1 - WER; free-form: ROUGE; regression: MRA), averaged. *Shuffled*: the same questions with each "
        "video's frames in a seeded random order (images are unchanged). Format reward: share of outputs "
        "of the form `<think>…</think><answer>…</answer>`. Completion tokens: mean generated length.", "",
        table, "",
        f"Guessing baseline: order-dependent {_pct(group_chance['order-dependent'])}, order-independent "
        f"{_pct(group_chance['order-independent'])} (1/#options for multiple choice, 1/#answers for counts, "
        "0 for open answers).", "",
        "## By task (ordered frames)", "",
        task_table(summaries, chance, TEMPORAL_TASKS), "",
        "## Findings (computed from the tables)", "",
        *[f"- {line}" for line in findings(summaries, group_chance["order-dependent"],
                                           group_chance["order-independent"])], "",
        "## Plots", "",
        f"![training curves]({curves.name})", "", f"![accuracy]({bars.name})", "",
        "## Stage times", "",
        "| stage | seconds |", "| --- | --- |",
        *[f"| {name} | {sec:.1f} |" for name, sec in timer.seconds.items()], "",
        "## Settings", "", "```json", json.dumps(asdict(s), indent=1), "```", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------------- main
def run_demo(out: str | os.PathLike = "runs/demo", *, quick: bool = False, seed: int = 0,
             settings: DemoSettings | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run every stage into ``out`` (replacing a previous demo there); returns the report's path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    s = settings or (QUICK if quick else DEFAULT)
    out = Path(out)
    _fresh_dir(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(s.torch_threads)
    try:
        return _run_stages(out, s, quick, seed, echo)
    finally:
        torch.set_num_threads(threads)


def _run_stages(out: Path, s: DemoSettings, quick: bool, seed: int, echo: Callable[[str], None]) -> Path:
    (out / "demo_settings.json").write_text(json.dumps({"seed": seed, "quick": quick, **asdict(s)}, indent=1))
    timer = StageTimer(echo)
    with timer.stage("1. data + tiny model"):
        data = make_data(out, s, seed)
        base = make_model(out, s, seed)
    with timer.stage("2. SFT cold start"):
        sft = run_sft_stage(out, s, seed, base, data)
    with timer.stage("3a. RL: GRPO"):
        grpo = run_rl_stage(out, s, seed, sft, data, "grpo")
    with timer.stage("3b. RL: T-GRPO"):
        tgrpo = run_rl_stage(out, s, seed, sft, data, "tgrpo")
    with timer.stage("4. evaluation (ordered + shuffled frames)"):
        summaries = run_eval_stage(out, s, seed, dict(zip(MODEL_NAMES, (base, sft, grpo, tgrpo))), data, echo)
    with timer.stage("5. report"):
        report, table = write_report(out, s, seed, quick, data, summaries, timer)
    echo("\n" + table)
    echo(f"\nreport: {report}")
    return report


def _fresh_dir(out: Path) -> None:
    """Start from an empty output directory; refuse to wipe one that is not a previous demo."""
    if out.exists() and any(out.iterdir()):
        if not (out / "demo_settings.json").is_file():
            raise FileExistsError(f"{out} exists and is not a previous demo output (no demo_settings.json); "
                                  "pick another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
