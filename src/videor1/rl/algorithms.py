"""The math of GRPO and T-GRPO as pure functions on tensors (no model, no I/O), each unit-tested by hand.

Shapes: N = completions in the local batch (prompts x generations, flattened prompt-major), L = completion
tokens (padded), V = vocabulary. A "group" is the completions of one prompt; groups are named by integer
group ids ([N] long tensor), so groups need not be contiguous nor of equal size.

Variants are registered by name in `videor1.registry.Registry`s (`ADVANTAGES`, `LOSS_AGGREGATIONS`);
`ADVANTAGES.get(name)` fails listing the known names, and a user adds a variant with
`ADVANTAGES.register("name")(fn)`.

"Correct" (for the temporal and the length bonus) is accuracy > `videor1.rewards.CORRECT_THRESHOLD` (0.1).

Where we depart from the paper / the reference code:
- The temporal bonus is decided per prompt group (p and p~ of that prompt's ordered and shuffled
  completions). The reference averaged over the whole local batch, which is only right with one prompt
  per device.
- The comparison p > mu * p~ is configurable: "gt" (the paper's formula, our default) or "ge" (the
  reference code's `>=`). They differ only when p == mu * p~ exactly (e.g. p = p~ = 0, where no ordered
  completion is correct and the bonus changes nothing, or p = 0.8, p~ = 1 with mu = 0.8).
- The std of a group is the unbiased one (as torch.std, TRL and the reference); a group of one
  completion has std 0 (not NaN), so its advantage is 0.
- The loss is on the response tokens only (the mask covers the completion up to and including EOS).
- Every loss_type divides by the count of the WHOLE batch (`loss_count`: sequences, tokens, or sequences x
  max_completion_length), summed over processes and loss micro-batches by the trainer, as verl does; TRL's
  grpo / bnpo / dr_grpo divide each process's sum by its own count, so with unequal batches per process
  (dynamic sampling, skipped samples) a completion weighs more on a process that kept fewer. bnpo is
  therefore the same as dapo here (both the token mean over the global batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from videor1.registry import Registry
from videor1.rewards.accuracy import CORRECT_THRESHOLD
from videor1.train.logprobs import token_logprobs

ADV_EPS = 1e-4  # added to the std, as the reference
SCALE_REWARDS = ("group", "batch", "none")
TEMPORAL_COMPARISONS = ("gt", "ge")
TEMPORAL_BONUS_MODES = ("reward", "advantage")  # where T-GRPO's bonus enters (see `temporal_advantages`)

ADVANTAGES: Registry[Callable[..., torch.Tensor]] = Registry("advantage estimator")
LOSS_AGGREGATIONS: Registry[Aggregation] = Registry("loss_type")  # loss_type -> `Aggregation`


# ------------------------------------------------------------------------------------- group stats
def group_mean_std(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and unbiased std of its group. values, group_ids: [N] -> ([N], [N]).

    A group of size 1 has std 0.
    """
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    values = values.to(torch.float64)
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, values)
    means = sums / counts
    sq = torch.zeros_like(sums).index_add_(0, inverse, (values - means[inverse]) ** 2)
    var = torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq))
    return means[inverse], var.sqrt()[inverse]


@ADVANTAGES.register("grpo")
def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, scale_rewards: str = "group",
                     eps: float = ADV_EPS) -> torch.Tensor:
    """GRPO advantages. rewards: [N] float; group_ids: [N] long -> [N] float32.

    A_i = r_i - mean(group); then divided by (std + eps) where std is the group's ("group", the
    reference), the whole local batch's ("batch"), or not divided ("none", Dr. GRPO).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise KeyError(f"unknown scale_rewards {scale_rewards!r}; known: {', '.join(SCALE_REWARDS)}")
    mean, std = group_mean_std(rewards, group_ids)
    centred = rewards.to(torch.float64) - mean
    if scale_rewards == "group":
        centred = centred / (std + eps)
    elif scale_rewards == "batch":
        batch_std = rewards.to(torch.float64).std() if rewards.numel() > 1 else torch.zeros((), dtype=torch.float64)
        centred = centred / (batch_std + eps)
    return centred.to(torch.float32)


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: which groups have rewards that are not all equal.

    rewards, group_ids: [N] -> [K] bool in ascending group-id order (as ``torch.unique``). A group whose
    rewards are all equal (every completion right, or every one wrong, with the same format and bonuses)
    has advantages of 0 under every estimator here, so its completions add nothing to the policy-gradient
    term: with ``beta == 0`` dropping them before the loss changes only how the loss is averaged (over the
    informative completions instead of all), and saves their forward and backward. The rewards compared
    are the totals the advantages were computed from (bonuses included), exactly: no tolerance, so a
    group whose graded rewards differ by any amount is kept.
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    k = int(inverse.max()) + 1 if inverse.numel() else 0
    values = rewards.to(torch.float64)
    high = torch.full((k,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, values, reduce="amax")
    low = torch.full((k,), torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, values, reduce="amin")
    return high > low


# ----------------------------------------------------------------------------------- reward shaping
@dataclass
class TemporalBonus:
    """Result of `temporal_bonus`.

    bonus: [N] float, added to the ordered completions' rewards.
    groups: [K] long, the groups that had shuffled completions (video groups), in ascending id order.
    applied: [K] bool, whether p > mu * p~ (or >=) held for that group.
    p, p_shuffled: [K] float, the ordered / shuffled mean accuracy of each such group.
    """

    bonus: torch.Tensor
    groups: torch.Tensor
    applied: torch.Tensor
    p: torch.Tensor
    p_shuffled: torch.Tensor


def temporal_bonus(accuracy: torch.Tensor, group_ids: torch.Tensor, shuffled_accuracy: torch.Tensor,
                   shuffled_group_ids: torch.Tensor, *, alpha: float = 0.3, mu: float = 0.8,
                   comparison: str = "gt", threshold: float = CORRECT_THRESHOLD) -> TemporalBonus:
    """T-GRPO's temporal bonus, per prompt group.

    accuracy, group_ids: [N] ordered completions; shuffled_accuracy, shuffled_group_ids: [M] shuffled
    completions (only video groups have any). For each group g with shuffled completions: p = mean ordered
    accuracy, p~ = mean shuffled accuracy; if p > mu * p~ ("gt"; "ge": >=), each ordered completion of g
    with accuracy > threshold gets +alpha. Groups without shuffled completions (images) get 0.
    """
    if comparison not in TEMPORAL_COMPARISONS:
        raise KeyError(f"unknown temporal comparison {comparison!r}; known: {', '.join(TEMPORAL_COMPARISONS)}")
    bonus = torch.zeros(accuracy.shape, dtype=torch.float32)
    groups = torch.unique(shuffled_group_ids)
    applied, ps, pts = [], [], []
    for g in groups.tolist():
        mine = group_ids == g
        if not bool(mine.any()):
            raise ValueError(f"shuffled completions of group {g} have no ordered completions")
        p = accuracy[mine].double().mean()
        p_tilde = shuffled_accuracy[shuffled_group_ids == g].double().mean()
        ok = bool(p > mu * p_tilde) if comparison == "gt" else bool(p >= mu * p_tilde)
        if ok:
            bonus[mine & (accuracy > threshold)] = alpha
        applied.append(ok)
        ps.append(float(p))
        pts.append(float(p_tilde))
    return TemporalBonus(bonus, groups, torch.tensor(applied, dtype=torch.bool),
                         torch.tensor(ps, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32))


def centred_bonus(bonus: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """bonus - mean of its group. bonus: [N] float; group_ids: [N] long -> [N] float32 (sums to 0 per group)."""
    mean, _ = group_mean_std(bonus, group_ids)
    return (bonus.to(torch.float64) - mean).to(torch.float32)


def temporal_advantages(rewards: torch.Tensor, bonus: torch.Tensor, group_ids: torch.Tensor, *,
                        mode: str = "reward", scale_rewards: str = "group",
                        advantage_fn: Callable[..., torch.Tensor] = group_advantages
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """T-GRPO advantages with the temporal bonus applied in one of two places, and the same without it.

    rewards: [N] rewards WITHOUT the temporal bonus; bonus: [N] `TemporalBonus.bonus` (alpha on each correct
    ordered completion of a group where p > mu p~, else 0); group_ids: [N]. Returns (advantages with the
    bonus, advantages without it), both [N] float32, the second = advantage_fn(rewards) (GRPO's).

    - ``"reward"`` (the paper and the reference code): A = advantage_fn(rewards + bonus).
    - ``"advantage"``: A = advantage_fn(rewards) + (bonus - mean of the group's bonus).

    Why the reward form loses the bonus. Take a group of G completions with 0/1 accuracy c_i, k of them
    correct (0 < k < G), the same format reward f for all, and the bonus applied: r_i = c_i + f, and
    with the bonus r'_i = (1 + alpha) c_i + f, an affine map of r. Centring removes f, and dividing by
    the std removes (1 + alpha): with s the std of c,
        A_i  = (c_i - k/G) / (s + eps),    A'_i = (1 + alpha)(c_i - k/G) / ((1 + alpha) s + eps),
    so A'_i - A_i = (c_i - k/G) * alpha * eps / ((s + eps)((1 + alpha) s + eps)), of order eps = 1e-4
    (5.4e-5 at most for G = 8, k = 3, alpha = 0.3). The bonus only acts through what breaks the affine
    map: unequal format rewards, the length bonus, graded accuracies (OCR, free-form, regression).

    The advantage form. The bonus is added after normalisation, in advantage units, centred per group:
        A'_i = A_i + alpha * (c_i - k/G)   (groups where the bonus applies; elsewhere A'_i = A_i).
    For the group above (G = 8, k = 3, alpha = 0.3) the correct completions move by +alpha (1 - k/G) =
    +0.1875 and the incorrect ones by -alpha k/G = -0.1125. Why this form:
    - it cannot blow up: |A'_i - A_i| <= alpha whatever the rewards. Scaling the bonus by 1 / (std + eps),
      the other candidate, multiplies it by 1e4 in a group whose rewards are all equal (std 0: e.g. every
      completion correct), exactly the groups where the bonus would otherwise be the only signal;
    - it is centred, so each group's advantages still sum to 0 as in GRPO (no net push on a prompt
      whose completions all get the bonus, e.g. all correct: those groups stay at A = 0). Without
      centring, the extra alpha k/G on every completion of the group would add only variance: its
      expected gradient is 0 under on-policy sampling;
    - it is exactly what the reward form does under Dr. GRPO's unscaled advantages (``scale_rewards:
      "none"``, A = r - mean): there rewards + bonus centres to A_i + (b_i - mean b). So "advantage"
      keeps the paper's bonus at the size Dr. GRPO gives it, whatever std scaling is in use, and with
      ``scale_rewards: "none"`` the two modes coincide (the bonus survives there in either mode).
    """
    if mode not in TEMPORAL_BONUS_MODES:
        raise KeyError(f"unknown temporal_bonus_mode {mode!r}; known: {', '.join(TEMPORAL_BONUS_MODES)}")
    without = advantage_fn(rewards, group_ids, scale_rewards=scale_rewards)
    if mode == "reward":
        return advantage_fn(rewards + bonus, group_ids, scale_rewards=scale_rewards), without
    return without + centred_bonus(bonus, group_ids), without


def temporal_advantage_shift(with_bonus: torch.Tensor, without_bonus: torch.Tensor, group_ids: torch.Tensor,
                             video_groups: torch.Tensor) -> torch.Tensor:
    """Mean |A_with - A_without| over the ordered completions of the video groups (0 when there are none).

    with_bonus, without_bonus, group_ids: [N]; video_groups: [K] the ids of groups that had shuffled
    completions (`TemporalBonus.groups`) -> [] float32. The metric `temporal_advantage_shift`: ~0 (order
    eps) for 0/1 groups with equal format rewards in ``"reward"`` mode, alpha k/G (1 - k/G) * 2 per
    bonus group in ``"advantage"`` mode.
    """
    in_video = torch.isin(group_ids, video_groups)
    if not bool(in_video.any()):
        return torch.zeros((), dtype=torch.float32)
    diff = (with_bonus.to(torch.float64) - without_bonus.to(torch.float64))[in_video].abs()
    return diff.mean().to(torch.float32)


def length_bonus(accuracy: torch.Tensor, lengths: torch.Tensor, group_ids: torch.Tensor, *, omega: float = 0.2,
                 min_len: int = 320, max_len: int = 512, threshold: float = CORRECT_THRESHOLD) -> torch.Tensor:
    """Video-R1's length bonus (the one implementation; RLConfig `length_bonus: true` turns it on).

    accuracy: [N] float; lengths: [N] completion lengths in tokens; group_ids: [N] long -> [N] float32.
    +omega for each correct completion (accuracy > threshold) whose length is in [min_len, max_len]
    (inclusive), but only in groups (same prompt) with more than one correct completion. omega = 0.2 as
    the reference code (the paper says 0.1). Raises ValueError when the shapes differ or min_len > max_len.
    """
    if not accuracy.shape == lengths.shape == group_ids.shape or accuracy.dim() != 1:
        raise ValueError(f"length_bonus: accuracy {tuple(accuracy.shape)}, lengths {tuple(lengths.shape)} and "
                         f"group_ids {tuple(group_ids.shape)} must be [N] each")
    if min_len > max_len:
        raise ValueError(f"length_bonus: min_len ({min_len}) > max_len ({max_len})")
    correct = accuracy > threshold
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_correct = torch.zeros(len(counts), dtype=torch.long).index_add_(0, inverse, correct.long())
    earns = correct & (n_correct[inverse] > 1) & (lengths >= min_len) & (lengths <= max_len)
    return torch.where(earns, torch.tensor(float(omega), dtype=torch.float32),
                       torch.tensor(0.0, dtype=torch.float32))


# ------------------------------------------------------------------------------------------- losses
def selective_log_softmax(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under logits / temperature. logits: [B, L, V] (any float dtype); token_ids: [B, L] -> [B, L]
    float32. Chunked, with its own backward: no float32 copy of the logits is kept for backward
    (`videor1.train.logprobs.token_logprobs`)."""
    return token_logprobs(logits, token_ids, temperature=temperature)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1. [B, L] -> [B, L]."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


LOG_RATIO_CLAMP = 20.0  # |log ratio| bound before every exp (as verl): one stale token cannot give inf


def clamped_ratio(log_ratio: torch.Tensor, clamp: float = LOG_RATIO_CLAMP) -> torch.Tensor:
    """exp(clamp(log_ratio, -clamp, clamp)): a ratio that is finite whatever the log-probs."""
    return torch.exp(log_ratio.clamp(-clamp, clamp))


@dataclass
class ImportanceWeights:
    """Output of `truncated_is_weights` ([B, L] each, detached)."""

    weights: torch.Tensor  # min(ratio, cap): what the policy-gradient term is multiplied by
    ratio: torch.Tensor  # pi_old / pi_behaviour before truncation (1 where the behaviour log-prob is unknown)
    truncated: torch.Tensor  # bool: ratio > cap


def truncated_is_weights(old_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float,
                         clamp: float = LOG_RATIO_CLAMP) -> ImportanceWeights:
    """Truncated importance sampling for rollouts from an older policy (one-step off-policy training).

    old_logp: [B, L] the trainer's log-probs of the sampled tokens at the weights of this step before its
    update; behaviour_logp: [B, L] the rollout engine's (the weights it generated with; NaN: unknown, weight
    1). Per token w = min(exp(clamp(old - behaviour, -clamp, clamp)), cap), detached (verl's TIS).
    """
    if not cap > 0:
        raise ValueError(f"truncated_is_weights: cap must be > 0, got {cap}")
    known = ~torch.isnan(behaviour_logp)
    log_ratio = torch.where(known, old_logp.detach() - behaviour_logp.nan_to_num(0.0), torch.zeros_like(old_logp))
    ratio = clamped_ratio(log_ratio, clamp)
    return ImportanceWeights(ratio.clamp(max=cap), ratio, ratio > cap)


@dataclass
class PolicyLoss:
    """Output of `policy_loss`: the scalar loss (with grad) and detached statistics (masked means)."""

    loss: torch.Tensor
    kl: torch.Tensor  # mean k3 KL over completion tokens (0 when beta == 0)
    clip_fraction: torch.Tensor  # fraction of completion tokens where the clipped branch was active
    ratio_mean: torch.Tensor  # mean importance ratio over completion tokens
    is_ratio_mean: torch.Tensor | None = None  # truncated IS (behaviour_logp given): mean pi_old / pi_behaviour,
    is_ratio_max: torch.Tensor | None = None   # its max over completion tokens,
    is_truncated_fraction: torch.Tensor | None = None  # and the fraction of tokens above the cap


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                ref_logp: torch.Tensor | None = None, beta: float = 0.0, epsilon: float = 0.2,
                epsilon_high: float | None = None, loss_type: str = "grpo",
                max_completion_length: int | None = None, normaliser: float | None = None,
                behaviour_logp: torch.Tensor | None = None, is_cap: float = 2.0) -> PolicyLoss:
    """Clipped GRPO surrogate with a k3 KL penalty, aggregated by `loss_type`.

    logp, old_logp, ref_logp: [B, L] per-token log-probs (policy with grad; rollout policy; reference);
    advantages: [B]; mask: [B, L] 1 on completion tokens. Per token:
    ratio = exp(clamp(logp - old_logp, -20, 20)); l = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A)
    + beta * KL. With beta == 0, ref_logp is not needed (no reference model exists).

    behaviour_logp [B, L] (rollouts from an older policy than old_logp's, `async_rollouts`): the
    policy-gradient term is multiplied by the truncated importance weight `truncated_is_weights(old_logp,
    behaviour_logp, is_cap)` (the KL term is not), and its statistics are returned.

    The loss is `row_terms(...).sum() / normaliser` (`aggregate`): the normaliser defaults to this batch's
    own count (`loss_count`: one process, one pass). A trainer that splits the batch (processes, loss
    micro-batches) passes the count of the whole batch, so that the parts' losses add up to the whole's.
    """
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta != 0 needs the reference model's log-probs (ref_logp)")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    ratio = clamped_ratio(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    tis = None
    if behaviour_logp is not None:
        tis = truncated_is_weights(old_logp, behaviour_logp.to(logp.device, logp.dtype), is_cap)
        per_token = per_token * tis.weights
    if beta != 0.0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    else:
        kl = torch.zeros_like(logp)
    if normaliser is None:
        normaliser = max(loss_count(loss_type, mask, max_completion_length), 1.0)
    loss = aggregate(loss_type, per_token, mask, normaliser)
    with torch.no_grad():
        is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        stats = [masked_mean(x, mask) for x in (kl, is_clipped.to(logp.dtype), ratio)]
        if tis is not None:
            most = (tis.ratio * mask).max() if bool(mask.any()) else torch.zeros(())
            stats += [masked_mean(tis.ratio, mask), most, masked_mean(tis.truncated.to(logp.dtype), mask)]
    return PolicyLoss(loss, *stats)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where mask is 1 (0 when the mask is empty). [B, L], [B, L] -> [] (detached)."""
    values = values.detach()
    return (values * mask).sum() / mask.sum().clamp(min=1)


# ------------------------------------------------------------------------------------- loss types
@dataclass(frozen=True)
class Aggregation:
    """A `loss_type`: the loss is sum over rows of `row_terms` / normaliser, and the normaliser of a whole
    batch is the sum of its parts' `count`s. Splitting the batch (over processes, over loss micro-batches)
    and dividing every part by the WHOLE batch's count therefore gives the one-pass loss and gradient.

    row_terms(per_token [B, L], mask [B, L]) -> [B]; count(mask [B, L], max_completion_length) -> float."""

    row_terms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    count: Callable[[torch.Tensor, int | None], float]
    doc: str = ""


def _token_sums(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (per_token * mask).sum(-1)


def _sequence_means(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def _rows(mask: torch.Tensor, _: int | None) -> float:
    return float(mask.shape[0])


def _tokens(mask: torch.Tensor, _: int | None) -> float:
    return float(mask.sum())


def _rows_times_length(mask: torch.Tensor, max_completion_length: int | None) -> float:
    if not max_completion_length:
        raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
    return float(mask.shape[0] * max_completion_length)


LOSS_AGGREGATIONS.register("grpo")(Aggregation(
    _sequence_means, _rows, "mean over each sequence's tokens, then over the sequences (the paper / reference)"))
LOSS_AGGREGATIONS.register("bnpo")(Aggregation(
    _token_sums, _tokens, "mean over every completion token of the batch (all processes): as dapo"))
LOSS_AGGREGATIONS.register("dapo")(Aggregation(
    _token_sums, _tokens, "token mean over the global batch (DAPO, verl's token-mean)"))
LOSS_AGGREGATIONS.register("dr_grpo")(Aggregation(
    _token_sums, _rows_times_length, "token sum / (sequences x max_completion_length): Dr. GRPO's constant"))


def loss_count(loss_type: str, mask: torch.Tensor, max_completion_length: int | None = None) -> float:
    """The count `loss_type` divides by, over the rows of `mask` [B, L]: sequences (grpo), completion tokens
    (bnpo, dapo) or sequences x max_completion_length (dr_grpo). Sum it over every part of a batch."""
    return LOSS_AGGREGATIONS.get(loss_type).count(mask, max_completion_length)


def aggregate(loss_type: str, per_token: torch.Tensor, mask: torch.Tensor, normaliser: float) -> torch.Tensor:
    """sum over rows of the `loss_type`'s row terms / normaliser. per_token, mask: [B, L] -> []. With
    `normaliser` = `loss_count` of a whole batch, these rows' share of that batch's loss (the shares of
    a batch's parts add up to its loss). `normaliser` must be > 0."""
    if not normaliser > 0:
        raise ValueError(f"aggregate: the normaliser must be > 0, got {normaliser}")
    terms = LOSS_AGGREGATIONS.get(loss_type).row_terms(per_token, mask.to(per_token.dtype))
    return terms.sum() / float(normaliser)
