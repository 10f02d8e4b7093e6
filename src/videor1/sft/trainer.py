"""SFT cold start: supervised fine-tuning of Qwen2.5-VL on chain-of-thought records, on accelerate.

The loop in `train_sft` reads top to bottom: set up (records, model, optimizer, schedule, resume), then one
optimizer step per global batch, then save the final HF directory. The data side (order, decoding,
collate, loss) is in `videor1.sft.data`, the model side (precision, LoRA, merge) in `videor1.sft.model`;
checkpoints, metrics, seeding and skip logs are shared with the RL trainer (`videor1.train.common`).
Multi-GPU / multi-node runs go through `accelerate launch` (DDP, DeepSpeed ZeRO-2/3; see configs/accelerate).

Where we depart from the reference (Video-R1's SFT on TRL's SFTTrainer):

- The loss is on the response tokens only (`<think>…</think>\\n<answer>…</answer>` and the end-of-turn
  token); the reference also trained on the prompt and on the vision pad tokens.
- The loss is the mean over the target tokens of the whole optimizer step (all micro-batches and all
  processes), so batch size x accumulation splits give the same gradient.
- LoRA (`peft`) is an option, on the language model only by default (vLLM serves no LoRA on the vision
  tower); the adapter is merged at the end and saved as a plain HF directory. The reference had no LoRA
  and ran out of memory on 80 GB cards for some users.
- Bad samples (no `process`, undecodable media, longer than `max_length`) are logged to skipped.jsonl,
  counted in the metrics and left out, never replaced by a fallback sample; vision tokens are never cut.
  The run stops when more than `max_skipped_fraction` of the samples are bad (a broken dataset or decoder).
- Checkpoints resume exactly: the data position is the optimizer step (seeded order per epoch), and the
  optimizer, scheduler and RNG states are restored. The last incomplete global batch of an epoch is dropped.
- Weights are kept in float32 for full fine-tuning (bf16 runs as autocast, or as DeepSpeed's bf16 with
  fp32 master weights): a 1e-6 update vanishes in bf16 weights. For LoRA the frozen base may be bf16.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence, Union

import torch

from videor1.config import ConfigError, ImageConfig, VideoConfig, config_to_dict, load_config, save_config
from videor1.data.prompts import TEMPLATES
from videor1.sft.data import DataPlan, MicroBatch, SFTDataset, StepBatchSampler, make_collate, token_nll
from videor1.sft.model import (build_model, check_lora_placement, fill_deepspeed_auto, mixed_precision, param_groups,
                               save_final)

LORA_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CURVE_KEYS = ("loss", "lr", "grad_norm", "target_tokens", "samples_skipped", "step_time_s")


@dataclass(frozen=True)
class SFTConfig:
    """Every key of an SFT run (YAML + key=value overrides; see configs/sft_*.yaml)."""

    model: str  # HF directory of the starting model (e.g. Qwen2.5-VL-7B-Instruct, or a tiny model)
    train_data: str  # CoT records (JSON list or JSONL); every record needs `process`
    output_dir: str  # checkpoints, metrics.jsonl, tensorboard/, skipped.jsonl, curves.png, final/
    media_root: str | None = None  # directory the records' `path` is relative to (default: train_data's dir)
    seed: int = 0  # data order, LoRA init, dropout
    num_epochs: float = 1.0  # passes over the data (used when max_steps is not set; may be fractional)
    max_steps: int | None = None  # optimizer steps; overrides num_epochs (the data order wraps into new epochs)
    per_device_batch_size: int = 1  # samples per micro-batch on each process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-6  # peak learning rate (reference: 1e-6)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "cosine"
    warmup_ratio: float = 0.0  # fraction of the steps with linear warm-up
    weight_decay: float = 0.0  # AdamW decoupled weight decay (not on biases and norm weights)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    max_grad_norm: float = 1.0  # clip the global grad norm to this (0: no clipping, norm still logged)
    video: VideoConfig = field(default_factory=VideoConfig)  # frame sampling and pixel budget of videos
    image: ImageConfig = field(default_factory=ImageConfig)  # pixel budget of images
    max_length: int = 16384  # most tokens in one sample (prompt + vision + response); longer ones are skipped
    system_prompt: str | None = field(default_factory=lambda: TEMPLATES["sft_system_prompt"])  # None: template default
    lora: bool = False  # train LoRA adapters instead of all weights (merged into the final directory)
    lora_rank: int = 64  # LoRA rank r
    lora_alpha: float = 128.0  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA branch input
    lora_target_modules: tuple[str, ...] = LORA_DEFAULT_TARGETS  # module names that get adapters
    lora_include_vision: bool = False  # also adapt matching modules of the vision tower (vLLM cannot serve these)
    freeze_vision: bool = False  # full fine-tuning only: keep the vision tower frozen
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32; bf16 base for LoRA+bf16
    bf16: Union[bool, Literal["auto"]] = "auto"  # bf16 mixed precision: true, false, or auto (where supported)
    gradient_checkpointing: bool = False  # recompute activations in backward (saves memory)
    save_steps: int = 500  # write checkpoint-<step> every this many optimizer steps (0: only the final model)
    save_total_limit: int | None = 2  # keep only the newest N checkpoints (None: keep all)
    logging_steps: int = 1  # write a metrics line every this many steps (loss: token mean over the interval)
    resume: Union[bool, str] = False  # true: continue from the newest checkpoint in output_dir (fresh if none);
    #                 false: start fresh (refused if output_dir holds checkpoints); a path: continue from it
    num_workers: int = 0  # DataLoader worker processes decoding media
    num_threads: int | None = None  # torch CPU threads (None: torch's default; 1 is fastest for tiny models)
    max_skipped_fraction: float = 0.5  # stop when more than this fraction of the samples seen were skipped
    tensorboard: bool = True  # mirror metrics to <output_dir>/tensorboard
    progress: bool = True  # tqdm progress bar on the main process

    def validate(self) -> None:
        positive = {"per_device_batch_size": self.per_device_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "logging_steps": self.logging_steps, "max_length": self.max_length,
                    "learning_rate": self.learning_rate, "num_epochs": self.num_epochs, "lora_rank": self.lora_rank}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or unset, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or unset, got {self.num_threads}")
        if min(self.weight_decay, self.max_grad_norm, self.num_workers, self.save_steps) < 0:
            raise ConfigError("weight_decay, max_grad_norm, num_workers and save_steps must be >= 0")
        if not 0.0 <= self.lora_dropout < 1.0 or not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ConfigError("lora_dropout must be in [0, 1) and max_skipped_fraction in [0, 1]")
        if self.lora and not self.lora_target_modules:
            raise ConfigError("lora: true needs at least one module in lora_target_modules")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or unset, got {self.save_total_limit}")


def run_sft(config_path: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Load an SFTConfig (YAML + key=value overrides) and train; returns the final HF directory."""
    return train_sft(load_config(SFTConfig, config_path, list(overrides)))


# ----------------------------------------------------------------------------------------- the loop
def train_sft(cfg: SFTConfig) -> Path:
    """Supervised fine-tuning as configured; returns `<output_dir>/final` (LoRA merged, plain HF dir)."""
    from tqdm.auto import tqdm

    from videor1.train.common import MetricsLogger, plot_curves

    run = _setup(cfg)
    accelerator, main = run.accelerator, run.accelerator.is_main_process
    logger = MetricsLogger(run.out, cfg.tensorboard, resume_step=run.start if run.resumed else None, enabled=main)
    bar = tqdm(total=run.total_steps, initial=run.start, desc="sft", disable=not (main and cfg.progress),
               dynamic_ncols=True)
    interval = _Interval()
    last_good: MicroBatch | None = None  # run with weight 0 where a process's whole step was skipped (DDP)

    for step in range(run.start, run.total_steps):  # one optimizer step per global batch
        t0 = time.perf_counter()
        window = [next(run.batches) for _ in range(cfg.gradient_accumulation_steps)]
        lr = run.scheduler.get_last_lr()[0]
        stats = train_step(run.model, run.optimizer, window, accelerator, run.params, cfg.max_grad_norm,
                           dummy=last_good)
        run.scheduler.step()
        last_good = next((mb for mb in reversed(window) if mb.inputs is not None), last_good)
        _account(run, window, stats, step + 1)
        interval.add(stats, time.perf_counter() - t0)
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == run.total_steps:
            row = interval.flush() | {"lr": lr, "grad_norm": stats["grad_norm"], "epoch": run.plan.epoch_of(step + 1),
                                      "samples_skipped_total": run.counters["samples_skipped"]
                                      + run.counters["bad_records"]}
            logger.log(step + 1, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < run.total_steps:
            _save_checkpoint(run, step + 1)
    bar.close()
    logger.close()

    final = save_final(run.model, run.processor, accelerator, run.out / "final", lora=cfg.lora)
    if main:
        plot_curves(run.out / "metrics.jsonl", run.out / "curves.png", CURVE_KEYS)
    accelerator.end_training()
    return final


@dataclass
class _Run:
    """What the loop works with, made by `_setup`."""

    cfg: SFTConfig
    out: Path
    accelerator: Any
    processor: Any
    model: Any  # prepared by accelerate
    optimizer: Any  # prepared by accelerate
    scheduler: Any
    plan: DataPlan
    total_steps: int
    start: int  # optimizer steps already done (the checkpoint's step when resuming)
    resumed: bool
    counters: dict[str, int]  # bad_records (at load), samples_seen, samples_skipped (during training)
    batches: Iterator[MicroBatch]  # micro-batches from step `start` on
    params: list[torch.nn.Parameter]  # the trainable ones


def _setup(cfg: SFTConfig) -> _Run:
    """Records, model, optimizer, schedule and data order; restored from a checkpoint when resuming."""
    from transformers import get_scheduler

    from videor1.model.load import load_processor
    from videor1.train.common import latest_checkpoint, seed_everything, set_rng_state

    accelerator = _make_accelerator(cfg)
    out, main = Path(cfg.output_dir), accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = _resume_checkpoint(cfg, latest_checkpoint(out))
    if main and ckpt is None:
        (out / "skipped.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh skip log (as metrics.jsonl)
    records, n_bad = _load_records(cfg, out, write_log=main and ckpt is None)
    seed_everything(cfg.seed)
    processor = load_processor(cfg.model)
    model = build_model(cfg, ckpt, accelerator.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                                  betas=tuple(cfg.adam_betas))
    plan = DataPlan(len(records), cfg.seed, cfg.per_device_batch_size, cfg.gradient_accumulation_steps,
                    accelerator.num_processes, accelerator.process_index)
    try:
        plan.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    total = cfg.max_steps or max(1, math.floor(cfg.num_epochs * plan.steps_per_epoch))
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total),
                              num_training_steps=total)
    fill_deepspeed_auto(cfg, accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    counters = {"bad_records": n_bad, "samples_seen": 0, "samples_skipped": 0}
    state = _load_state(ckpt, accelerator) if ckpt else None
    start = _restore(state, ckpt, accelerator, optimizer, scheduler, plan, counters) if state else 0
    batches = iter(_loader(cfg, records, processor, plan, start, total))  # draws from torch's RNG: before restoring it
    if state is not None:
        set_rng_state(state["rng"])
        _trim_skip_log(out, start, main)
    if main:
        save_config(cfg, out / "sft_config.yaml")
    params = [p for p in model.parameters() if p.requires_grad]
    return _Run(cfg, out, accelerator, processor, model, optimizer, scheduler, plan, total, start, ckpt is not None,
                counters, batches, params)


def _make_accelerator(cfg: SFTConfig) -> Any:
    from accelerate import Accelerator

    from videor1.model.load import pick_device

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    # cpu=True without an accelerator lets `accelerate launch --multi_gpu` (torchrun) join CPU processes (gloo)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              mixed_precision=mixed_precision(cfg.bf16), cpu=pick_device().type == "cpu")
    check_lora_placement(cfg, accelerator)
    return accelerator


def _loader(cfg: SFTConfig, records: list[Any], processor: Any, plan: DataPlan, start: int, total: int) -> Any:
    """Micro-batches of steps `start .. total-1`, decoded and encoded by a DataLoader."""
    dataset = SFTDataset(records, _media_root(cfg), cfg.video.to_spec(), cfg.image.to_spec(), cfg.system_prompt)
    return torch.utils.data.DataLoader(dataset, batch_sampler=StepBatchSampler(plan, start, total),
                                       collate_fn=make_collate(processor, cfg.max_length),
                                       num_workers=cfg.num_workers)


def train_step(model: Any, optimizer: Any, window: Sequence[MicroBatch], accelerator: Any,
               params: Sequence[torch.nn.Parameter], max_grad_norm: float,
               dummy: MicroBatch | None = None) -> dict[str, float]:
    """Forward/backward over the micro-batches of one optimizer step, clip, step the optimizer.

    The loss is normalised by the target tokens of the whole step on all processes (accelerate divides
    by the accumulation steps and DDP averages over processes; `scale` undoes both). Empty micro-batches
    (every sample skipped) go first so that the micro-batch that synchronises gradients has a backward;
    with several processes, a process whose whole step was skipped runs `dummy` (an earlier micro-batch)
    with weight 0 so that it still joins the gradient all-reduce.
    """
    device = accelerator.device
    local = torch.tensor([sum(mb.n_targets for mb in window)], dtype=torch.float64, device=device)
    total_targets = float(accelerator.reduce(local, reduction="sum").item())
    scale = accelerator.gradient_accumulation_steps * accelerator.num_processes / max(total_targets, 1.0)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    for mb, weight in _passes(window, dummy, accelerator.num_processes):
        with accelerator.accumulate(model):
            if mb.inputs is None:
                continue
            inputs = {k: v.to(device) for k, v in mb.inputs.items()}
            labels = inputs.pop("labels")
            logits = model(**inputs, use_cache=False).logits
            nll, _ = token_nll(logits, labels)
            accelerator.backward(nll * (scale * weight))
            nll_sum += nll.detach().double() * weight
    if not accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation out of step: the last micro-batch did not synchronise")
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums = torch.tensor([float(nll_sum), sum(mb.n_tokens for mb in window), sum(mb.n_samples for mb in window),
                         sum(len(mb.skipped) for mb in window)], dtype=torch.float64, device=device)
    nll_total, tokens, samples, skipped = accelerator.reduce(sums, reduction="sum").tolist()
    return {"nll_sum": nll_total, "target_tokens": total_targets, "tokens": tokens, "samples": samples,
            "samples_skipped": skipped, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan")}


def _passes(window: Sequence[MicroBatch], dummy: MicroBatch | None, world: int) -> list[tuple[MicroBatch, float]]:
    """(micro-batch, loss weight) in run order: empty ones first; a weight-0 dummy where DDP needs a backward."""
    passes = [(mb, 1.0) for mb in sorted(window, key=lambda m: m.inputs is not None)]
    if world > 1 and all(mb.inputs is None for mb in window):
        if dummy is None:
            raise RuntimeError("every sample of this process's step was skipped before any usable sample was "
                               "seen; with several processes each one needs a backward (see skipped.jsonl)")
        passes[-1] = (dummy, 0.0)
    return passes


# ------------------------------------------------------------------------------------------- setup
def _media_root(cfg: SFTConfig) -> str:
    return cfg.media_root if cfg.media_root is not None else str(Path(cfg.train_data).parent)


def _load_records(cfg: SFTConfig, out: Path, *, write_log: bool) -> tuple[list[Any], int]:
    """Good CoT records; bad ones (and those without `process`) are logged to skipped.jsonl and counted."""
    from videor1.data.records import read_records
    from videor1.train.common import skip_log

    good, errors = read_records(cfg.train_data, _media_root(cfg))
    reasons = [(e.record_id, str(e)) for e in errors]
    records = []
    for rec in good:
        if rec.process:
            records.append(rec)
        else:
            reasons.append((rec.problem_id, f"file {cfg.train_data}, record {rec.problem_id!r}, field 'process': "
                                            "missing (SFT needs <think>...</think> reasoning)"))
    if write_log:
        for rid, reason in reasons:
            skip_log(out, rid, reason, step=0)
    n_all = len(good) + len(errors)
    if not records or len(reasons) > cfg.max_skipped_fraction * n_all:
        shown = "; ".join(r for _, r in reasons[:3])
        raise ConfigError(f"{cfg.train_data}: {len(reasons)} of {n_all} records are unusable for SFT "
                          f"(max_skipped_fraction {cfg.max_skipped_fraction}): {shown}")
    return records, len(reasons)


def _resume_checkpoint(cfg: SFTConfig, latest: Path | None) -> Path | None:
    """The checkpoint to continue from; a fresh run refuses an output_dir that already holds checkpoints."""
    if cfg.resume is False:
        if latest is not None:
            raise ConfigError(f"{cfg.output_dir} already holds {latest.name}: pass resume=true to continue it, "
                              "or use a new output_dir")
        return None
    if cfg.resume is True:
        return latest
    path = Path(cfg.resume)
    if not (path / "trainer_state.pt").is_file():
        raise ConfigError(f"resume: {path} is not a checkpoint directory (no trainer_state.pt)")
    return path


# ------------------------------------------------------------------------------------------ resume
def _plan_key(plan: DataPlan) -> dict[str, int]:
    return {"n_records": plan.n_records, "seed": plan.seed, "micro_batch": plan.micro_batch,
            "accumulation": plan.accumulation, "world": plan.world}


def _load_state(ckpt: Path, accelerator: Any) -> dict[str, Any]:
    from videor1.train.common import load_trainer_state

    return load_trainer_state(ckpt, rank=accelerator.process_index)


def _restore(state: dict[str, Any], ckpt: Path, accelerator: Any, optimizer: Any, scheduler: Any,
             plan: DataPlan, counters: dict[str, int]) -> int:
    """Load optimizer / scheduler / counters from checkpoint `ckpt`; return its step. The data order must match."""
    if state.get("plan") != _plan_key(plan):
        raise ConfigError(f"resume from {ckpt}: the data order differs (checkpoint {state.get('plan')}, "
                          f"now {_plan_key(plan)}); keep seed, batch sizes, processes and data, or resume=false")
    if (ckpt / "accelerator_state").is_dir():  # DeepSpeed / FSDP: sharded optimizer state
        accelerator.load_state(str(ckpt / "accelerator_state"))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    counters.update(state["counters"])
    return int(state["step"])


def _trim_skip_log(out: Path, step: int, main: bool) -> None:
    """Drop skip-log lines written after the checkpoint by the interrupted run (they will be written again)."""
    path = out / "skipped.jsonl"
    if not main or not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


# ------------------------------------------------------------------------------------- bookkeeping
def _account(run: _Run, window: Sequence[MicroBatch], stats: dict[str, float], step: int) -> None:
    """Log this process's skipped samples (skipped.jsonl + a warning), count them, stop if too many."""
    import logging

    from videor1.train.common import skip_log

    for mb in window:
        for s in mb.skipped:
            logging.getLogger(__name__).warning("skipped sample %r: %s", s.record_id, s.reason)
            skip_log(run.out, s.record_id, s.reason, path=s.path, step=step, rank=run.accelerator.process_index)
    counters = run.counters
    counters["samples_seen"] += int(stats["samples"] + stats["samples_skipped"])
    counters["samples_skipped"] += int(stats["samples_skipped"])
    seen, skipped, limit = counters["samples_seen"], counters["samples_skipped"], run.cfg.max_skipped_fraction
    if seen >= run.plan.global_batch and skipped > limit * seen:
        raise RuntimeError(f"{skipped} of {seen} samples were skipped (max_skipped_fraction {limit}); "
                           f"see {run.out / 'skipped.jsonl'}")


def _save_checkpoint(run: _Run, step: int) -> None:
    from videor1.train.common import save_checkpoint

    state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "plan": _plan_key(run.plan), "counters": dict(run.counters), "config": config_to_dict(run.cfg)}
    save_checkpoint(run.out, step, run.model, run.processor, state, accelerator=run.accelerator,
                    save_total_limit=run.cfg.save_total_limit)


class _Interval:
    """Sums over the steps between two metrics lines."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, stats: dict[str, float], seconds: float) -> None:
        for key in ("nll_sum", "target_tokens", "tokens", "samples", "samples_skipped"):
            self.sums[key] = self.sums.get(key, 0.0) + stats[key]
        self.sums["step_time_s"] = self.sums.get("step_time_s", 0.0) + seconds
        self.steps += 1

    def flush(self) -> dict[str, float]:
        s, n = self.sums, max(self.steps, 1)
        row = {"loss": s["nll_sum"] / max(s["target_tokens"], 1.0), "target_tokens": s["target_tokens"],
               "tokens": s["tokens"], "samples": s["samples"], "samples_skipped": s["samples_skipped"],
               "step_time_s": s["step_time_s"] / n}
        self.sums, self.steps = {}, 0
        return row
