"""The parts of one GRPO / T-GRPO step, as small functions the trainer composes top to bottom.

Shapes: K = prompts kept on this process this step; G = ordered completions per prompt; G~ = shuffled
completions per video prompt; V = video prompts among the K; N = K * G ordered completions (prompt-major:
completion j of prompt i is row i * G + j); C = longest completion of the step in tokens.

- `prompt_indices`: a seeded, resumable data order (a fresh permutation per epoch, derived from the seed
  and the epoch alone, so the data position is all a checkpoint needs).
- `load_prompts`: decode media and encode prompts; a bad sample (MediaError / RecordError, or a prompt
  longer than max_prompt_length with its vision tokens) is logged with its id and skipped, never
  replaced, and never truncated.
- `shuffle_permutation` / `shuffled_samples`: a fresh random frame order per step and per video, seeded by
  (seed, step, data position of the prompt); never the identity. "pair" keeps each temporal patch (two
  consecutive frames) together and permutes the patches; "frame" permutes single frames (reference).
- `generate_rollouts`: ONE generate call for ordered and shuffled rollouts: with n = gcd(G, G~) the
  ordered samples are listed G / n times and the shuffled ones G~ / n times, so T-GRPO costs one batched
  generation of G + G~ rows per video prompt instead of a second sequential generation.
- `score_rollouts`: rewards (weighted registry rewards + temporal bonus + length bonus) and advantages,
  the temporal bonus entering before normalisation ("reward") or after it ("advantage", see
  `algorithms.temporal_advantages`), with `advantage_shift` measuring what it changed; all per prompt
  group, so nothing needs gathering across processes. "Correct" (both bonuses) is accuracy
  > `videor1.rewards.CORRECT_THRESHOLD`. The length bonus is computed here, and only here, when the config
  says `length_bonus: true`: it needs each completion's token length and its prompt group, which this
  step has and a text reward does not (there is deliberately no "length" reward in the registry).
- `loss_inputs` / `completion_logps`: the loss forward reuses the encoded prompt batch (same pixel
  tensors, same second_per_grid_ts) with the generated token ids appended as they were generated; with
  `shared` (config `shared_prefix`) each prompt once with its G completions packed after it
  (`videor1.rl.shared_prefix`: same log-probs and gradients, one vision pass and P + GC tokens per group).
- `loss_parts`: the loss micro-batches (`loss_micro_batch_size`: whole groups each); `loss_normaliser`: the
  count every process divides its loss sum by (the whole step's, over all processes), so micro-batches and
  processes add up to the one-pass, one-process loss.
- `shuffle_unit_for`: how a clip too short for pair shuffles is shuffled (by frame; a 1-frame clip not at all).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from videor1.data.media import ImageSpec, MediaError, VideoSpec
from videor1.data.pipeline import CacheStats, FrameCache, cached_load_video
from videor1.data.prompts import build_messages
from videor1.data.records import Record, RecordError, resolve_media_path
from videor1.generation.engines import Completion, RolloutEngine, SamplingParams
from videor1.model.inputs import Sample, append_tokens, encode, make_sample, repeat_rows, select_rows
from videor1.parallel import sequence
from videor1.rewards import CORRECT_THRESHOLD, get_reward
from videor1.rl.algorithms import (
    ADVANTAGES,
    PolicyLoss,
    TemporalBonus,
    length_bonus,
    selective_log_softmax,
    temporal_advantage_shift,
    temporal_advantages,
    temporal_bonus,
)
from videor1.rl.config import RLConfig
from videor1.rl.shared_prefix import is_shared, pack_groups, shared_logps
from videor1.train.common import process_sum

_log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- data
def prompt_indices(n_records: int, seed: int, position: int, count: int) -> list[int]:
    """Record indices at data positions position .. position + count - 1 (epochs reshuffled by seed)."""
    if n_records < 1:
        raise ValueError("no usable training records")
    out, orders = [], {}
    for pos in range(position, position + count):
        epoch, offset = divmod(pos, n_records)
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n_records)
        out.append(int(orders[epoch][offset]))
    return out


@dataclass
class Prompts:
    """The usable prompts of a step on this process.

    samples: K samples (record + decoded media + messages); positions: their data positions (seeds);
    batch: encode(processor, samples), left padded, K rows (input_ids [K, L], vision tensors, ...);
    skipped: (id, reason) of every dropped sample.
    """

    samples: list[Sample]
    positions: list[int]
    batch: BatchFeature | None
    skipped: list[tuple[str | int, str]]


def _sample(record: Record, media_root: str | Path, video: VideoSpec, image: ImageSpec, cache: FrameCache | None,
            stats: CacheStats) -> Sample:
    """`make_sample`, with video clips read through `cache` when one is given (lookups counted in `stats`)."""
    if cache is None or record.data_type != "video":
        return make_sample(record, media_root, video, image)
    path = resolve_media_path(media_root, record.path, record_id=record.problem_id)
    clip, got = cached_load_video(cache, path, video)
    stats.add(got)
    return Sample(record=record, media=clip, messages=build_messages(record))


def load_prompts(records: Sequence[Record], indices: Sequence[int], positions: Sequence[int], processor: Any, *,
                 media_root: str | Path, video: VideoSpec, image: ImageSpec, max_prompt_length: int,
                 cache: FrameCache | None = None, stats: CacheStats | None = None) -> Prompts:
    """Decode, build and encode the prompts of `indices`; bad or too-long samples are skipped, not replaced.
    With `cache`, video clips come from the frame cache where present (hits / lookups added to `stats`)."""
    samples, kept_pos, skipped = [], [], []
    stats = stats if stats is not None else CacheStats()
    for index, pos in zip(indices, positions):
        record = records[index]
        try:
            samples.append(_sample(record, media_root, video, image, cache, stats))
            kept_pos.append(pos)
        except (MediaError, RecordError) as err:
            skipped.append((record.problem_id, f"{type(err).__name__}: {err}"))
    if not samples:
        return Prompts([], [], None, skipped)
    batch = encode(processor, samples, padding_side="left")
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    keep = [i for i, n in enumerate(lengths) if n <= max_prompt_length]
    for i, n in enumerate(lengths):
        if n > max_prompt_length:
            skipped.append((samples[i].record.problem_id,
                            f"prompt has {n} tokens (vision included) > max_prompt_length {max_prompt_length}"))
    if len(keep) < len(samples):
        if not keep:
            return Prompts([], [], None, skipped)
        batch = select_rows(batch, keep)
        samples = [samples[i] for i in keep]
        kept_pos = [kept_pos[i] for i in keep]
    return Prompts(samples, kept_pos, batch, skipped)


@dataclass(frozen=True)
class PromptSource:
    """Step `s` -> (this process's Prompts of step s, frame-cache stats): what `load_prompts` gets in the loop,
    as one callable so that `videor1.data.pipeline.prefetch` can build the next steps in worker processes.
    `position` is the data position of step `first_step`; each step advances it by pps * world."""

    records: Sequence[Record]
    processor: Any
    media_root: str | Path
    video: VideoSpec
    image: ImageSpec
    max_prompt_length: int
    seed: int
    pps: int  # prompts per step and process
    rank: int
    world: int
    first_step: int
    position: int
    cache_dir: str | None = None

    def __call__(self, step: int) -> tuple[Prompts, CacheStats]:
        start = self.position + (step - self.first_step) * self.pps * self.world + self.rank * self.pps
        positions = list(range(start, start + self.pps))
        indices = prompt_indices(len(self.records), self.seed, positions[0], self.pps)
        cache = FrameCache(self.cache_dir) if self.cache_dir else None
        stats = CacheStats()
        prompts = load_prompts(self.records, indices, positions, self.processor, media_root=self.media_root,
                               video=self.video, image=self.image, max_prompt_length=self.max_prompt_length,
                               cache=cache, stats=stats)
        return prompts, stats


# ------------------------------------------------------------------------------------------ shuffles
def shuffle_permutation(n_frames: int, unit: str, rng: np.random.Generator) -> list[int]:
    """A random non-identity frame order of n_frames frames; "pair" moves frames (2k, 2k+1) together."""
    if unit == "frame":
        size, width = n_frames, 1
    elif unit == "pair":
        if n_frames % 2:
            raise ValueError(f"pair shuffle needs an even frame count, got {n_frames}")
        size, width = n_frames // 2, 2
    else:
        raise KeyError(f"unknown shuffle_unit {unit!r}; known: frame, pair")
    if size < 2:
        raise ValueError(f"cannot shuffle {n_frames} frames by {unit}: fewer than two units")
    while True:
        order = rng.permutation(size)
        if (order != np.arange(size)).any():
            break
    return [int(u) * width + k for u in order for k in range(width)]


def shuffle_unit_for(n_frames: int, unit: str) -> str | None:
    """The unit a clip of n_frames frames is shuffled by under the configured `unit` (the documented rule
    for short clips): "pair" needs an even count of at least 4 frames (two pairs); a clip that has fewer, or
    an odd count, is shuffled frame by frame instead; a clip of fewer than 2 frames cannot be shuffled at
    all (None: no shuffled rollouts, so its group gets no temporal bonus, like an image)."""
    if unit == "pair" and n_frames >= 4 and n_frames % 2 == 0:
        return "pair"
    return "frame" if n_frames >= 2 else None


def shuffled_samples(prompts: Prompts, *, seed: int, step: int, unit: str) -> tuple[list[Sample], list[int]]:
    """A frame-shuffled copy of each video sample and the prompt index (0..K-1) it belongs to. A clip too
    short for `unit` is shuffled as `shuffle_unit_for` says, with a warning naming the record."""
    out, owners = [], []
    for i, (sample, pos) in enumerate(zip(prompts.samples, prompts.positions)):
        clip = sample.media
        if getattr(clip, "frames", None) is None:  # an image: no shuffle, no bonus
            continue
        n_frames = len(clip.frames)
        used = shuffle_unit_for(n_frames, unit)
        if used != unit:
            what = f"shuffled by frame instead of by {unit}" if used else "not shuffled (no temporal bonus)"
            _log.warning("step %d, record %r: clip of %d frame(s) under shuffle_unit %r: %s", step,
                         sample.record.problem_id, n_frames, unit, what)
        if used is None:
            continue
        rng = np.random.default_rng([seed, step, pos, 1])
        perm = shuffle_permutation(n_frames, used, rng)
        out.append(Sample(record=sample.record, media=clip.permuted(perm), messages=sample.messages))
        owners.append(i)
    return out, owners


# ------------------------------------------------------------------------------------------ rollouts
def generate_rollouts(engine: RolloutEngine, samples: Sequence[Sample], shuffled: Sequence[Sample],
                      params: SamplingParams, n_ordered: int, n_shuffled: int
                      ) -> tuple[list[list[Completion]], list[list[Completion]]]:
    """n_ordered completions per sample and n_shuffled per shuffled sample, in one generate call."""
    if not shuffled or n_shuffled == 0:
        return engine.generate(list(samples), replace(params, n=n_ordered)), []
    n = math.gcd(n_ordered, n_shuffled)
    reps_o, reps_s = n_ordered // n, n_shuffled // n
    call = list(samples) * reps_o + list(shuffled) * reps_s
    out = engine.generate(call, replace(params, n=n))
    k, v = len(samples), len(shuffled)
    ordered = [[c for r in range(reps_o) for c in out[r * k + i]] for i in range(k)]
    base = reps_o * k
    shuf = [[c for r in range(reps_s) for c in out[base + r * v + j]] for j in range(v)]
    return ordered, shuf


# ------------------------------------------------------------------------------------------- rewards
@dataclass
class Scored:
    """Rewards and advantages of a step. Ordered tensors are [N]; shuffled ones [V * G~]."""

    rewards: torch.Tensor  # total reward: weighted rewards + temporal bonus + length bonus
    per_reward: dict[str, torch.Tensor]  # each named reward, unweighted
    accuracy: torch.Tensor  # the accuracy reward of each ordered completion
    shuffled_accuracy: torch.Tensor  # the accuracy reward of each shuffled completion
    temporal: TemporalBonus | None  # per-group T-GRPO decision (None for GRPO)
    advantage_shift: torch.Tensor  # [] mean |A - A without the temporal bonus| over video groups (0: GRPO)
    length: torch.Tensor  # length bonus
    group_ids: torch.Tensor  # prompt index 0..K-1 of each ordered completion
    advantages: torch.Tensor
    truncated: torch.Tensor | None = None  # [N] bool: the completion hit max_completion_length (no end token)


def reward_columns(samples: Sequence[Sample], n: int, completions: Sequence[Completion]) -> dict[str, list[Any]]:
    """Per-completion columns for reward functions (record fields repeated n times, lengths, group ids)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("problem_type", "solution", "data_type", "problem_id",
                                                  "options", "data_source", "group_ids")}
    for i, sample in enumerate(samples):
        rec = sample.record
        for _ in range(n):
            cols["problem_type"].append(rec.problem_type)
            cols["solution"].append(rec.solution)
            cols["data_type"].append(rec.data_type)
            cols["problem_id"].append(rec.problem_id)
            cols["options"].append(list(rec.options))
            cols["data_source"].append(rec.data_source)
            cols["group_ids"].append(i)
    cols["completion_lengths"] = [len(c.token_ids) for c in completions]
    return cols


def _run_reward(name: str, texts: list[str], columns: dict[str, list[Any]]) -> torch.Tensor:
    values = get_reward(name)(texts, **columns)
    if len(values) != len(texts):
        raise ValueError(f"reward {name!r} returned {len(values)} values for {len(texts)} completions")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def score_rollouts(cfg: RLConfig, samples: Sequence[Sample], ordered: Sequence[Sequence[Completion]],
                   shuffled: Sequence[Sequence[Completion]], owners: Sequence[int]) -> Scored:
    """Rewards, T-GRPO temporal bonus, length bonus and group advantages (see `Scored`)."""
    flat = [c for group in ordered for c in group]
    texts = [c.text for c in flat]
    cols = reward_columns(samples, cfg.num_generations, flat)
    weights = cfg.reward_weights or (1.0,) * len(cfg.rewards)
    per_reward = {name: _run_reward(name, texts, cols) for name in cfg.rewards}
    total = sum(w * per_reward[name] for name, w in zip(cfg.rewards, weights))
    accuracy = per_reward.get(cfg.accuracy_reward)
    if accuracy is None:
        accuracy = _run_reward(cfg.accuracy_reward, texts, cols)
    group_ids = torch.tensor(cols["group_ids"], dtype=torch.long)
    temporal, shuffled_acc = None, torch.zeros(0)
    if cfg.temporal:
        flat_s = [c for group in shuffled for c in group]
        owner_samples = [samples[i] for i in owners]
        cols_s = reward_columns(owner_samples, cfg.shuffled_generations, flat_s)
        shuffled_acc = _run_reward(cfg.accuracy_reward, [c.text for c in flat_s], cols_s) if flat_s \
            else torch.zeros(0)
        s_groups = torch.tensor([owners[g] for g in cols_s["group_ids"]], dtype=torch.long)
        temporal = temporal_bonus(accuracy, group_ids, shuffled_acc, s_groups, alpha=cfg.alpha, mu=cfg.mu,
                                  comparison=cfg.temporal_comparison, threshold=CORRECT_THRESHOLD)
    length = torch.zeros_like(total)
    if cfg.length_bonus:
        lengths = torch.tensor(cols["completion_lengths"])
        length = length_bonus(accuracy, lengths, group_ids, omega=cfg.length_omega, min_len=cfg.length_min,
                              max_len=cfg.length_max, threshold=CORRECT_THRESHOLD)
        total = total + length
    estimator = ADVANTAGES.get(cfg.advantage)
    if temporal is None:
        advantages = estimator(total, group_ids, scale_rewards=cfg.scale_rewards)
        shift = torch.zeros((), dtype=torch.float32)
    else:
        advantages, without = temporal_advantages(total, temporal.bonus, group_ids, mode=cfg.temporal_bonus_mode,
                                                  scale_rewards=cfg.scale_rewards, advantage_fn=estimator)
        shift = temporal_advantage_shift(advantages, without, group_ids, temporal.groups)
        total = total + temporal.bonus
    truncated = torch.tensor([not c.finished for c in flat], dtype=torch.bool)
    return Scored(total, per_reward, accuracy, shuffled_acc, temporal, shift, length, group_ids, advantages,
                  truncated)


# ---------------------------------------------------------------------------------------------- loss
@dataclass
class LossPart:
    """The inputs of one loss forward/backward (a loss micro-batch): whole prompt groups (`loss_parts`)."""

    inputs: BatchFeature  # the prompt rows the rollouts used, completion tokens appended (or packed)
    ids: torch.Tensor  # completion token ids [n, C]
    mask: torch.Tensor  # 1 on completion tokens up to and including EOS (0 on a masked truncated completion)
    advantages: torch.Tensor  # [n]
    behaviour: torch.Tensor | None = None  # [n, C] the engine's log-probs of ids (`async_rollouts`; NaN: unknown)


@dataclass
class LossBatch:
    """One step's loss inputs on this process (built by the trainer): the loss micro-batches with their
    advantages, the batch's weight, and what the step's metrics need."""

    parts: list[LossPart]  # one forward/backward each (one part unless loss_micro_batch_size splits it)
    weight: float  # 0 for the dummy batch of a process without prompts (or, with dynamic sampling, without
    #                an informative group)
    scored: Scored | None  # rewards and bonuses of every ordered completion (None without prompts)
    completion_tokens: float = 0.0  # tokens of every ordered completion (the loss may use fewer)
    kept_groups: int = 0  # prompt groups in the loss (all of them unless dynamic sampling dropped some)


def groups_per_part(loss_micro_batch_size: int, n: int, n_groups: int) -> int:
    """Prompt groups per loss micro-batch: all of them (0: one pass), else loss_micro_batch_size completions
    rounded down to whole groups of n, at least one group."""
    if loss_micro_batch_size <= 0:
        return max(n_groups, 1)
    return max(1, loss_micro_batch_size // n)


def loss_parts(prompt_batch: BatchFeature, token_ids: Sequence[Sequence[int]], advantages: torch.Tensor, n: int,
               pad_id: int, *, shared: bool, per_part: int, drop: torch.Tensor | None = None,
               logprobs: Sequence[Sequence[float] | None] | None = None) -> list[LossPart]:
    """The loss micro-batches of K = len(prompt_batch rows) groups of n completions (prompt-major, as
    `loss_inputs`), `per_part` whole groups each (the last may have fewer). `drop` [K n] bool: completions
    whose mask is zeroed (no loss weight: `mask_truncated_completions`); they still count as sequences
    for grpo / dr_grpo's normaliser, as in TRL. `logprobs` (one list per completion, or None): the engine's
    behaviour log-probs, laid out like the ids (`LossPart.behaviour`)."""
    k = len(token_ids) // n
    out = []
    for first in range(0, k, per_part):
        groups = list(range(first, min(first + per_part, k)))
        rows = [i * n + j for i in groups for j in range(n)]
        batch = prompt_batch if len(groups) == k else select_rows(prompt_batch, groups)
        inputs, ids, mask = loss_inputs(batch, [token_ids[r] for r in rows], n, pad_id, shared=shared)
        if drop is not None:
            mask = mask * (~drop[rows]).to(mask.dtype).unsqueeze(1)
        behaviour = None if logprobs is None else right_aligned([logprobs[r] for r in rows], ids.shape[1])
        out.append(LossPart(inputs, ids, mask, advantages[rows], behaviour))
    return out


def right_aligned(values: Sequence[Sequence[float] | None], width: int) -> torch.Tensor:
    """[N, width] float32: row r holds values[r] in its last len(values[r]) columns, NaN elsewhere (and in the
    whole row when values[r] is None), the layout of `loss_inputs`' completion ids."""
    out = torch.full((len(values), width), float("nan"), dtype=torch.float32)
    for row, v in enumerate(values):
        if v:
            out[row, width - len(v):] = torch.as_tensor(list(v), dtype=torch.float32)
    return out


def add_loss_sums(sums: dict[str, float], out: PolicyLoss, mask: torch.Tensor) -> None:
    """Adds one micro-batch's loss and its token-weighted statistics to `sums` (the trainer's per-step
    totals: loss, kl, clip, tokens; with importance weights also is_ratio, is_truncated and is_ratio_max)."""
    n_tokens = float(mask.sum())
    sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach())
    for key, value in (("kl", out.kl), ("clip", out.clip_fraction), ("is_ratio", out.is_ratio_mean),
                       ("is_truncated", out.is_truncated_fraction)):
        if value is not None:
            sums[key] = sums.get(key, 0.0) + float(value) * n_tokens
    if out.is_ratio_max is not None:
        sums["is_ratio_max"] = max(sums.get("is_ratio_max", 0.0), float(out.is_ratio_max))
    sums["tokens"] = sums.get("tokens", 0.0) + n_tokens


def step_loss_stats(sums: dict[str, float], active: float, processes: int, grad_norm: float) -> dict[str, float]:
    """The step's loss statistics from `add_loss_sums`' totals: the loss times active / processes (see the
    trainer's `_optimise`), token means of kl, clip fraction (and the importance-sampling ratio / truncated
    fraction and their max when present), and `loss_tokens`, the completion tokens they are means over (the
    metrics weigh each process's means by it)."""
    tokens = max(sums.get("tokens", 0.0), 1.0)
    stats = {"loss": sums.get("loss", 0.0) * active / processes, "kl": sums.get("kl", 0.0) / tokens,
             "clip_fraction": sums.get("clip", 0.0) / tokens, "grad_norm": float(grad_norm),
             "loss_tokens": sums.get("tokens", 0.0)}
    if "is_ratio" in sums:
        stats.update(is_ratio_mean=sums["is_ratio"] / tokens, is_ratio_max=sums["is_ratio_max"],
                     is_truncated_fraction=sums["is_truncated"] / tokens)
    return stats


def loss_inputs(prompt_batch: BatchFeature, token_ids: Sequence[Sequence[int]], n: int, pad_id: int, *,
                shared: bool = False) -> tuple[BatchFeature, torch.Tensor, torch.Tensor]:
    """Model inputs of the loss forward over N = K * n completions (prompt-major), with completion ids
    [N, C] and completion mask [N, C], where each completion is right aligned in its C columns.

    shared=False: N rows (prompt i repeated n times + its completions), left padded; the last C positions
    of every row hold its completion (left padding puts every completion at the end). shared=True: K
    packed rows, each prompt once with its n completions after it (`videor1.rl.shared_prefix`); the
    same log-probs and gradients from one prompt copy per group. ids are pad_id where mask is 0 there
    (prompt tokens here); no loss reads them.
    """
    if shared:
        return pack_groups(prompt_batch, token_ids, n, pad_id)
    full = append_tokens(repeat_rows(prompt_batch, n), token_ids, pad_id=pad_id, padding_side="left")
    c = max(1, max(len(t) for t in token_ids))
    ids = full["input_ids"][:, -c:]
    mask = full["completion_mask"][:, -c:]
    inputs = BatchFeature({k: v for k, v in full.items() if k not in ("labels", "completion_mask")})
    return inputs, ids, mask


def completion_logps(model: torch.nn.Module, inputs: BatchFeature, ids: torch.Tensor, temperature: float
                     ) -> torch.Tensor:
    """Per-token log-probs [N, C] of the completion ids under `model` (logits / temperature), for inputs
    from `loss_inputs` (either layout). No float32 copy of the logits is kept for backward
    (`selective_log_softmax`)."""
    if is_shared(inputs):
        return shared_logps(model, inputs, ids, temperature)
    if sequence.active():
        return sequence.plain_logps(model, inputs, ids, temperature)
    c = ids.shape[1]
    logits = model(**inputs, logits_to_keep=c + 1, use_cache=False).logits[:, :-1, :]
    return selective_log_softmax(logits, ids.to(logits.device), temperature)


def loss_normaliser(accelerator: Any, local_count: float) -> float:
    """What each process divides its loss sum by: the count summed over every process (at least 1) divided
    by the number of processes. DDP, DeepSpeed and FSDP average the processes' gradients, so the result is
    sum(all processes' terms) / global count: the one-process loss over the same groups, whatever each
    process kept. `local_count`: this process's `algorithms.loss_count` (0 for a dummy batch). One
    all-reduce."""
    return max(process_sum(accelerator, local_count), 1.0) / accelerator.num_processes


def dummy_part(processor: Any, pad_id: int) -> LossPart:
    """A one-row image prompt + one token, for a zero-weighted forward/backward on a process whose
    prompts were all skipped, or that has fewer loss micro-batches than another (keeps collective calls
    equal across processes). Contributes no gradient."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "."}]}]
    sample = Sample(record=None, media=np.zeros((56, 56, 3), dtype=np.uint8), messages=messages)
    inputs, ids, mask = loss_inputs(encode(processor, [sample]), [[pad_id]], 1, pad_id)
    return LossPart(inputs, ids, mask, torch.zeros(1))
