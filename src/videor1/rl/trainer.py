"""GRPO / T-GRPO training on accelerate: the loop reads top to bottom in `train`.

One step, on every process: take `prompts_per_step` prompts (a seeded, resumable order) -> decode media
and encode the prompts -> ONE generate call for G ordered completions per prompt and, in T-GRPO, G~
completions per video prompt on a freshly shuffled frame order -> rewards (the registry's, weighted) ->
temporal bonus and length bonus -> group advantages -> policy loss over the completion tokens on the SAME
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
  prompt so that every process makes the same collective calls; DDP then averages its zero gradient in.
- With beta == 0 no reference model is created. With DeepSpeed ZeRO-3 the reference is wrapped by its
  own inference-only DeepSpeed engine (parameters sharded like the policy's) and rollouts with the HF
  engine gather the policy's parameters for generation (`deepspeed.zero.GatheredParameters`); both
  paths are written against DeepSpeed's API and have not run here. FSDP needs vLLM rollouts.
- Log-probs use logits / temperature (the sampling distribution before top-p).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from videor1.config import ConfigError, config_to_dict, load_config, save_config, validate
from videor1.rl.algorithms import policy_loss
from videor1.rl.step import (
    completion_logps,
    dummy_inputs,
    generate_rollouts,
    load_prompts,
    loss_inputs,
    prompt_indices,
    score_rollouts,
    shuffled_samples,
)
from videor1.rl.config import RLConfig

__all__ = ["RLConfig", "run_training", "train"]

CURVE_KEYS = ("loss", "reward", "accuracy", "ordered_accuracy", "shuffled_accuracy", "temporal_bonus_rate",
              "kl", "completion_length", "clip_fraction", "all_correct_rate", "all_wrong_rate", "lr",
              "step_time", "samples_skipped")
SUM_KEYS = ("prompts", "samples_skipped")  # summed over processes; every other metric is a mean


def run_training(config_path: str | Path | None, overrides: Sequence[str] = ()) -> Path:
    """Load an RLConfig (YAML + key=value overrides) and train; returns the final model directory."""
    return train(load_config(RLConfig, config_path, overrides))


def train(cfg: RLConfig) -> Path:
    """Run GRPO / T-GRPO as configured; returns `<output_dir>/final` (an HF model directory)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from videor1.model.load import load_processor, pick_device
    from videor1.generation.engines import SamplingParams
    from videor1.train.common import MetricsLogger, plot_curves, seed_everything, skip_log
    from videor1.model.inputs import move_batch, pad_token_id

    validate(cfg)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    # cpu=True on a machine without an accelerator: lets `accelerate launch --multi_gpu` / torchrun start
    # several CPU processes (gloo); accelerate 1.15's `--cpu --num_processes N` starts one without MPI.
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.bf16), cpu=pick_device().type == "cpu")
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    out = Path(cfg.output_dir)
    ckpt = _checkpoint_to_resume(cfg, out)
    _check_distributed(cfg, accelerator)
    seed_everything(cfg.seed)
    records = _load_records(cfg, out, write_log=main and ckpt is None)
    processor = load_processor(ckpt or cfg.model)
    model, ref = _build_models(cfg, ckpt, accelerator)
    optimizer, scheduler = _build_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    engine, sync_rollout_weights = _build_engine(cfg, accelerator.unwrap_model(model), processor, main)
    step, position, skipped_total = 0, 0, 0
    if ckpt is not None:
        step, position, skipped_total = _restore(ckpt, accelerator, optimizer, scheduler, out)
    else:
        seed_everything(cfg.seed + rank)
    logger = MetricsLogger(out, cfg.tensorboard, resume_step=step if ckpt else None, enabled=main)
    if main:
        save_config(cfg, out / "config.yaml")
    pad_id = pad_token_id(processor)
    G, Gs, pps = cfg.num_generations, cfg.shuffled_generations, cfg.prompts_per_step
    sampling = SamplingParams(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                              top_p=cfg.top_p, do_sample=True)
    video, image, media_root = cfg.video.to_spec(), cfg.image.to_spec(), _media_root(cfg)
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (main and cfg.progress), desc=cfg.algorithm)
    while step < cfg.max_steps:
        step += 1
        t0 = time.perf_counter()
        # 1. this process's prompts (bad ones logged and skipped, never replaced)
        positions = list(range(position + rank * pps, position + (rank + 1) * pps))
        indices = prompt_indices(len(records), cfg.seed, positions[0], pps)
        position += pps * world
        prompts = load_prompts(records, indices, positions, processor, media_root=media_root, video=video,
                               image=image, max_prompt_length=cfg.max_prompt_length)
        for rid, why in prompts.skipped:
            skip_log(out, rid, why, step=step, rank=rank)
        # 2. rollouts: ordered (+ shuffled video frames in T-GRPO) in one generate call; vLLM and server
        #    engines hold their own copy of the weights and get the current ones first
        sync_rollout_weights(step)
        scored = None
        with _generation_context(cfg, model, accelerator):
            if prompts.samples:
                shuffled, owners = shuffled_samples(prompts, seed=cfg.seed, step=step, unit=cfg.shuffle_unit) \
                    if cfg.algorithm == "tgrpo" else ([], [])
                params = replace(sampling, seed=_step_seed(cfg.seed, step, rank))
                ordered, shuffled_out = generate_rollouts(engine, prompts.samples, shuffled, params, G, Gs)
                # 3. rewards, temporal / length bonus, advantages: per prompt group, no gathering
                scored = score_rollouts(cfg, prompts.samples, ordered, shuffled_out, owners)
                inputs, ids, mask = loss_inputs(prompts.batch, [c.token_ids for g in ordered for c in g], G, pad_id)
                advantages, weight = scored.advantages, 1.0
            else:  # nothing left on this process: a zero-weighted dummy keeps collectives equal
                inputs, ids, mask = dummy_inputs(processor, pad_id)
                advantages, weight = torch.zeros(1), 0.0
        # 4. loss on the same encoded prompts, num_iterations optimisation passes
        inputs = move_batch(inputs, accelerator.device)
        losses = _optimise(cfg, model, ref, optimizer, scheduler, accelerator, inputs, ids.to(accelerator.device),
                           mask.to(accelerator.device), advantages.to(accelerator.device), weight)
        # 5. metrics (one gather), checkpoint
        local = _step_stats(cfg, scored, losses, mask if scored else None, len(prompts.samples),
                            len(prompts.skipped))
        metrics = _gather_stats(accelerator, local)
        skipped_total += int(metrics["samples_skipped"])
        metrics.update(lr=scheduler.get_last_lr()[0], grad_norm=losses["grad_norm"],
                       step_time=time.perf_counter() - t0, samples_skipped_total=skipped_total)
        if step % cfg.logging_steps == 0 or step == cfg.max_steps:
            logger.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics.get('loss', 0.0):.4f}", reward=f"{metrics.get('reward', 0.0):.3f}")
        if cfg.save_steps and step % cfg.save_steps == 0:
            _save(out, step, model, processor, optimizer, scheduler, accelerator, cfg, position, skipped_total)
    bar.close()
    logger.close()
    final = _save_final(out / "final", model, processor, accelerator)
    if main:
        plot_curves(out / "metrics.jsonl", out / "curves.png", CURVE_KEYS)
    return final


# ------------------------------------------------------------------------------------- optimisation
def _optimise(cfg: RLConfig, model: Any, ref: Any, optimizer: Any, scheduler: Any, accelerator: Any,
              inputs: Any, ids: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
              weight: float) -> dict[str, float]:
    """num_iterations passes of forward -> clipped loss -> backward -> clip -> step on one rollout batch.

    Old log-probs are those of the first pass (the policy that generated the batch); the reference's are
    computed once. `weight` 0 turns the loss of a dummy batch into a zero gradient.
    """
    ref_logp = None
    if ref is not None:
        with torch.no_grad(), accelerator.autocast():
            ref_logp = completion_logps(ref, inputs, ids, cfg.temperature).float()
    global_tokens = None
    if cfg.loss_type == "dapo":
        global_tokens = float(accelerator.gather((mask.sum() * weight).reshape(1)).sum())
    old_logp, stats = None, {}
    for _ in range(cfg.num_iterations):
        with accelerator.autocast():
            logp = completion_logps(model, inputs, ids, cfg.temperature).float()
        if old_logp is None:
            old_logp = logp.detach()
        out = policy_loss(logp, old_logp, advantages, mask, ref_logp=ref_logp, beta=cfg.beta,
                          epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                          max_completion_length=cfg.max_completion_length, global_num_tokens=global_tokens,
                          num_processes=accelerator.num_processes)
        accelerator.backward(out.loss * weight)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats = {"loss": float(out.loss.detach()), "kl": float(out.kl), "clip_fraction": float(out.clip_fraction),
                 "grad_norm": float(grad_norm)}
    return stats


# ------------------------------------------------------------------------------------------ metrics
def _step_stats(cfg: RLConfig, scored: Any, losses: dict[str, float], mask: torch.Tensor | None,
                n_prompts: int, n_skipped: int) -> dict[str, tuple[float, float]]:
    """(sum, count) per metric on this process; a process without prompts contributes counts of 0."""
    stats: dict[str, tuple[float, float]] = {"prompts": (n_prompts, 1), "samples_skipped": (n_skipped, 1)}
    has = 1.0 if scored is not None else 0.0
    for key in ("loss", "kl", "clip_fraction"):
        stats[key] = (losses[key] * has, has)
    keys = ["reward", "accuracy", "completion_length", "all_correct_rate", "all_wrong_rate",
            *(f"reward_{name}" for name in cfg.rewards)]
    if cfg.algorithm == "tgrpo":
        keys += ["ordered_accuracy", "shuffled_accuracy", "temporal_bonus_rate"]
    if cfg.length_bonus:
        keys.append("length_bonus_rate")
    for key in keys:
        stats[key] = (0.0, 0.0)
    if scored is None:
        return stats
    n = float(len(scored.rewards))
    stats["reward"] = (float(scored.rewards.sum()), n)
    stats["accuracy"] = (float(scored.accuracy.sum()), n)
    stats["completion_length"] = (float(mask.sum()), n)
    for name, values in scored.per_reward.items():
        stats[f"reward_{name}"] = (float(values.sum()), n)
    correct = (scored.accuracy > 0.1).view(n_prompts, -1)
    stats["all_correct_rate"] = (float(correct.all(dim=1).sum()), n_prompts)
    stats["all_wrong_rate"] = (float((~correct).all(dim=1).sum()), n_prompts)
    if scored.temporal is not None:
        groups = scored.temporal.groups
        in_video = torch.isin(scored.group_ids, groups)
        stats["ordered_accuracy"] = (float(scored.accuracy[in_video].sum()), float(in_video.sum()))
        stats["shuffled_accuracy"] = (float(scored.shuffled_accuracy.sum()), float(len(scored.shuffled_accuracy)))
        stats["temporal_bonus_rate"] = (float(scored.temporal.applied.sum()), float(len(groups)))
    if cfg.length_bonus:
        stats["length_bonus_rate"] = (float((scored.length > 0).sum()), n)
    return stats


def _gather_stats(accelerator: Any, stats: dict[str, tuple[float, float]]) -> dict[str, float]:
    """One gather of every (sum, count); means (or sums, for SUM_KEYS) over all processes."""
    keys = list(stats)
    local = torch.tensor([v for k in keys for v in stats[k]], dtype=torch.float64, device=accelerator.device)
    total = accelerator.gather(local.unsqueeze(0)).reshape(-1, len(keys), 2).sum(dim=0).cpu()
    out = {}
    for i, key in enumerate(keys):
        s, c = float(total[i, 0]), float(total[i, 1])
        if key in SUM_KEYS:
            out[key] = s
        elif c > 0:
            out[key] = s / c
    return out


# -------------------------------------------------------------------------------------------- setup
def _mixed_precision(bf16: bool | str) -> str:
    if bf16 == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if bf16 else "no"


def _media_root(cfg: RLConfig) -> str:
    return cfg.media_root if cfg.media_root is not None else str(Path(cfg.train_data).parent)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The sampling seed of a step on a process (derived, so a resumed run samples the same)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _checkpoint_to_resume(cfg: RLConfig, out: Path) -> Path | None:
    from videor1.train.common import latest_checkpoint

    latest = latest_checkpoint(out)
    if cfg.resume:
        if latest is None:
            print(f"resume: no checkpoint in {out}; starting from step 0")
        return latest
    if latest is not None:
        raise ConfigError(f"{out} already holds {latest.name}: pass resume=true to continue it, or use "
                          "another output_dir")
    return None


def _check_distributed(cfg: RLConfig, accelerator: Any) -> None:
    from videor1.train.common import params_sharded

    if cfg.rollout_engine == "remote" and params_sharded(accelerator):
        raise ConfigError("rollout_engine 'remote' needs whole weights on the main process for the weight sync "
                          "(one process, DDP or ZeRO-2), not ZeRO-3 / FSDP")
    if "FSDP" in str(accelerator.distributed_type) and cfg.rollout_engine == "hf":
        raise ConfigError("FSDP with rollout_engine 'hf' is not supported (sharded generation would need "
                          "equal forward counts on every process): use DeepSpeed ZeRO-2/3 or rollout_engine vllm")


def _load_records(cfg: RLConfig, out: Path, *, write_log: bool) -> list[Any]:
    """Good records; bad ones are listed in skipped.jsonl (once, by the main process) and counted."""
    from videor1.data.records import read_records
    from videor1.train.common import skip_log

    good, errors = read_records(cfg.train_data, _media_root(cfg))
    if write_log:
        out.mkdir(parents=True, exist_ok=True)
        (out / "skipped.jsonl").unlink(missing_ok=True)
        for err in errors:
            skip_log(out, err.record_id, str(err), step=0)
    if errors:
        print(f"{cfg.train_data}: {len(errors)} bad records skipped (see {out / 'skipped.jsonl'})")
    if not good:
        raise ConfigError(f"{cfg.train_data}: no usable records")
    return good


def _build_models(cfg: RLConfig, ckpt: Path | None, accelerator: Any) -> tuple[Any, Any]:
    """The policy (from the checkpoint when resuming) and the frozen reference (None when beta == 0)."""
    from videor1.model.load import load_model

    model = load_model(ckpt or cfg.model, device=accelerator.device, dtype=torch.float32)
    if cfg.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    if cfg.beta == 0:
        return model, None
    ref = load_model(cfg.reference_model or cfg.model, device=accelerator.device, dtype=torch.float32)
    ref.requires_grad_(False)
    ref.eval()
    return model, _prepare_reference(ref, accelerator)


def _prepare_reference(ref: Any, accelerator: Any) -> Any:
    """Under ZeRO-3 the reference gets its own inference DeepSpeed engine (sharded); else it stays as is."""
    from videor1.train.common import zero_stage

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


def _generation_context(cfg: RLConfig, model: Any, accelerator: Any) -> Any:
    """ZeRO-3 + HF rollouts: gather the policy's parameters for generation (collective: every rank)."""
    from videor1.train.common import zero_stage

    if cfg.rollout_engine != "hf" or zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def _build_optimizer(cfg: RLConfig, model: Any) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) + a warmup/decay schedule over all updates."""
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    total = cfg.max_steps * cfg.num_iterations
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                              num_training_steps=total)
    return optimizer, scheduler


def _build_engine(cfg: RLConfig, policy: Any, processor: Any, main: bool) -> tuple[Any, Any]:
    """The rollout engine and `sync(step)`, which gives an engine with its own weights the policy's."""
    from videor1.generation.engines import HFEngine, VLLMEngine

    if cfg.rollout_engine == "hf":
        return HFEngine(policy, processor, batch_size=cfg.rollout_batch_size or 1 << 30), lambda step: None
    if cfg.rollout_engine == "remote":
        from videor1.generation.remote import RemoteEngine

        r = cfg.remote
        remote = RemoteEngine(r.url, weights_dir=r.weights_dir, run=str(Path(cfg.output_dir).resolve()),
                              timeout_s=r.timeout_s)
        return remote, lambda step: remote.sync_weights(policy, version=step, writer=main)
    v = cfg.vllm
    llm_kwargs = {"gpu_memory_utilization": v.gpu_memory_utilization, "tensor_parallel_size": v.tensor_parallel_size}
    if v.max_model_len is not None:
        llm_kwargs["max_model_len"] = v.max_model_len
    engine = VLLMEngine(processor, model_path=cfg.model, video_metadata=v.video_metadata, rpc_method=v.rpc_method,
                        llm_kwargs=llm_kwargs)
    return engine, lambda step: engine.sync_weights(policy)


# ---------------------------------------------------------------------------------- checkpointing
def _save(out: Path, step: int, model: Any, processor: Any, optimizer: Any, scheduler: Any, accelerator: Any,
          cfg: RLConfig, position: int, skipped_total: int) -> Path:
    from videor1.train.common import save_checkpoint

    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "data_position": position, "skipped_total": skipped_total, "config": config_to_dict(cfg),
             "num_processes": accelerator.num_processes}
    return save_checkpoint(out, step, model, processor, state, accelerator=accelerator,
                           save_total_limit=cfg.save_total_limit)


def _restore(ckpt: Path, accelerator: Any, optimizer: Any, scheduler: Any, out: Path) -> tuple[int, int, int]:
    """Optimizer, scheduler, RNG and data position from a checkpoint; returns (step, position, skipped)."""
    from videor1.train.common import load_trainer_state, set_rng_state, trim_skip_log

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


def _save_final(final: Path, model: Any, processor: Any, accelerator: Any) -> Path:
    """The trained policy as a plain HF directory (safetensors) + processor, written by the main process."""
    from videor1.train.common import is_sharded

    state_dict = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    if accelerator.is_main_process:
        final.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(final, state_dict=state_dict)
        processor.save_pretrained(final)
    accelerator.wait_for_everyone()
    return final
