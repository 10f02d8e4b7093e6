"""GRPO / T-GRPO training on accelerate: the loop reads top to bottom in `train`.

One step, on every process: take `prompts_per_step` prompts (a seeded, resumable order) -> decode media
and encode the prompts -> ONE generate call for G ordered completions per prompt and, in T-GRPO, G~
completions per video prompt on a freshly shuffled frame order -> rewards (the registry's, weighted) ->
temporal bonus and length bonus -> group advantages -> (`dynamic_sampling`: DAPO's filter drops the groups
whose rewards are all equal) -> policy loss over the completion tokens on the SAME
encoded prompt batch (pixel tensors and second_per_grid_ts) the rollout used -> backward -> clip -> step,
`num_iterations` times. Metrics are gathered once per step; checkpoints are atomic and resume exactly.

Where we depart from the paper and the reference code:
- The temporal bonus is decided per prompt group (p and p~ of the prompt's own ordered and shuffled
  completions), so any number of prompts per device works (the reference used the local batch means).
  The comparison p > mu p~ ("gt", default) or p >= mu p~ ("ge", the reference code) is configurable.
- A fresh random frame permutation per step and per video (never the identity); `shuffle_unit` picks
  single frames (default, as the reference: breaks motion inside a temporal patch and across patches) or
  whole frame pairs (keeps motion inside each temporal patch: the learnability note found a tiny model
  keeps 97-99% accuracy under pair shuffles, so pair shuffles give T-GRPO little contrast).
- Shuffled rollouts are generated in the same generate call as the ordered ones and only feed rewards.
- second_per_grid_ts is kept: the loss forward reuses the encoded prompt batch (the reference deleted it
  before computing log-probs). The loss is on the response tokens only (up to and including EOS).
- Image prompts get no shuffled rollouts and no temporal bonus.
- A bad sample (unreadable media, prompt too long with its vision tokens) is logged to skipped.jsonl with
  its id, counted, and skipped; the step goes on with fewer prompts (the reference swapped in a fixed
  video). A process left with no prompt makes a zero-weighted forward/backward on a dummy black-image
  prompt. Every loss_type divides by the count of the whole step summed over processes (sequences, tokens,
  or sequences x max_completion_length: `step.loss_normaliser`), so the DDP / ZeRO / FSDP gradient average
  is the one-process gradient over all processes' groups, whatever each process kept (skips, dynamic
  sampling), and a dummy batch dilutes nothing.
- `loss_micro_batch_size` splits the loss forward/backward into micro-batches of whole prompt groups (the
  same gradient as one pass); log-probs keep no float32 copy of the logits for backward
  (`videor1.train.logprobs`).
- A clip too short for `shuffle_unit: pair` is shuffled by frame (or, under 2 frames, not at all), with a
  warning (`step.shuffle_unit_for`). `mask_truncated_completions` gives completions that hit
  max_completion_length zero loss weight (DAPO); `truncated_ratio` is logged either way.
- With beta == 0 no reference model is created. With DeepSpeed ZeRO-3 the reference is wrapped by its
  own inference-only DeepSpeed engine (parameters sharded like the policy's) and rollouts with the HF
  engine gather the policy's parameters once for generation (FSDP2: its units are unsharded once for it; the
  reference stays whole on every process).

The invariant every engine needs (`tests/engines/` breaks it on purpose with mixed media, a process without a
usable prompt, and skipped samples): **every process issues the same sequence of collective calls each step,
whatever its data**. Enforced here: every process runs `_rollout` (under ZeRO-3 and FSDP2 inside
`videor1.train.engine.whole_parameters`, which makes generation local to each process, so a process with no
prompt or shorter completions skips nothing the others wait for), the same number of reference and policy
forwards and backwards (a dummy batch where it has nothing or fewer loss micro-batches), each forward with as
many vision-tower calls as the process with the most media kinds (`equal_vision_calls`), and the same
all-reduces (`process_sum`).
- Log-probs use logits / temperature (the sampling distribution before top-p).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import ProcessorMixin, get_scheduler

from videor1.config import ConfigError, config_to_dict, load_config, save_config, validate
from videor1.data.pipeline import CacheStats, prefetch
from videor1.data.records import Record
from videor1.generation.engines import RolloutEngine, SamplingParams, check_prompt_lengths
from videor1.limits import limits_in_force
from videor1.model.families import fit_media_specs
from videor1.model.inputs import move_batch, pad_token_id, select_rows
from videor1.model.load import load_model, load_processor
from videor1.rl.algorithms import informative_groups, loss_count, policy_loss
from videor1.rl.async_rollouts import attach as attach_async, prune_inflight, rollout_metrics, save_inflight
from videor1.rl.config import RLConfig
from videor1.rl.metrics import CURVE_KEYS, gather_stats, step_stats
from videor1.rl.rollout_engine import build_rollout_engine
from videor1.rl.shared_prefix import check_model
from videor1.rl.step import (
    LossBatch,
    LossPart,
    Prompts,
    PromptSource,
    add_loss_sums,
    completion_logps,
    dummy_part,
    generate_rollouts,
    groups_per_part,
    loss_normaliser,
    loss_parts,
    score_rollouts,
    shuffled_samples,
    step_loss_stats,
)
from videor1.hub import push_at_end
from videor1.train.checkpoint import (checkpoint_step, list_checkpoints, load_trainer_state, resolve_resume,
                                      save_checkpoint, save_final)
from videor1.train.common import (advance_schedule, enable_gradient_checkpointing, fill_deepspeed_auto,
                                  freeze_vision, load_records, media_root, mixed_precision, param_groups,
                                  params_sharded, process_sum, seed_everything, set_fsdp_wrap_classes,
                                  set_rng_state, zero_stage)
from videor1.train.engine import (announce_engine, data_parallel, equal_vision_calls, make_accelerator,
                                  max_over_processes, padding_loss, sequence_parallel, whole_parameters)
from videor1.train.metrics import METRICS_FILE, MetricsLogger, plot_curves, skip_log, trim_skip_log

__all__ = ["RLConfig", "run_training", "train"]


def run_training(config_path: str | Path | None, overrides: Sequence[str] = ()) -> Path:
    """Load an RLConfig (YAML + key=value overrides) and train; returns the final model directory."""
    return train(load_config(RLConfig, config_path, overrides))


def train(cfg: RLConfig) -> Path:
    """Run GRPO / T-GRPO as configured; returns `<output_dir>/final` (an HF model directory). The config's
    input limits are in force during the run (records read, media decoded) and restored afterwards."""
    with limits_in_force(cfg.limits):
        return _train(cfg)


def _train(cfg: RLConfig) -> Path:
    run = _setup(cfg)
    accelerator, out, records, pps = run.accelerator, run.out, run.records, cfg.prompts_per_step
    (rank, world), main = data_parallel(accelerator), accelerator.is_main_process   # SP group = 1 rank
    step, position, skipped_total = run.step, run.position, run.skipped_total
    logger = MetricsLogger(out, cfg.report_to, resume_step=step if run.resumed else None, enabled=main,
                           command="train", config=config_to_dict(cfg))
    if main:
        save_config(cfg, out / "config.yaml")
    sampling = SamplingParams(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                              top_p=cfg.top_p, do_sample=True)
    root = media_root(cfg.train_data, cfg.media_root)
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (main and cfg.progress), desc=cfg.algorithm)
    video, image = fit_media_specs(run.processor, cfg.video, cfg.image)  # the family's frame factor
    source = PromptSource(records, run.processor, root, video, image, cfg.max_prompt_length, cfg.seed, pps,
                          rank, world, first_step=step + 1, position=position, cache_dir=cfg.frame_cache)
    stream = attach_async(run, prefetch(source, range(step + 1, cfg.max_steps + 1), num_workers=cfg.num_workers),
                          lambda s: replace(sampling, seed=_step_seed(cfg.seed, s, rank)))   # off: `stream` as is
    cache_stats = CacheStats()
    while step < cfg.max_steps:
        step += 1
        t0 = time.perf_counter()
        # 1. this process's prompts, decoded + encoded num_workers processes ahead (bad ones logged and skipped,
        #    never replaced)
        prompts, step_cache = next(stream)
        cache_stats.add(step_cache)
        position += pps * world
        for rid, why in prompts.skipped:
            skip_log(out, rid, why, step=step, rank=rank)
        # 2. rollouts: ordered (+ shuffled video frames in T-GRPO) in one generate call; vLLM and server
        #    engines hold their own copy of the weights and get the current ones first
        run.sync_rollout_weights(step)
        # 3. rewards, temporal / length bonus, advantages: per prompt group, no gathering
        batch = _rollout(run, prompts, replace(sampling, seed=_step_seed(cfg.seed, step, rank)), step)
        if hasattr(run.engine, "sleep"):   # colocated vLLM with vllm.sleep_level > 0: its memory goes to training
            run.engine.sleep()
        # 4. loss on the same encoded prompts, num_iterations optimisation passes
        losses = _optimise(run, batch)
        # 5. metrics (one gather), checkpoint
        local = step_stats(cfg, batch, losses, len(prompts.samples), len(prompts.skipped))
        metrics = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, **gather_stats(accelerator, local)}  # 0: no loss
        skipped_total += int(metrics["samples_skipped"])
        _check_skipped(cfg, skipped_total, position, out)
        metrics.update(lr=run.scheduler.get_last_lr()[0], grad_norm=losses["grad_norm"],
                       step_time=time.perf_counter() - t0, samples_skipped_total=skipped_total,
                       engine=run.engine_name, num_processes=world, **rollout_metrics(run.engine))
        if cfg.frame_cache:
            metrics.update(frame_cache_hit_rate=cache_stats.hit_rate)  # this process's, over the run so far
        if step % cfg.logging_steps == 0 or step == cfg.max_steps:
            logger.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.get('loss', 0.0):.4f}", reward=f"{metrics.get('reward', 0.0):.3f}")
        if cfg.save_steps and step % cfg.save_steps == 0:
            _save(run, step, position, skipped_total)
    bar.close()
    final = save_final(run.model, run.processor, accelerator, out / "final")
    if main:
        logger.images({"curves": plot_curves(out / METRICS_FILE, out / "curves.png", CURVE_KEYS)}, step)
    logger.close()
    push_at_end(cfg.push_to_hub, out, main)
    return final


# ------------------------------------------------------------------------------------------- one step
@dataclass
class _Run:
    """What the loop works with, made by `_setup`."""

    cfg: RLConfig
    out: Path
    accelerator: Accelerator
    records: list[Record]
    processor: ProcessorMixin
    pad_id: int
    model: torch.nn.Module  # the policy, prepared by accelerate
    ref: torch.nn.Module | None  # the frozen KL reference (None when beta == 0)
    optimizer: torch.optim.Optimizer  # prepared by accelerate
    scheduler: torch.optim.lr_scheduler.LRScheduler
    engine: RolloutEngine
    sync_rollout_weights: Callable[[int], None]  # step -> give an engine with its own weights the policy's
    resumed: bool
    step: int = 0  # steps done (the checkpoint's when resuming)
    position: int = 0  # prompts consumed by all processes (the seeded order's position)
    skipped_total: int = 0  # samples skipped so far, all processes
    engine_name: str = "single"  # what runs (videor1.train.engine.engine_name), in every metrics row


def _rollout(run: _Run, prompts: Prompts, params: SamplingParams, step: int) -> LossBatch:
    """Generate G ordered (+ G~ shuffled) completions per prompt, score them, build the loss micro-batches.

    A process left without prompts gets a zero-weighted dummy batch, so every process makes the same
    collective calls.
    """
    cfg, G = run.cfg, run.cfg.num_generations
    with _generation_context(cfg, run.model, run.accelerator):
        if not prompts.samples:
            if getattr(run.engine, "collective", False):   # a vLLM tensor-parallel group: join its generate
                generate_rollouts(run.engine, [], [], params, G, cfg.shuffled_generations)
            return LossBatch([dummy_part(run.processor, run.pad_id)], 0.0, None)
        shuffled, owners = shuffled_samples(prompts, seed=cfg.seed, step=step, unit=cfg.shuffle_unit) \
            if cfg.temporal else ([], [])
        ordered, shuffled_out = generate_rollouts(run.engine, prompts.samples, shuffled, params, G,
                                                  cfg.shuffled_generations)
    lengths = prompts.batch["attention_mask"].sum(dim=1).tolist()   # the loss's prompt lengths
    check_prompt_lengths(prompts.samples, ordered, lengths)
    check_prompt_lengths(shuffled, shuffled_out, [lengths[i] for i in owners])
    scored = score_rollouts(cfg, prompts.samples, ordered, shuffled_out, owners)
    tokens = float(sum(len(c.token_ids) for g in ordered for c in g))
    keep = list(range(len(ordered)))
    if cfg.dynamic_sampling:   # DAPO: groups with all rewards equal have no advantage; drop them
        keep = torch.nonzero(informative_groups(scored.rewards, scored.group_ids)).flatten().tolist()
        if not keep:
            return LossBatch([dummy_part(run.processor, run.pad_id)], 0.0, scored, tokens, 0)
    rows = [i * G + j for i in keep for j in range(G)]
    prompt_batch = prompts.batch if len(keep) == len(ordered) else select_rows(prompts.batch, keep)
    drop = scored.truncated[rows] if cfg.mask_truncated_completions else None
    behaviour = [c.logprobs for i in keep for c in ordered[i]] if cfg.async_rollouts else None
    parts = loss_parts(prompt_batch, [c.token_ids for i in keep for c in ordered[i]], scored.advantages[rows], G,
                       run.pad_id, shared=cfg.shared_prefix, drop=drop, logprobs=behaviour,
                       per_part=groups_per_part(cfg.loss_micro_batch_size, G, len(keep)))
    return LossBatch(parts, 1.0, scored, tokens, len(keep))


def _optimise(run: _Run, batch: LossBatch) -> dict[str, float]:
    """num_iterations passes of forward -> clipped loss -> backward (one per loss micro-batch) -> clip -> step
    on one rollout batch.

    Old log-probs are those of the first pass (the policy that generated the batch); the reference's are
    computed once. Every process runs as many micro-batches as the process with the most (zero-weighted
    dummies fill in), each loss divided by the step's global count (`loss_normaliser`), so the gradient is
    the one-pass, one-process gradient over all processes' groups. `batch.weight` 0 turns the loss of a
    dummy batch into a zero gradient.
    """
    cfg, accelerator = run.cfg, run.accelerator
    if cfg.dynamic_sampling and process_sum(accelerator, batch.kept_groups) == 0:
        # no informative group on any process: no update (a zero gradient would still move AdamW's weights)
        advance_schedule(run.scheduler, cfg.num_iterations)
        return {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
    passes = _passes(run, batch)
    local = sum(loss_count(cfg.loss_type, p.mask, cfg.max_completion_length) for p, w in passes if w > 0)
    normaliser = loss_normaliser(accelerator, local)
    # the loss metric: each process's share x active processes, so that its mean over the processes with data
    # (rl/metrics.py) is the loss of the whole step
    active = process_sum(accelerator, float(batch.weight > 0))
    ref_logps = [_reference_logps(run, part) for part, _ in passes] if run.ref is not None else None
    old_logps: list[torch.Tensor | None] = [None] * len(passes)
    stats: dict[str, float] = {}
    for _ in range(cfg.num_iterations):
        sums = _backward_passes(run, passes, normaliser, ref_logps, old_logps)
        grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        stats = step_loss_stats(sums, active, accelerator.num_processes, grad_norm)
    return stats


def _passes(run: _Run, batch: LossBatch) -> list[tuple[LossPart, float]]:
    """(micro-batch, loss weight) in run order: this process's parts, then zero-weighted dummies up to the
    largest number of parts on any process (one all-reduce), so that every process makes the same forwards
    and backwards (ZeRO-3 gathers parameters at each, ZeRO-2 reduces gradients at each)."""
    most = int(max_over_processes(run.accelerator, len(batch.parts)))
    filler = [(dummy_part(run.processor, run.pad_id), 0.0)] * (most - len(batch.parts))
    return [(part, batch.weight) for part in batch.parts] + filler


def _reference_logps(run: _Run, part: LossPart) -> torch.Tensor:
    accelerator = run.accelerator
    inputs, ids = move_batch(part.inputs, accelerator.device), part.ids.to(accelerator.device)
    with torch.no_grad(), accelerator.autocast(), equal_vision_calls(accelerator, run.ref, inputs):
        return completion_logps(run.ref, inputs, ids, run.cfg.temperature).float()


def _backward_passes(run: _Run, passes: list[tuple[LossPart, float]], normaliser: float,
                     ref_logps: list[torch.Tensor] | None, old_logps: list[torch.Tensor | None]
                     ) -> dict[str, float]:
    """Forward, loss and backward of each micro-batch, gradients accumulating; DeepSpeed reduces and steps
    at the last one only (`sync_gradients`). Fills `old_logps` on the first iteration. Returns the sums
    the step's metrics are made of (loss, and kl / clipped tokens over `tokens`)."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    device = accelerator.device
    sums: dict[str, float] = {}
    try:
        for i, (part, weight) in enumerate(passes):
            accelerator.sync_gradients = i == len(passes) - 1
            inputs, ids = move_batch(part.inputs, device), part.ids.to(device)
            mask, advantages = part.mask.to(device), part.advantages.to(device)
            with accelerator.autocast(), equal_vision_calls(accelerator, model, inputs) as extra:
                logp = completion_logps(model, inputs, ids, cfg.temperature).float()
            if old_logps[i] is None:
                old_logps[i] = logp.detach()
            out = policy_loss(logp, old_logps[i], advantages, mask,
                              ref_logp=None if ref_logps is None else ref_logps[i], beta=cfg.beta,
                              epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                              max_completion_length=cfg.max_completion_length, normaliser=normaliser,
                              behaviour_logp=part.behaviour, is_cap=cfg.async_is_cap)   # behaviour: async only
            accelerator.backward(out.loss * weight + padding_loss(extra))
            if weight > 0:
                add_loss_sums(sums, out, mask)
    finally:
        accelerator.sync_gradients = True
    return sums


# -------------------------------------------------------------------------------------------- setup
def _setup(cfg: RLConfig) -> _Run:
    """Records, policy (+ reference), optimizer, schedule, rollout engine; restored when resuming."""
    validate(cfg)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    accelerator = make_accelerator(mixed_precision=mixed_precision(cfg.bf16))   # the launcher's engine, or an error
    out, main = Path(cfg.output_dir), accelerator.is_main_process
    ckpt = resolve_resume(cfg.resume, out, overwrite=cfg.overwrite)
    _check_distributed(cfg, accelerator)
    seed_everything(cfg.seed)
    records, _ = load_records(cfg.train_data, cfg.media_root, out, write_log=main and ckpt is None)
    processor = load_processor(ckpt or cfg.model)
    model, ref = _build_models(cfg, ckpt, accelerator)
    optimizer, scheduler = _build_optimizer(cfg, model)
    fill_deepspeed_auto(accelerator, micro_batch=cfg.prompts_per_step * cfg.num_generations, accumulation=1,
                        max_grad_norm=cfg.max_grad_norm, model=model)
    set_fsdp_wrap_classes(accelerator, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ref is not None:  # after prepare: the DeepSpeed config's "auto" entries are filled by then
        ref = _prepare_reference(ref, accelerator)
    built = build_rollout_engine(cfg, model, processor, accelerator)
    engine, sync = sequence_parallel(cfg, accelerator, (model, ref), built)
    info = announce_engine(accelerator, optimizer, model, out, "train")
    run = _Run(cfg, out, accelerator, records, processor, pad_token_id(processor), model, ref, optimizer, scheduler,
               engine, sync, resumed=ckpt is not None, engine_name=info["engine"])
    if ckpt is not None:
        run.step, run.position, run.skipped_total = _restore(ckpt, accelerator, optimizer, scheduler, out)
    else:
        seed_everything(cfg.seed + accelerator.process_index)
    return run


def _check_skipped(cfg: RLConfig, skipped: int, seen: int, out: Path) -> None:
    """Stop (before any model is written) when more than `max_skipped_fraction` of the prompts seen so far
    were skipped, or every one of them was."""
    if seen and (skipped > cfg.max_skipped_fraction * seen or skipped >= seen):
        raise ConfigError(f"max_skipped_fraction: {skipped} of {seen} prompts were skipped (limit "
                          f"{cfg.max_skipped_fraction}); see {out / 'skipped.jsonl'} for why (e.g. longer than "
                          f"max_prompt_length={cfg.max_prompt_length}, bad media); no model was written")


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The sampling seed of a step on a process (derived, so a resumed run samples the same)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _check_distributed(cfg: RLConfig, accelerator: Accelerator) -> None:
    if cfg.rollout_engine == "remote" and cfg.remote.weight_transport == "file" and params_sharded(accelerator):
        raise ConfigError("remote.weight_transport 'file' needs whole weights on the main process (one process, "
                          "DDP or ZeRO-2); under ZeRO-3 / FSDP use weight_transport: group")


def _build_models(cfg: RLConfig, ckpt: Path | None, accelerator: Accelerator
                  ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The policy (from the checkpoint when resuming; fp32 master weights) and the frozen reference (None when
    beta == 0; bf16 under bf16 mixed precision, as the reference did: an fp32 7B copy is ~33 GB). The
    reference gets its DeepSpeed engine (ZeRO-3) in `_setup`, after `accelerator.prepare`."""
    attn = cfg.attn_implementation
    model = load_model(ckpt or cfg.model, device=accelerator.device, dtype=torch.float32, attn_implementation=attn)
    if cfg.freeze_vision:
        freeze_vision(model)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.shared_prefix:
        check_model(model)   # refused before any rollout (attention kind, untested linear-attention layers)
    model.train()
    if cfg.beta == 0:
        return model, None
    ref_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    ref = load_model(cfg.reference_model or cfg.model, device=accelerator.device, dtype=ref_dtype,
                     attn_implementation=attn)
    ref.requires_grad_(False)
    ref.eval()
    return model, ref


def _prepare_reference(ref: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """Under ZeRO-3 the reference gets its own inference DeepSpeed engine (sharded); else it stays as is."""
    if zero_stage(accelerator) != 3:
        return ref
    import deepspeed  # lazily: optional extra

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    config["train_micro_batch_size_per_gpu"] = 1
    config.pop("gradient_accumulation_steps", None)
    config.pop("train_batch_size", None)
    engine, *_ = deepspeed.initialize(model=ref, config=config)
    engine.eval()
    return engine


def _generation_context(cfg: RLConfig, model: torch.nn.Module, accelerator: Accelerator
                        ) -> contextlib.AbstractContextManager:
    """ZeRO-3 + HF rollouts: gather the policy's parameters once for generation and take ZeRO-3's module hooks
    off meanwhile (else they re-gather and release them around every forward, i.e. every token), with
    DeepSpeed's own `deepspeed.runtime.zero.stage3.unwrap_model_for_generation` (`model` is the DeepSpeed
    engine). FSDP2 + HF rollouts: the same with FSDP2's own unshard (`fsdp2_generation`). Collective: every rank
    enters it, prompts or not; generate itself runs with synced_gpus off."""
    if cfg.rollout_engine != "hf":
        return contextlib.nullcontext()
    return whole_parameters(accelerator, model)


def _build_optimizer(cfg: RLConfig, model: torch.nn.Module
                     ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no weight decay on biases and norms) + a warmup/decay schedule over all updates."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    total = cfg.max_steps * cfg.num_iterations
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                              num_training_steps=total)
    return optimizer, scheduler


# ---------------------------------------------------------------------------------- checkpointing
def _save(run: _Run, step: int, position: int, skipped_total: int) -> Path:
    state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "data_position": position, "skipped_total": skipped_total, "config": config_to_dict(run.cfg),
             "num_processes": run.accelerator.num_processes}
    save_inflight(run.engine, run.out, step)   # async_rollouts: step + 1's rollouts, before the checkpoint
    path = save_checkpoint(run.out, step, run.model, run.processor, state, accelerator=run.accelerator,
                           save_total_limit=run.cfg.save_total_limit)
    prune_inflight(run.engine, run.out, [checkpoint_step(p) for p in list_checkpoints(run.out)])
    return path


def _restore(ckpt: Path, accelerator: Accelerator, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, out: Path) -> tuple[int, int, int]:
    """Optimizer, scheduler, RNG and data position from a checkpoint; returns (step, position, skipped)."""
    state = load_trainer_state(ckpt, rank=accelerator.process_index)
    if state.get("num_processes", accelerator.num_processes) != accelerator.num_processes:
        raise ConfigError(f"{ckpt} was saved with {state['num_processes']} processes; this run has "
                          f"{accelerator.num_processes} (exact resume needs the same number)")
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    else:  # sharded optimizer (DeepSpeed / FSDP): restored from accelerator_state/
        accelerator.load_state(str(ckpt / "accelerator_state"))
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if accelerator.is_main_process:
        trim_skip_log(out, int(state["step"]))
    accelerator.wait_for_everyone()
    return int(state["step"]), int(state["data_position"]), int(state.get("skipped_total", 0))
