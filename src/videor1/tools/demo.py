"""`videor1 demo`: the whole Video-R1 pipeline on the synthetic default, offline, on a CPU, in minutes.

Stages (each timed; the times go into the report):

1. **data** — the synthetic dataset (:func:`videor1.data.synth.build.make_dataset`): RL, CoT and test sets of
   real mp4 clips / PNG images; and a tiny random Qwen2.5-VL (:func:`videor1.model.tiny.build_tiny`).
2. **SFT** — cold start on the CoT set (:func:`videor1.sft.trainer.train_sft`), stopped once greedy accuracy on a
   small validation set of the CoT skill (``direction`` clips drawn apart from every other split) reaches
   ``sft_stop_at`` (checked every ``sft_check_every`` steps from ``sft_min_steps``; at most ``sft_steps``).
3. **RL** — from the SFT model, three runs with the same seed, data and budget (:data:`RL_RUNS`): GRPO,
   T-GRPO with the bonus in the reward (the paper) and T-GRPO with the bonus in the advantage
   (``temporal_bonus_mode``; :func:`videor1.rl.trainer.train`), ``rl_parallel`` at once, each in its own
   spawned process with one torch thread (:func:`run_rl_runs`; the weights are byte for byte those of the
   runs trained one after another).
4. **eval** — base, SFT and the three RL models on the synthetic test set, greedy, with ordered and with
   shuffled frames (:func:`videor1.evaluate.runner.run_eval`).
5. **report** — ``DIR/report.md`` (results table, per-task table, findings, stage times, settings) and
   PNG plots (training curves; accuracy bars), built by :mod:`videor1.tools.demo_report` from the files the run
   wrote.

What differs from the paper, by necessity: a ~1 M-parameter random model instead of Qwen2.5-VL-7B, a
synthetic dataset instead of Video-R1-260k / CoT-165k, learning rates of 5e-4 (SFT) and 1e-4 (RL) (a random tiny
model needs large steps; the paper uses 1e-6), 4 frames of 56x56 (84x84 for text) per video, a handful
of new tokens per completion, no KL term (``beta`` 0: no reference model, as the CPU RL config), and
minutes of training instead of days. The schedule is in :data:`DEFAULT` / :data:`QUICK`; every setting is
also written to ``DIR/demo_settings.json``.

How the default was sized (this project's 2-core CPU, 2026-12-01 and -02; the experiments behind each choice):

- Multiple-choice options are listed in one fixed order per task (``shuffle_options=False``), so a letter
  follows from the answer and the tiny model does not also have to learn to read the option list.
- The first redesign (2,048 CoT records x 200 SFT steps of 32, three RL runs of 200 steps) took 15 minutes and
  RL stayed within a few questions of SFT: RL had been started while SFT was still finding the motion cue.
- **When SFT finds the motion cue varies with the seed.** Direction accuracy against SFT steps (batch 16):
  with 45% direction in the CoT set, seed 0 0.42 / 0.81 / 1.00 at 150 / 200 / 250 steps, seed 1 0.42 at 300
  and 0.75 at 350; with 65% direction, seed 2 0.59 / 1.00 at 150 / 200, seed 1 still at chance at 250. A
  higher SFT learning rate (1e-3) did not bring it forward (seed 1 at chance at 250).
- **GRPO sharpens; it does not teach what SFT has only half found.** From seed 0's 200-step SFT (direction
  0.81): 150 GRPO steps at 1e-4 or 2e-4 raised the accuracy of its own rollouts from 0.36 to 0.51, while greedy
  test accuracy stayed put (direction 0.70-0.82): the questions SFT gets wrong are those whose groups are
  all wrong (about 40% of groups), and an all-wrong group has no gradient. lr 5e-4, or temperature 1.5,
  destroyed the model (direction 0.32; completions shortened to 9-16 tokens).
- **From an SFT that has the cue, GRPO generalises to held-out compositions.** From seed 0's 300-step SFT
  (direction 0.98): 150 GRPO steps at 1e-4 on an RL set weighted toward the temporal tasks took
  order-dependent accuracy 0.690 -> 0.759, the held-out short move (``direction_short``) 0.55 -> 0.79.
  A still distractor shape (``direction_distractor``) is no test of that: SFT already answers it as well as
  plain direction (1.00), so it keeps a small weight.
- The 2026-12-01 default (300 SFT steps, three RL runs of 120 steps one after another, 9 min 36 s) gave RL
  over SFT +0.016 to +0.042 on order-dependent accuracy over five seeds: seeds 1 and 3 had not found the cue
  at step 300 (direction 0.30 / 0.39), so RL had nothing to build on, and seeds 0, 2 and 4 had.
- **A cold start that stops on a validation criterion** (2026-12-02). Continued to 450 steps, seed 1's
  direction accuracy was 0.30 / 0.83 / 0.96 at 300 / 350 / 400 steps and seed 3's 0.39 / 1.00 at 300 / 350.
  So SFT now checks greedy accuracy on 32 ``direction`` clips of its own (:data:`DemoSettings.val_tasks`,
  a ``val`` split drawn apart from the rest) every 25 steps and stops at 0.9, at most 400 steps. Its minimum
  matters: from 150, seed 0 stopped at 150 (validation 1.00) and every RL run fell below that SFT
  (order-dependent 0.600 -> 0.504-0.565, direction 1.00 -> 0.74; its first rollouts were right 27% of the
  time): a model that has only just found the cue breaks when sampled from. From 250 the five seeds stop at
  250 / 400 / 250 / 325 / 250 and every SFT has the cue (order-dependent 0.609 +- 0.031 over the seeds, against
  0.480 +- 0.213 with 300 fixed steps).
- **More RL steps in the same time: the three runs side by side.** They are independent, so each runs in
  its own process with one thread (``rl_parallel``): 180 steps each took 274 s for seed 0 on the idle machine,
  where one after another 120 steps each had taken 364 s. More steps help: from seed 0's and seed 4's
  300-step SFT, GRPO's order-dependent accuracy at 60 / 120 / 180 / 240 steps was 0.678 / 0.696 / 0.687 / 0.722
  and 0.591 / 0.687 / 0.687 / 0.730 (SFT 0.652 and 0.617). 180 was sized on seed 1 (SFT to 400 steps) with
  other work on the machine (9 min 21 s); idle, seeds 0 and 1 take 6 min 41 s and 7 min 22 s, so there is
  room for more steps, but 240 did not help every variant (below).
- With 8 prompts a step, RL beat SFT on order-dependent accuracy over five seeds by +0.082 (GRPO), +0.068
  (T-GRPO) and +0.071 (T-GRPO-adv); 240 steps instead of 180 did not help every variant (seeds 0-3:
  +0.087 / +0.115 / +0.059). About a third of the groups were all wrong and a third all right: only ~40%
  of the groups carried an advantage, so a step's gradient came from about three prompts.
- **16 prompts a step, with dynamic sampling** (2026-12-02). Seeds 0-2, GRPO, RL - SFT: 8 prompts +0.081;
  8 prompts with DAPO's filter (``rl_dynamic_sampling``: groups all right or all wrong dropped before the
  loss) +0.035, with seed 2 breaking (direction 1.00 -> 0.74: a loss averaged over one or two groups is a
  noisy step); 16 prompts +0.110; 16 prompts with the filter +0.130. The larger batch is what helps; the
  filter keeps its cost down (the ~60% of rows without advantage skip the loss forward and backward) and
  did not hurt. On the idle machine the three runs take 291 s (seed 0) and 262 s (seed 1) at 16 prompts with
  the filter, against 274 s and 226 s at 8 prompts without; the demo 6 min 37 s and 6 min 56 s.
  Also tried from the same SFT models: lr 2e-4 (seeds 1 and 2 broke: 0.52 / 0.46) and two
  optimisation passes per batch (+0.018 over one, for a second loss forward and backward a step).
- Result over five seeds (``perf/tgrpo_vs_grpo.py``, README): RL beats SFT on order-dependent accuracy by
  +0.127 (GRPO), +0.117 (T-GRPO) and +0.130 (T-GRPO-adv), every one of the 15 runs above its SFT; the
  held-out short move goes from 0.58 to 0.84-0.85 on average; order-independent accuracy costs 0.01-0.03.
- ``--quick``: the same tasks weighted toward direction (:data:`QUICK_MIX`), 150 SFT steps of 16 (no stop
  criterion), 8 RL steps per run: SFT 0.552 on order-dependent questions (shuffled 0.172) on seed 0.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import load_records
from videor1.data.synth.build import make_dataset
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.runner import evaluate_records, run_eval
from videor1.model.families import get_family, shares_prefix_exactly
from videor1.model.tiny import build_tiny
from videor1.rl.config import RLConfig
from videor1.rl.trainer import train
from videor1.sft.config import SFTConfig
from videor1.sft.trainer import train_sft
from videor1.train.metrics import METRICS_FILE, read_metrics
from videor1.tools.demo_report import (chance_by_task, cold_start_finding, findings, plot_accuracy_bars, plot_training,
                                       results_table, rollout_findings, task_table)

MODEL_NAMES = ("base", "SFT", "GRPO", "T-GRPO", "T-GRPO-adv")
#: The RL runs: model name -> (algorithm, temporal_bonus_mode, output folder under the demo's out).
RL_RUNS: dict[str, tuple[str, str, str]] = {"GRPO": ("grpo", "reward", "rl_grpo"),
                                            "T-GRPO": ("tgrpo", "reward", "rl_tgrpo"),
                                            "T-GRPO-adv": ("tgrpo", "advantage", "rl_tgrpo_adv")}
TEMPORAL_TASKS = {"direction", "direction_short", "direction_distractor", "first_shape", "last_shape", "colour_change"}
#: The test set's task mix (60% order-dependent), a few questions of every type. Most order-dependent questions
#: are held-out compositions of the one temporal skill a tiny model learns in minutes (which way a square moves):
#: a short move (``direction_short``) and a still distractor shape beside it (``direction_distractor``).
DEMO_MIX: dict[str, float] = {
    "direction": 0.12,
    "direction_short": 0.28,
    "direction_distractor": 0.06,
    "last_shape": 0.06,
    "first_shape": 0.04,
    "colour_change": 0.04,
    "colour": 0.10,
    "image_colour": 0.06,
    "count": 0.05,
    "image_count": 0.03,
    "describe": 0.04,
    "distance": 0.04,
    "ocr": 0.04,
    "image_ocr": 0.04,
}

#: Tasks held out of the CoT set: RL and the test set have them, SFT never sees them (module doc).
HELD_OUT: tuple[str, ...] = ("last_shape", "direction_short", "direction_distractor")
#: The CoT (SFT) set: no held-out task, and two thirds direction, so that the cold start finds the motion cue.
COT_MIX: dict[str, float] = {"direction": 0.65, "first_shape": 0.05, "colour_change": 0.05, "colour": 0.08,
                             "image_colour": 0.04, "count": 0.03, "image_count": 0.02, "describe": 0.02,
                             "distance": 0.02, "ocr": 0.02, "image_ocr": 0.02}
#: The RL set: every task, weighted toward the held-out temporal ones (the reward is 0/1 on multiple choice:
#: prompts that no rollout can answer, e.g. OCR for this model, give no gradient).
RL_MIX: dict[str, float] = {"direction": 0.15, "direction_short": 0.35, "direction_distractor": 0.05,
                            "last_shape": 0.10, "first_shape": 0.07, "colour_change": 0.06, "colour": 0.06,
                            "image_colour": 0.04, "count": 0.03, "describe": 0.03, "distance": 0.02, "ocr": 0.02,
                            "image_ocr": 0.01, "image_count": 0.01}


@dataclass(frozen=True)
class DemoSettings:
    """Every knob of the demo (sizes, schedules, sampling). Two presets: DEFAULT and QUICK."""

    n_train: int = 512             # RL set size (prompts are drawn from it in a seeded order)
    n_cot: int = 2048              # CoT (SFT) set size (250-400 steps of 16 see each record 2-3 times)
    n_test: int = 192              # test questions (each evaluated with ordered and shuffled frames)
    tasks: Mapping[str, float] = field(default_factory=lambda: dict(DEMO_MIX))
    cot_tasks: Mapping[str, float] | None = field(default_factory=lambda: dict(COT_MIX))  # None: `tasks`
    rl_tasks: Mapping[str, float] | None = field(default_factory=lambda: dict(RL_MIX))  # None: `tasks`
    shuffle_options: bool = False  # fixed option order: the letter follows from the answer (module doc)
    hidden_size: int = 128         # tiny model: text hidden size
    num_layers: int = 2            # tiny model: text layers
    family: str = "qwen2_5_vl"     # tiny model family (videor1.model.families): qwen2_5_vl, qwen3_vl, qwen2_vl, qwen3_5...
    frames: int = 4                # frames per video (2 s clips sampled at fps)
    fps: float = 2.0
    max_pixels: int = 84 * 84      # per frame / image: 56x56 clips and 84x84 text clips are kept as drawn
    sft_steps: int = 400           # at most: the cold start stops once it has the skill (below)
    sft_batch: int = 16
    sft_lr: float = 5e-4
    n_val: int = 32                # validation clips of `val_tasks` (the CoT set's skill), apart from the rest
    val_tasks: Mapping[str, float] = field(default_factory=lambda: {"direction": 1.0})
    sft_stop_at: float | None = 0.9  # stop SFT once validation accuracy reaches this (None: run sft_steps)
    sft_check_every: int = 25      # validation every this many SFT steps ...
    sft_min_steps: int = 250       # ... from this step on (a cold start stopped at 150 broke under RL: module doc)
    rl_steps: int = 180
    rl_prompts: int = 16           # prompts per RL step (rolled out; with dynamic sampling ~40% reach the loss)
    rl_dynamic_sampling: bool = True  # DAPO's filter: groups all right or all wrong are dropped before the loss
    rl_generations: int = 4        # G (T-GRPO adds G/2 shuffled-frame completions per video prompt)
    rl_lr: float = 1e-4            # 5e-4 destroyed the model (module doc)
    rl_max_tokens: int = 32        # max new tokens per rollout completion
    rl_temperature: float = 1.0
    eval_max_tokens: int = 40
    eval_batch: int = 48
    num_workers: int = 1           # data-loader processes (SFT, RL) decoding the next items while the model works;
    #                                the results do not depend on it (evaluation: none, it was slower with one)
    torch_threads: int = 1         # intra-op threads: 1 is several times faster than 2 for a model this
    #                                small on a 2-core CPU (and far faster when other work shares the cores)
    rl_parallel: int = 3           # RL runs trained at once, one process each (1: one after another); the
    #                                results do not depend on it (module doc)


DEFAULT = DemoSettings()
#: The quick mix: the same tasks, weighted toward direction so that a 2-minute SFT learns one temporal skill.
QUICK_MIX: dict[str, float] = {"direction": 0.45, "direction_short": 0.08, "last_shape": 0.07, "colour": 0.20,
                               "image_colour": 0.08, "count": 0.03, "describe": 0.03, "distance": 0.02,
                               "ocr": 0.02, "image_count": 0.01, "image_ocr": 0.01}
QUICK = replace(DEFAULT, n_train=128, n_cot=512, n_test=48, sft_steps=150, sft_batch=16, sft_stop_at=None, rl_steps=8,
                rl_prompts=8,
                tasks=QUICK_MIX, cot_tasks={k: v for k, v in QUICK_MIX.items() if k not in HELD_OUT},
                rl_tasks=None)


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
                        tasks=dict(s.tasks), cot_tasks=None if s.cot_tasks is None else dict(s.cot_tasks),
                        rl_tasks=None if s.rl_tasks is None else dict(s.rl_tasks), shuffle_options=s.shuffle_options,
                        n_val=s.n_val if s.sft_stop_at is not None else 0, val_tasks=dict(s.val_tasks))


def make_model(out: Path, s: DemoSettings, seed: int) -> Path:
    return build_tiny(out / "models" / "base", family=s.family, seed=seed, hidden_size=s.hidden_size,
                      num_layers=s.num_layers)


def run_sft_stage(out: Path, s: DemoSettings, seed: int, base: Path, data: Mapping[str, Path]) -> Path:
    video, image = media_specs(s)
    cfg = SFTConfig(model=str(base), train_data=str(data["cot"]), media_root=str(data["media_root"]),
                    output_dir=str(out / "sft"), seed=seed, max_steps=s.sft_steps, per_device_batch_size=s.sft_batch,
                    learning_rate=s.sft_lr, lr_scheduler="constant", weight_decay=0.01, max_grad_norm=1.0,
                    video=video, image=image, save_steps=10 ** 9, resume=False, report_to=(),
                    num_workers=s.num_workers)
    return train_sft(cfg, should_stop=cold_start_check(out / "sft" / VAL_LOG, s, data))


VAL_LOG = "validation.jsonl"


def cold_start_check(log: Path, s: DemoSettings, data: Mapping[str, Path]) -> Callable[..., bool] | None:
    """The SFT stop criterion: greedy accuracy on the validation set (``data["val"]``) every
    ``s.sft_check_every`` steps from ``s.sft_min_steps`` on, True once it reaches ``s.sft_stop_at``; each check is
    appended to `log`. None (no early stop) without ``sft_stop_at`` or a validation set.

    It evaluates on the main process only and returns False on the others: the trainer calls it on every
    process with the parameters whole and local (`videor1.sft.trainer.train_sft`) and shares the main
    process's answer with all of them, so one evaluation and one log line per check, whatever the engine."""
    if s.sft_stop_at is None or "val" not in data:
        return None
    records = load_records(data["val"])
    video, image = media_specs(s)
    log.unlink(missing_ok=True)

    def check(step: int, model: torch.nn.Module, processor) -> bool:
        if step < s.sft_min_steps or step % s.sft_check_every or not PartialState().is_main_process:
            return False
        model.eval()
        summary = evaluate_records(model, processor, records, data["media_root"], video=video, image=image,
                                   batch_size=s.eval_batch, max_new_tokens=s.eval_max_tokens)
        score = float(summary["reference"]["overall"])
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "accuracy": score}) + "\n")
        return score >= s.sft_stop_at

    return check


def run_rl_stage(out: Path, s: DemoSettings, seed: int, start: Path, data: Mapping[str, Path],
                 name: str, *, progress: bool = True) -> Path:
    """One of :data:`RL_RUNS` from the SFT model (same seed, data and budget for each)."""
    algorithm, mode, folder = RL_RUNS[name]
    video, image = media_specs(s)
    cfg = RLConfig(model=str(start), train_data=str(data["rl"]), media_root=str(data["media_root"]),
                   output_dir=str(out / folder), algorithm=algorithm, temporal_bonus_mode=mode,
                   max_steps=s.rl_steps,
                   num_generations=s.rl_generations, prompts_per_step=s.rl_prompts,
                   dynamic_sampling=s.rl_dynamic_sampling, beta=0.0,
                   learning_rate=s.rl_lr, lr_scheduler="constant", max_grad_norm=5.0, seed=seed,
                   video=video, image=image, max_completion_length=s.rl_max_tokens,
                   temperature=s.rl_temperature, top_p=1.0, save_steps=0, resume=False, report_to=(),
                   num_workers=s.num_workers, progress=progress,
                   shared_prefix=shares_prefix_exactly(start))   # off for a hybrid family without a tested route
    cfg.validate()
    return train(cfg)


def run_rl_runs(out: Path, s: DemoSettings, seed: int, start: Path, data: Mapping[str, Path],
                echo: Callable[[str], None]) -> tuple[dict[str, Path], dict[str, float]]:
    """Every run of :data:`RL_RUNS` from `start`: ``s.rl_parallel`` at once, one process each.

    Returns each run's final model and its seconds. The runs share nothing but their inputs, and each
    process trains with ``s.torch_threads`` threads and no data-loader workers (the cores are already busy),
    so a run's result is the one it has when trained alone. Progress: one bar over all runs' steps, read
    from their ``metrics.jsonl``."""
    models: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    if s.rl_parallel <= 1:
        for name in RL_RUNS:
            echo(f"-- RL run {name} ({describe_run(name)})")
            models[name], seconds[name] = _rl_job(out, s, seed, start, data, name, progress=True)
        return models, seconds
    job = replace(s, num_workers=0)
    context = multiprocessing.get_context("spawn")   # no fork of a process whose torch has run threads
    logs = [out / folder / METRICS_FILE for _, _, folder in RL_RUNS.values()]
    with ProcessPoolExecutor(max_workers=runs_at_once(s), mp_context=context) as pool, \
            tqdm(total=len(RL_RUNS) * s.rl_steps, desc=f"RL ({len(RL_RUNS)} runs, {runs_at_once(s)} at once)",
                 unit="step") as bar:
        pending = {pool.submit(_rl_job, out, job, seed, start, data, name): name for name in RL_RUNS}
        while pending:
            done, _ = wait(pending, timeout=1.0)
            bar.update(sum(len(read_metrics(log)) for log in logs if log.is_file()) - bar.n)
            for future in done:
                name = pending.pop(future)
                models[name], seconds[name] = future.result()
                bar.write(f"-- RL run {name} ({describe_run(name)}): {seconds[name]:.0f} s")
    return {name: models[name] for name in RL_RUNS}, {name: seconds[name] for name in RL_RUNS}


def _rl_job(out: Path, s: DemoSettings, seed: int, start: Path, data: Mapping[str, Path],
            name: str, progress: bool = False) -> tuple[Path, float]:
    """One RL run of :func:`run_rl_runs` (in this process or a worker): (final model, seconds)."""
    torch.set_num_threads(s.torch_threads)
    t0 = time.perf_counter()
    path = run_rl_stage(out, s, seed, start, data, name, progress=progress)
    return path, time.perf_counter() - t0


def runs_at_once(s: DemoSettings) -> int:
    return min(max(s.rl_parallel, 1), len(RL_RUNS))


def describe_run(name: str) -> str:
    algorithm, mode, _ = RL_RUNS[name]
    return f"{algorithm}, bonus in the {mode}" if algorithm == "tgrpo" else algorithm


def run_eval_stage(out: Path, s: DemoSettings, seed: int, models: Mapping[str, Path],
                   data: Mapping[str, Path], echo: Callable[[str], None]) -> dict[str, dict]:
    video, image = media_specs(s)
    summaries = {}
    for name, path in models.items():
        echo(f"-- evaluating {name} ({path})")
        cfg = EvalConfig(model=Path(path), bench="videor1", data=Path(data["test"]),
                         media_root=Path(data["media_root"]), out=out / "eval" / name.lower().replace("-", ""),
                         video=video, image=image, batch_size=s.eval_batch, limit=None, decoding="greedy",
                         max_new_tokens=s.eval_max_tokens, shuffle_frames=True, seed=seed, engine="hf",
                         report_to=())
        summaries[name] = run_eval(cfg, echo=echo)
    return summaries


# ------------------------------------------------------------------------------------------- report
def write_report(out: Path, s: DemoSettings, seed: int, quick: bool, data: Mapping[str, Path],
                 summaries: Mapping[str, dict], timer: StageTimer,
                 rl_seconds: Mapping[str, float] | None = None) -> tuple[Path, str]:
    """report.md + the two PNGs; returns (report path, the results table)."""
    test = load_records(data["test"])
    chance = chance_by_task(load_records(data["rl"]) + test)   # the RL set shows each task's answer range
    group_chance = {}
    for label, flag in (("order-dependent", True), ("order-independent", False)):
        items = [chance.get(str(r.data_source).split("/", 1)[-1]) or 0.0 for r in test if bool(r.temporal) == flag]
        group_chance[label] = sum(items) / len(items) if items else None
    rl_dirs = {name: out / folder for name, (_, _, folder) in RL_RUNS.items()}
    curves = plot_training(out / "sft", rl_dirs,
                           out / "training_curves.png",
                           {"loss": ["loss"], "reward": ["reward"], "accuracy": ["accuracy", "ordered_accuracy"],
                            "ordered": ["ordered_accuracy"], "shuffled": ["shuffled_accuracy"],
                            "shift": ["temporal_advantage_shift"]})
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
                                           group_chance["order-independent"])],
        *[f"- {line}" for line in cold_start_finding(out / "sft", VAL_LOG, s.sft_stop_at, s.sft_steps)],
        *[f"- {line}" for line in rollout_findings(rl_dirs)], "",
        "## Plots", "",
        f"![training curves]({curves.name})", "", f"![accuracy]({bars.name})", "",
        "## Stage times", "",
        "| stage | seconds |", "| --- | --- |",
        *[f"| {name} | {sec:.1f} |" for name, sec in timer.seconds.items()], "",
        *([f"Wall time of each RL run ({runs_at_once(s)} at once): "
           + ", ".join(f"{name} {sec:.0f} s" for name, sec in rl_seconds.items()) + ".", ""]
          if rl_seconds else []),
        "## Settings", "", "```json", json.dumps(asdict(s), indent=1), "```", "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------------------------- main
def run_demo(out: str | os.PathLike = "runs/demo", *, quick: bool = False, seed: int = 0,
             settings: DemoSettings | None = None, echo: Callable[[str], None] = print,
             family: str | None = None) -> Path:
    """Run every stage into ``out`` (replacing a previous demo there); returns the report's path.

    `family` (a `videor1.model.families` name) replaces the settings' tiny-model family (default qwen2_5_vl).
    The RL runs start spawned processes (``rl_parallel`` > 1), which import the calling script again: a script
    that calls this needs the usual ``if __name__ == "__main__":`` guard (or ``rl_parallel=1``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    s = settings or (QUICK if quick else DEFAULT)
    if family is not None:
        s = replace(s, family=get_family(family).NAME)
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
    with timer.stage(f"3. RL: {', '.join(RL_RUNS)} ({runs_at_once(s)} at once)"):
        rl_models, rl_seconds = run_rl_runs(out, s, seed, sft, data, echo)
    models = {"base": base, "SFT": sft, **rl_models}
    with timer.stage("4. evaluation (ordered + shuffled frames)"):
        summaries = run_eval_stage(out, s, seed, models, data, echo)
    with timer.stage("5. report"):
        report, table = write_report(out, s, seed, quick, data, summaries, timer, rl_seconds)
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
