"""SFT cold start: supervised fine-tuning of Qwen2.5-VL on chain-of-thought records, on accelerate.

The loop in `train_sft` reads top to bottom: set up (records, model, optimizer, schedule, resume), then one
optimizer step per global batch, then save the final HF directory. The data side (order, decoding,
collate, loss) is in `videor1.sft.data`, LoRA in `videor1.sft.lora`, the keys in `videor1.sft.config`;
precision, records, resume, checkpoints, the final save, metrics, seeding and skip logs are shared with the RL
trainer (`videor1.train`).
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

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import ProcessorMixin, get_scheduler

from videor1.config import ConfigError, config_to_dict, load_config, save_config
from videor1.data.pipeline import make_loader
from videor1.data.records import Record
from videor1.limits import limits_in_force
from videor1.model.load import load_model, load_processor
from videor1.parallel import sequence
from videor1.sft.config import SFTConfig
from videor1.sft.data import (DataPlan, MicroBatch, SFTDataset, StepBatchSampler, dummy_micro_batch, first_target,
                              make_collate, token_nll)
from videor1.sft.lora import check_lora_placement, wrap_lora
from videor1.hub import push_at_end
from videor1.train.checkpoint import load_trainer_state, resolve_resume, save_checkpoint, save_final
from videor1.train.common import (enable_gradient_checkpointing, fill_deepspeed_auto, freeze_vision, load_records,
                                  media_root, mixed_precision, param_groups, process_sum, seed_everything,
                                  set_fsdp_wrap_classes, set_rng_state)
from videor1.train.engine import (announce_engine, equal_vision_calls, make_accelerator, padding_loss,
                                  whole_parameters)
from videor1.train.metrics import METRICS_FILE, SKIPPED_FILE, MetricsLogger, plot_curves, skip_log, trim_skip_log

__all__ = ["SFTConfig", "build_model", "model_dtype", "run_sft", "train_sft", "train_step"]

CURVE_KEYS = ("loss", "lr", "grad_norm", "target_tokens", "samples_skipped", "step_time_s")
_log = logging.getLogger(__name__)


def run_sft(config_path: str | Path | None, overrides: Sequence[str] = ()) -> Path:
    """Load an SFTConfig (YAML + key=value overrides) and train; returns the final HF directory."""
    return train_sft(load_config(SFTConfig, config_path, list(overrides)))


# ----------------------------------------------------------------------------------------- the loop
#: ``should_stop(step, model, processor)``: called after every optimizer step; True ends the run there.
StopCheck = Callable[[int, torch.nn.Module, ProcessorMixin], bool]


def train_sft(cfg: SFTConfig, *, should_stop: StopCheck | None = None) -> Path:
    """Supervised fine-tuning as configured; returns `<output_dir>/final` (LoRA merged, plain HF dir).
    The config's input limits are in force during the run (records read, media decoded) and restored afterwards.

    `should_stop` (optional) ends the run early: it is called after every optimizer step with the step number,
    the unwrapped model (in train mode; the callback may switch it to eval, it is put back) and the processor,
    and a True on the main process stops every process after that step; the final model is saved as at the
    end of a full run. The demo stops its cold start once a validation score is reached. It is called on
    every process with the parameters whole and local (gathered once around the call under ZeRO-3 / FSDP2:
    `videor1.train.engine.whole_parameters`), so its model calls are no collectives: it may evaluate on the
    main process only (as the demo's does) and return False elsewhere; it writes files on the main process
    only."""
    with limits_in_force(cfg.limits):
        return _train_sft(cfg, should_stop)


def _stop_now(run: "_Run", step: int, should_stop: StopCheck | None) -> bool:
    """`should_stop` on every process, the parameters gathered once around it under ZeRO-3 / FSDP2 (else any
    model forward would be a collective), so that its forwards are local; the main process's answer is
    shared with every process (one small all-reduce)."""
    if should_stop is None:
        return False
    accelerator = run.accelerator
    model = accelerator.unwrap_model(run.model)
    try:
        with whole_parameters(accelerator, run.model):
            answer = bool(should_stop(step, model, run.processor))
    finally:
        model.train()
    return process_sum(accelerator, float(answer and accelerator.is_main_process)) > 0


def _train_sft(cfg: SFTConfig, should_stop: StopCheck | None = None) -> Path:
    run = _setup(cfg)
    accelerator, main = run.accelerator, run.accelerator.is_main_process
    logger = MetricsLogger(run.out, cfg.report_to, resume_step=run.start if run.resumed else None, enabled=main,
                           command="sft", config=config_to_dict(cfg))
    bar = tqdm(total=run.total_steps, initial=run.start, desc="sft", disable=not (main and cfg.progress),
               dynamic_ncols=True)
    interval = _Interval()
    dummy = dummy_micro_batch(run.processor)  # run with weight 0 in place of a micro-batch whose samples were skipped

    last = run.start  # the last optimizer step done
    for step in range(run.start, run.total_steps):  # one optimizer step per global batch
        t0 = time.perf_counter()
        last = step + 1
        window = [next(run.batches) for _ in range(cfg.gradient_accumulation_steps)]
        lr = run.scheduler.get_last_lr()[0]
        stats = train_step(run.model, run.optimizer, window, accelerator, run.params, cfg.max_grad_norm,
                           dummy=dummy)
        run.scheduler.step()
        _account(run, window, stats, step + 1)
        interval.add(stats, time.perf_counter() - t0)
        stop = _stop_now(run, step + 1, should_stop)
        if stop or (step + 1) % cfg.logging_steps == 0 or step + 1 == run.total_steps:
            row = interval.flush() | {"lr": lr, "grad_norm": stats["grad_norm"], "epoch": run.plan.epoch_of(step + 1),
                                      "samples_skipped_total": run.counters["samples_skipped"]
                                      + run.counters["bad_records"],
                                      "engine": run.engine_name, "num_processes": accelerator.num_processes}
            logger.log(step + 1, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if stop:
            bar.write(f"sft: stopped at step {step + 1} (stop criterion met)")
            break
        if cfg.save_steps and (step + 1) % cfg.save_steps == 0 and step + 1 < run.total_steps:
            _save_checkpoint(run, step + 1)
    bar.close()

    final = save_final(run.model, run.processor, accelerator, run.out / "final", lora=cfg.lora)
    if main:
        logger.images({"curves": plot_curves(run.out / METRICS_FILE, run.out / "curves.png", CURVE_KEYS)}, last)
    logger.close()
    accelerator.end_training()
    push_at_end(cfg.push_to_hub, run.out, main)
    return final


@dataclass
class _Run:
    """What the loop works with, made by `_setup`."""

    cfg: SFTConfig
    out: Path
    accelerator: Accelerator
    processor: ProcessorMixin
    model: torch.nn.Module  # prepared by accelerate
    optimizer: torch.optim.Optimizer  # prepared by accelerate
    scheduler: torch.optim.lr_scheduler.LRScheduler
    plan: DataPlan
    total_steps: int
    start: int  # optimizer steps already done (the checkpoint's step when resuming)
    resumed: bool
    counters: dict[str, int]  # bad_records (at load), samples_seen, samples_skipped (during training)
    batches: Iterator[MicroBatch]  # micro-batches from step `start` on
    params: list[torch.nn.Parameter]  # the trainable ones
    engine_name: str  # what runs (videor1.train.engine.engine_name), in every metrics row


# ------------------------------------------------------------------------------------------- setup
def _setup(cfg: SFTConfig) -> _Run:
    """Records, model, optimizer, schedule and data order; restored from a checkpoint when resuming."""
    accelerator = _make_accelerator(cfg)
    out, main = Path(cfg.output_dir), accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = resolve_resume(cfg.resume, out, overwrite=cfg.overwrite)
    records, n_bad = load_records(cfg.train_data, cfg.media_root, out, write_log=main and ckpt is None,
                                  reject=_without_process(cfg.train_data), max_bad_fraction=cfg.max_skipped_fraction)
    seed_everything(cfg.seed)
    processor = load_processor(cfg.model)
    model = build_model(cfg, ckpt, accelerator.device)
    sequence.sequence_parallel(cfg, accelerator, (model,), (None, None))   # SP groups + attention (size 1: nothing)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                                  betas=tuple(cfg.adam_betas))
    plan = _plan(cfg, len(records), accelerator)
    total = cfg.max_steps or max(1, math.floor(cfg.num_epochs * plan.steps_per_epoch))
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total),
                              num_training_steps=total)
    fill_deepspeed_auto(accelerator, micro_batch=cfg.per_device_batch_size,
                        accumulation=cfg.gradient_accumulation_steps, max_grad_norm=cfg.max_grad_norm, model=model)
    set_fsdp_wrap_classes(accelerator, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    counters = {"bad_records": n_bad, "samples_seen": 0, "samples_skipped": 0}
    state = load_trainer_state(ckpt, rank=accelerator.process_index) if ckpt else None
    start = _restore(state, ckpt, accelerator, optimizer, scheduler, plan, counters) if state else 0
    batches = iter(_loader(cfg, records, processor, plan, start, total))  # draws from torch's RNG: before restoring it
    if state is not None:
        set_rng_state(state["rng"])
        if main:
            trim_skip_log(out, start)
    if main:
        save_config(cfg, out / "sft_config.yaml")
    params = [p for p in model.parameters() if p.requires_grad]
    info = announce_engine(accelerator, optimizer, model, out, "sft")
    return _Run(cfg, out, accelerator, processor, model, optimizer, scheduler, plan, total, start, ckpt is not None,
                counters, batches, params, info["engine"])


def _make_accelerator(cfg: SFTConfig) -> Accelerator:
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    accelerator = make_accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                   mixed_precision=mixed_precision(cfg.bf16))   # the launcher's engine, or an error
    check_lora_placement(cfg, accelerator)
    return accelerator


def _without_process(train_data: str) -> Callable[[Record], str | None]:
    """The reason a record is unusable for SFT (no `process` reasoning), or None."""
    def reject(rec: Record) -> str | None:
        if rec.process:
            return None
        return (f"file {train_data}, record {rec.problem_id!r}, field 'process': missing "
                "(SFT needs <think>...</think> reasoning)")
    return reject


def _plan(cfg: SFTConfig, n_records: int, accelerator: Accelerator) -> DataPlan:
    rank, world = sequence.data_parallel(accelerator)   # the ranks of an SP group read the same samples
    plan = DataPlan(n_records, cfg.seed, cfg.per_device_batch_size, cfg.gradient_accumulation_steps, world, rank)
    try:
        plan.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return plan


def model_dtype(cfg: SFTConfig) -> torch.dtype:
    """The dtype the weights are loaded in: float32 for full fine-tuning (a 1e-6 update vanishes in bf16
    weights; bf16 runs as autocast or as DeepSpeed's bf16 with fp32 master weights), bf16 for the frozen
    base of LoRA with bf16 on, or `model_dtype` when set."""
    if cfg.model_dtype != "auto":
        return getattr(torch, cfg.model_dtype)
    if cfg.lora and mixed_precision(cfg.bf16) == "bf16":
        return torch.bfloat16
    return torch.float32


def build_model(cfg: SFTConfig, ckpt: Path | None, device: torch.device) -> torch.nn.Module:
    """The model to train, in train mode: full weights (from `ckpt` when resuming) or base + LoRA adapters."""
    source = ckpt if ckpt is not None and not cfg.lora else cfg.model
    model = load_model(source, device=device, dtype=model_dtype(cfg))
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.lora:
        model = wrap_lora(cfg, model, ckpt)
    elif cfg.freeze_vision:
        freeze_vision(model)
    model.train()
    return model


def _loader(cfg: SFTConfig, records: list[Record], processor: ProcessorMixin, plan: DataPlan, start: int,
            total: int) -> Iterable[MicroBatch]:
    """Micro-batches of steps `start .. total-1`, decoded and encoded by a DataLoader."""
    from videor1.model.families import fit_media_specs

    video, image = fit_media_specs(processor, cfg.video, cfg.image)  # the family's frame factor
    dataset = SFTDataset(records, media_root(cfg.train_data, cfg.media_root), video, image, cfg.system_prompt)
    return make_loader(dataset, num_workers=cfg.num_workers, batch_sampler=StepBatchSampler(plan, start, total),
                       collate_fn=make_collate(processor, cfg.max_length))


# ------------------------------------------------------------------------------------------- one step
def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, window: Sequence[MicroBatch],
               accelerator: Accelerator,
               params: Sequence[torch.nn.Parameter], max_grad_norm: float,
               dummy: MicroBatch | None = None) -> dict[str, float]:
    """Forward/backward over the micro-batches of one optimizer step, clip, step the optimizer.

    The loss is normalised by the target tokens of the whole step on all processes (accelerate divides
    by the accumulation steps and DDP averages over processes; `scale` undoes both). Logits are computed
    only from the first target position of the micro-batch on (`logits_to_keep`: no vocabulary projection
    of the prompt and vision tokens) and no float32 copy of them is kept (`token_nll`).

    Invariant (what keeps DDP, ZeRO-2/3 and FSDP2 in step): every process makes exactly one forward and one
    backward per micro-batch slot, whatever was skipped: a micro-batch whose samples were all skipped is
    replaced by `dummy` (`videor1.sft.data.dummy_micro_batch`) with loss weight 0, and each forward runs the
    vision tower as often as on the process with the most media kinds (`equal_vision_calls`).
    """
    device = accelerator.device
    total_targets = process_sum(accelerator, sum(mb.n_targets for mb in window))
    scale = accelerator.gradient_accumulation_steps * accelerator.num_processes / max(total_targets, 1.0)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    for mb, weight in _passes(window, dummy):
        with accelerator.accumulate(model):
            inputs = {k: v.to(device) for k, v in mb.inputs.items()}
            labels = inputs.pop("labels")
            keep = min(labels.shape[1], labels.shape[1] - first_target(labels) + 1)   # no logits before the
            with equal_vision_calls(accelerator, model, inputs) as extra:             # first target's position
                if sequence.active():
                    nll, _ = sequence.token_nll(model, inputs, labels, keep)
                else:
                    nll, _ = token_nll(model(**inputs, logits_to_keep=keep, use_cache=False).logits, labels[:, -keep:])
            accelerator.backward(nll * (scale * weight) + padding_loss(extra))
            nll_sum += nll.detach().double() * weight
    if not accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation out of step: the last micro-batch did not synchronise")
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums = torch.tensor([float(nll_sum), sum(mb.n_tokens for mb in window), sum(mb.n_samples for mb in window),
                         sum(len(mb.skipped) for mb in window)], dtype=torch.float64, device=device)
    nll_total, tokens, samples, skipped = (accelerator.reduce(sums, reduction="sum") / sequence.replicas()).tolist()
    return {"nll_sum": nll_total, "target_tokens": total_targets, "tokens": tokens, "samples": samples,
            "samples_skipped": skipped, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan")}


def _passes(window: Sequence[MicroBatch], dummy: MicroBatch | None) -> list[tuple[MicroBatch, float]]:
    """(micro-batch, loss weight) in run order: one pass per slot, `dummy` with weight 0 for an empty one."""
    if dummy is None and any(mb.inputs is None for mb in window):
        raise ValueError("a micro-batch whose samples were all skipped needs a dummy to run in its place")
    return [(mb, 1.0) if mb.inputs is not None else (dummy, 0.0) for mb in window]


# ------------------------------------------------------------------------------------------ resume
def _plan_key(plan: DataPlan) -> dict[str, int]:
    return {"n_records": plan.n_records, "seed": plan.seed, "micro_batch": plan.micro_batch,
            "accumulation": plan.accumulation, "world": plan.world}


def _restore(state: dict[str, object], ckpt: Path, accelerator: Accelerator, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, plan: DataPlan, counters: dict[str, int]) -> int:
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


# ------------------------------------------------------------------------------------- bookkeeping
def _account(run: _Run, window: Sequence[MicroBatch], stats: dict[str, float], step: int) -> None:
    """Log this process's skipped samples (skipped.jsonl + a warning), count them, stop if too many."""
    for mb in window:
        for s in mb.skipped:
            _log.warning("skipped sample %r: %s", s.record_id, s.reason)
            skip_log(run.out, s.record_id, s.reason, path=s.path, step=step, rank=run.accelerator.process_index)
    counters = run.counters
    counters["samples_seen"] += int(stats["samples"] + stats["samples_skipped"])
    counters["samples_skipped"] += int(stats["samples_skipped"])
    seen, skipped, limit = counters["samples_seen"], counters["samples_skipped"], run.cfg.max_skipped_fraction
    if seen >= run.plan.global_batch and skipped > limit * seen:
        raise RuntimeError(f"{skipped} of {seen} samples were skipped (max_skipped_fraction {limit}); "
                           f"see {run.out / SKIPPED_FILE}")


def _save_checkpoint(run: _Run, step: int) -> None:
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
