"""The per-step metrics of a GRPO / T-GRPO run: (sum, count) pairs on each process, one gather, means.

`CURVE_KEYS` are plotted to curves.png at the end of a run; `SUM_KEYS` are summed over processes instead
of averaged.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from videor1.parallel.sequence import replicas
from videor1.rewards import CORRECT_THRESHOLD
from videor1.rl.config import RLConfig
from videor1.rl.step import LossBatch

CURVE_KEYS = ("loss", "reward", "accuracy", "ordered_accuracy", "shuffled_accuracy", "temporal_bonus_rate",
              "temporal_advantage_shift", "kl", "completion_length", "truncated_ratio", "clip_fraction",
              "all_correct_rate", "all_wrong_rate", "kept_group_rate",
              "lr", "step_time", "samples_skipped", "is_ratio_mean", "is_truncated_fraction")  # is_*: async only
SUM_KEYS = ("prompts", "samples_skipped")  # summed over processes; every other metric is a mean
MAX_KEYS = ("is_ratio_max",)  # the largest over processes
IS_KEYS = ("is_ratio_mean", "is_ratio_max", "is_truncated_fraction")  # async_rollouts: truncated IS statistics


def step_stats(cfg: RLConfig, batch: LossBatch, losses: dict[str, float], n_prompts: int, n_skipped: int
               ) -> dict[str, tuple[float, float]]:
    """(sum, count) per metric on this process; a process without prompts contributes counts of 0."""
    scored = batch.scored
    stats: dict[str, tuple[float, float]] = {"prompts": (n_prompts, 1), "samples_skipped": (n_skipped, 1)}
    in_loss = 1.0 if batch.weight > 0 else 0.0   # a dummy batch's loss is not averaged in
    stats["loss"] = (losses.get("loss", 0.0) * in_loss, in_loss)
    tokens = losses.get("loss_tokens", 0.0) * in_loss   # kl, clip fraction, IS ratios: means over every
    for key in ("kl", "clip_fraction", *(IS_KEYS if cfg.async_rollouts else ())):   # process's loss tokens
        weight = in_loss if key in MAX_KEYS else tokens
        stats[key] = (losses.get(key, 0.0) * weight, weight)
    keys = ["reward", "accuracy", "completion_length", "truncated_ratio", "all_correct_rate", "all_wrong_rate",
            *(f"reward_{name}" for name in cfg.rewards)]
    if cfg.temporal:
        keys += ["ordered_accuracy", "shuffled_accuracy", "temporal_bonus_rate", "temporal_advantage_shift"]
    if cfg.length_bonus:
        keys.append("length_bonus_rate")
    if cfg.dynamic_sampling:
        keys.append("kept_group_rate")
    for key in keys:
        stats[key] = (0.0, 0.0)
    if scored is None:
        return stats
    n = float(len(scored.rewards))
    stats["reward"] = (float(scored.rewards.sum()), n)
    stats["accuracy"] = (float(scored.accuracy.sum()), n)
    stats["completion_length"] = (batch.completion_tokens, n)
    if scored.truncated is not None:   # completions that hit max_completion_length without an end token
        stats["truncated_ratio"] = (float(scored.truncated.sum()), n)
    for name, values in scored.per_reward.items():
        stats[f"reward_{name}"] = (float(values.sum()), n)
    correct = (scored.accuracy > CORRECT_THRESHOLD).view(n_prompts, -1)
    stats["all_correct_rate"] = (float(correct.all(dim=1).sum()), n_prompts)
    stats["all_wrong_rate"] = (float((~correct).all(dim=1).sum()), n_prompts)
    if scored.temporal is not None:
        groups = scored.temporal.groups
        in_video = torch.isin(scored.group_ids, groups)
        stats["ordered_accuracy"] = (float(scored.accuracy[in_video].sum()), float(in_video.sum()))
        stats["shuffled_accuracy"] = (float(scored.shuffled_accuracy.sum()), float(len(scored.shuffled_accuracy)))
        stats["temporal_bonus_rate"] = (float(scored.temporal.applied.sum()), float(len(groups)))
        n_video = float(in_video.sum())  # mean |A - A without the bonus| over video completions, all processes
        stats["temporal_advantage_shift"] = (float(scored.advantage_shift) * n_video, n_video)
    if cfg.length_bonus:
        stats["length_bonus_rate"] = (float((scored.length > 0).sum()), n)
    if cfg.dynamic_sampling:
        stats["kept_group_rate"] = (float(batch.kept_groups), n_prompts)
    return stats


def gather_stats(accelerator: Accelerator, stats: dict[str, tuple[float, float]]) -> dict[str, float]:
    """One gather of every (sum, count); means (or sums, for SUM_KEYS) over all processes (the ranks of a
    sequence-parallel group, which hold the same work, counted once)."""
    keys = list(stats)
    local = torch.tensor([v for k in keys for v in stats[k]], dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(local.unsqueeze(0)).reshape(-1, len(keys), 2)
    total = gathered.sum(dim=0).cpu() / replicas()
    out = {}
    for i, key in enumerate(keys):
        s, c = float(total[i, 0]), float(total[i, 1])
        if key in SUM_KEYS:
            out[key] = s
        elif key in MAX_KEYS and c > 0:
            out[key] = float(gathered[:, i, 0][gathered[:, i, 1] > 0].max())
        elif c > 0:
            out[key] = s / c
    return out
