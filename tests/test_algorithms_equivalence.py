"""videor1.rl.algorithms against plain Python loops, on many random shapes and seeds.

The hand-computed cases live in test_algorithms.py; here every vectorised function is compared with the
obvious loop over groups / rows / tokens (as verl's test_core_algos_on_cpu does), with group ids that are
non-contiguous, unequal in size and include groups of one.

The last tests check what data-parallel training computes: each process aggregates its part of the batch,
divided by the GLOBAL count over processes / processes (rl/step.py `loss_normaliser`, as rl/trainer.py
`_optimise` passes it), the gradients are averaged over processes, so the effective loss is the MEAN of the
per-process losses; loss micro-batches inside a process add up the same way. Findings:

- every loss type (grpo, bnpo, dr_grpo, dapo) then equals the one-process, one-pass loss for ANY split,
  value and gradient, also when the processes hold different numbers of completions;
- with each process's LOCAL count (TRL's grpo / bnpo / dr_grpo, our code before issue 35) they do not
  (a counter-example documents it).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from videor1.rl.algorithms import (
    aggregate,
    group_advantages,
    group_mean_std,
    loss_count,
    selective_log_softmax,
    temporal_bonus,
)

SEEDS = range(30)
AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _group_ids(n: int, g: torch.Generator) -> torch.Tensor:
    """[n] ids drawn from a sparse range, shuffled: non-contiguous, unequal sizes, often singletons."""
    n_groups = int(torch.randint(1, n + 1, (1,), generator=g))
    labels = torch.randperm(4 * n + 7, generator=g)[:n_groups] * 3 - 5  # sparse, some negative
    return labels[torch.randint(0, n_groups, (n,), generator=g)]


def _random_mask(b: int, length: int, g: torch.Generator) -> torch.Tensor:
    """[b, length] 0/1 completion mask: a prefix of random length (0 allowed) per row."""
    lengths = torch.randint(0, length + 1, (b,), generator=g)
    return (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float64)


# ------------------------------------------------------------------------------------- references
def _loop_mean_std(values: list[float], ids: list[int]) -> tuple[list[float], list[float]]:
    members: dict[int, list[float]] = {}
    for v, i in zip(values, ids):
        members.setdefault(i, []).append(v)
    stats = {i: (statistics.fmean(vs), statistics.stdev(vs) if len(vs) > 1 else 0.0) for i, vs in members.items()}
    return [stats[i][0] for i in ids], [stats[i][1] for i in ids]


def _loop_advantages(rewards: list[float], ids: list[int], scale: str, eps: float = 1e-4) -> list[float]:
    means, stds = _loop_mean_std(rewards, ids)
    batch_std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    out = []
    for r, m, s in zip(rewards, means, stds):
        a = r - m
        if scale == "group":
            a /= s + eps
        elif scale == "batch":
            a /= batch_std + eps
        out.append(a)
    return out


def _loop_aggregate(name: str, per_token: list[list[float]], mask: list[list[float]], max_len: int,
                    normaliser: float | None = None) -> float:
    rows = [(sum(t * m for t, m in zip(tr, mr)), sum(mr)) for tr, mr in zip(per_token, mask)]
    total, count = sum(s for s, _ in rows), sum(c for _, c in rows)
    if name == "grpo":
        terms, local = sum(s / max(c, 1) for s, c in rows), len(rows)
    elif name in ("bnpo", "dapo"):
        terms, local = total, count
    elif name == "dr_grpo":
        terms, local = total, len(rows) * max_len
    else:
        raise KeyError(name)
    return terms / (max(local, 1) if normaliser is None else normaliser)


def _aggregate(name: str, per_token: torch.Tensor, mask: torch.Tensor, max_len: int,
               normaliser: float | None = None) -> torch.Tensor:
    """The loss `policy_loss` aggregates: the local count (clamped to 1) unless a normaliser is given."""
    if normaliser is None:
        normaliser = max(loss_count(name, mask, max_len), 1.0)
    return aggregate(name, per_token, mask, normaliser)


# ------------------------------------------------------------------------------------ group stats
@pytest.mark.parametrize("seed", SEEDS)
def test_group_mean_std_matches_loop(seed):
    g = _gen(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    values = torch.randn(n, generator=g) * 3
    ids = _group_ids(n, g)
    mean, std = group_mean_std(values, ids)
    ref_mean, ref_std = _loop_mean_std([float(v) for v in values.double()], ids.tolist())
    assert mean.tolist() == pytest.approx(ref_mean, rel=1e-9, abs=1e-12)
    assert std.tolist() == pytest.approx(ref_std, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("seed", SEEDS)
def test_group_advantages_matches_loop(seed, scale):
    g = _gen(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    # binary-ish rewards (as accuracy) on even seeds, to hit all-equal groups (std 0); continuous on odd ones
    rewards = (torch.randint(0, 2, (n,), generator=g).float() if seed % 2 == 0
               else torch.rand(n, generator=g) * 2)
    ids = _group_ids(n, g)
    adv = group_advantages(rewards, ids, scale_rewards=scale)
    assert adv.dtype == torch.float32 and adv.shape == (n,)
    ref = _loop_advantages([float(r) for r in rewards.double()], ids.tolist(), scale)
    # float32 output; a std of 0 divides by eps = 1e-4 (a tiny centred value becomes up to ~1e4)
    assert adv.tolist() == pytest.approx(ref, rel=1e-5, abs=1e-5)


# -------------------------------------------------------------------------------- temporal bonus
def _loop_temporal(acc, ids, sacc, sids, alpha, mu, comparison, threshold):
    bonus = [0.0] * len(acc)
    groups = sorted(set(sids))
    applied, ps, pts = [], [], []
    for grp in groups:
        mine = [a for a, i in zip(acc, ids) if i == grp]
        theirs = [a for a, i in zip(sacc, sids) if i == grp]
        p, pt = sum(mine) / len(mine), sum(theirs) / len(theirs)
        ok = p > mu * pt if comparison == "gt" else p >= mu * pt
        if ok:
            for k, (a, i) in enumerate(zip(acc, ids)):
                if i == grp and a > threshold:
                    bonus[k] = alpha
        applied.append(ok)
        ps.append(p)
        pts.append(pt)
    return bonus, groups, applied, ps, pts


@pytest.mark.parametrize("comparison", ["gt", "ge"])
@pytest.mark.parametrize("seed", SEEDS)
def test_temporal_bonus_matches_loop(seed, comparison):
    g = _gen(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    ids = _group_ids(n, g)
    # dyadic accuracies (exact in float) incl. values at and around the 0.1 threshold; mu 0.5 or 1 makes
    # p == mu * p~ ties frequent, where "gt" and "ge" differ
    choices = torch.tensor([0.0, 0.0625, 0.125, 0.5, 1.0])
    acc = choices[torch.randint(0, len(choices), (n,), generator=g)]
    present = torch.unique(ids)
    video = present[torch.rand(len(present), generator=g) < 0.7]  # the others are image groups
    m = int(torch.randint(0, 3 * max(len(video), 1) + 1, (1,), generator=g)) if len(video) else 0
    sids = video[torch.randint(0, len(video), (m,), generator=g)] if m else torch.zeros(0, dtype=torch.long)
    sacc = choices[torch.randint(0, len(choices), (m,), generator=g)]
    alpha, mu = 0.3, [0.5, 1.0, 0.8][seed % 3]
    out = temporal_bonus(acc, ids, sacc, sids, alpha=alpha, mu=mu, comparison=comparison, threshold=0.1)
    bonus, groups, applied, ps, pts = _loop_temporal(acc.tolist(), ids.tolist(), sacc.tolist(), sids.tolist(),
                                                     alpha, mu, comparison, 0.1)
    assert out.bonus.tolist() == pytest.approx(bonus)
    assert out.groups.tolist() == groups
    assert out.applied.tolist() == applied
    assert out.p.tolist() == pytest.approx(ps) and out.p_shuffled.tolist() == pytest.approx(pts)


# ------------------------------------------------------------------------------ loss aggregation
@pytest.mark.parametrize("name", AGGREGATIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_loss_aggregation_matches_loop(seed, name):
    g = _gen(seed)
    b, length = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 17, (1,), generator=g))
    per_token = torch.randn(b, length, generator=g, dtype=torch.float64)
    mask = _random_mask(b, length, g)
    max_len = length + int(torch.randint(0, 5, (1,), generator=g))
    normaliser = None if seed % 3 == 0 else float(torch.randint(1, 50, (1,), generator=g)) / (1 + seed % 4)
    got = _aggregate(name, per_token, mask, max_len, normaliser)
    ref = _loop_aggregate(name, per_token.tolist(), mask.tolist(), max_len, normaliser)
    assert float(got) == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_empty_mask_gives_zero_not_nan():
    per_token, mask = torch.randn(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    for name in AGGREGATIONS:
        assert float(_aggregate(name, per_token, mask, 5)) == 0.0


# -------------------------------------------------------------------------------------- log-probs
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("seed", range(10))
def test_selective_log_softmax_matches_gather(seed, dtype):
    g = _gen(seed)
    b, length, vocab = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (5, 12, 300))
    logits = (torch.randn(b, length, vocab, generator=g) * 4).to(dtype)
    ids = torch.randint(0, vocab, (b, length), generator=g)
    got = selective_log_softmax(logits, ids)
    ref = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert got.shape == (b, length) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------- data-parallel equivalence
def _split_loss(name: str, per_token: torch.Tensor, mask: torch.Tensor, max_len: int,
                processes: list[list[slice]], *, local: bool = False) -> torch.Tensor:
    """What data-parallel processes optimise, each holding the micro-batches `processes[r]` (row slices):
    each micro-batch's loss is divided by the global count / processes (`loss_normaliser`), or, with
    `local`, each process divides by its own count (TRL's grpo / bnpo / dr_grpo); gradients are averaged
    over processes, i.e. the losses are averaged."""
    world = len(processes)
    counts = [sum(loss_count(name, mask[s], max_len) for s in parts) for parts in processes]
    normalisers = [max(c, 1.0) for c in counts] if local else [max(sum(counts), 1.0) / world] * world
    losses = [sum(aggregate(name, per_token[s], mask[s], n) for s in parts)
              for parts, n in zip(processes, normalisers)]
    return sum(losses) / world


def _batch(seed: int, b: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    g = _gen(seed)
    length = int(torch.randint(2, 20, (1,), generator=g))
    per_token = torch.randn(b, length, generator=g, dtype=torch.float64, requires_grad=True)
    mask = _random_mask(b, length, g)
    mask[:, 0] = 1  # every completion has at least one token (EOS)
    return per_token, mask, length


@pytest.mark.parametrize("name", AGGREGATIONS)
@pytest.mark.parametrize("seed", range(20))
def test_any_split_over_processes_and_micro_batches_equals_one_pass(seed, name):
    """Two processes holding unequal numbers of rows (one may hold a single row), each in one or several
    micro-batches: value and gradient equal the one-process, one-pass loss, for every loss type."""
    g = _gen(2000 + seed)
    b = int(torch.randint(2, 11, (1,), generator=g))
    per_token, mask, length = _batch(seed, b)
    one = _aggregate(name, per_token, mask, length)
    (g_one,) = torch.autograd.grad(one, per_token)
    for split in range(1, b):
        step = int(torch.randint(1, b, (1,), generator=g))   # micro-batch rows
        processes = [[slice(s, min(s + step, e)) for s in range(a, e, step)] for a, e in ((0, split), (split, b))]
        two = _split_loss(name, per_token, mask, length, processes)
        assert two.item() == pytest.approx(one.item(), rel=1e-10, abs=1e-12)
        (g_two,) = torch.autograd.grad(two, per_token)
        torch.testing.assert_close(g_two, g_one, rtol=1e-10, atol=1e-12)
    # and the one-process dapo is the token mean of the batch, i.e. bnpo
    assert one.item() == pytest.approx(_aggregate("bnpo" if name == "dapo" else name, per_token, mask,
                                                  length).item(), rel=1e-12)


def test_local_counts_are_not_split_invariant():
    """Counter-examples: dividing by each process's own count (TRL's grpo / bnpo / dr_grpo) weighs a row by
    its process's batch size; the global count does not."""
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]],
                             dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    halves = [[slice(0, 1)], [slice(1, 3)]]
    # one process: grpo = (1 + 0 + 4) / 3; bnpo = (4 + 0 + 4) / 7; dr_grpo = 8 / (3 * 4)
    expected = {"grpo": 5 / 3, "bnpo": 8 / 7, "dr_grpo": 8 / 12, "dapo": 8 / 7}
    # split 1 | 2 with local counts: grpo (1 + (0 + 4) / 2) / 2 = 1.5; bnpo (1 + 4 / 3) / 2 = 7 / 6;
    # dr_grpo (4/4 + 4/8) / 2 = 0.75
    local = {"grpo": 1.5, "bnpo": 7 / 6, "dr_grpo": 0.75, "dapo": 7 / 6}
    for name in AGGREGATIONS:
        assert float(_aggregate(name, per_token, mask, 4)) == pytest.approx(expected[name])
        assert float(_split_loss(name, per_token, mask, 4, halves)) == pytest.approx(expected[name])
        assert float(_split_loss(name, per_token, mask, 4, halves, local=True)) == pytest.approx(local[name])
