"""videor1.rl.algorithms against hand computations (numbers worked out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from videor1.rl.algorithms import (
    ADVANTAGES,
    LOSS_AGGREGATIONS,
    aggregate,
    group_advantages,
    group_mean_std,
    informative_groups,
    k3_kl,
    length_bonus,
    loss_count,
    policy_loss,
    selective_log_softmax,
    temporal_advantage_shift,
    temporal_advantages,
    temporal_bonus,
)

GROUPS = torch.tensor([0, 0, 0, 0, 1, 1])
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])


def test_group_stats_unbiased_and_singletons():
    mean, std = group_mean_std(torch.tensor([1.0, 3.0, 5.0, 7.0]), torch.tensor([4, 9, 4, 2]))
    # group 4: {1, 5} mean 3, unbiased std sqrt(((-2)^2 + 2^2) / 1) = sqrt(8); groups 9 and 2 are singletons
    assert mean.tolist() == [3.0, 3.0, 3.0, 7.0]
    assert std.tolist() == pytest.approx([math.sqrt(8), 0.0, math.sqrt(8), 0.0])


def test_group_advantages_three_scalings():
    # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735; group 1: mean 2, std 0 -> advantage 0
    a = group_advantages(REWARDS, GROUPS, scale_rewards="group")
    s = math.sqrt(1 / 3) + 1e-4
    assert a.tolist() == pytest.approx([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0, 0.0], rel=1e-6)
    # batch std of [1,0,0,1,2,2]: mean 1, squares 0+1+1+0+1+1 = 4, / 5 -> 0.8, std 0.894427
    b = group_advantages(REWARDS, GROUPS, scale_rewards="batch")
    sb = math.sqrt(0.8) + 1e-4
    assert b.tolist() == pytest.approx([0.5 / sb, -0.5 / sb, -0.5 / sb, 0.5 / sb, 0.0, 0.0], rel=1e-6)
    assert group_advantages(REWARDS, GROUPS, scale_rewards="none").tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    # interleaved group ids give the same per-element result as contiguous ones
    perm = torch.tensor([4, 0, 5, 1, 2, 3])
    assert torch.allclose(group_advantages(REWARDS[perm], GROUPS[perm]), a[perm])
    with pytest.raises(KeyError, match="known: group, batch, none"):
        group_advantages(REWARDS, GROUPS, scale_rewards="global")


def test_temporal_bonus_per_group_and_images_get_none():
    acc = torch.tensor([1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    gid = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])  # groups 0, 1 video; 2 image (no shuffled)
    sacc = torch.tensor([1.0, 0.0, 1.0, 1.0])
    sgid = torch.tensor([0, 0, 1, 1])
    out = temporal_bonus(acc, gid, sacc, sgid, alpha=0.3, mu=0.8)
    # group 0: p = 2.5/4 = 0.625 > 0.8 * 0.5 = 0.4 -> +0.3 on accuracies > 0.1 (indices 0, 2, 3)
    # group 1: p = 0.25, not > 0.8 * 1.0 -> nothing; group 2 (image): nothing
    assert out.bonus.tolist() == pytest.approx([0.3, 0, 0.3, 0.3, 0, 0, 0, 0, 0, 0])
    assert out.groups.tolist() == [0, 1] and out.applied.tolist() == [True, False]
    assert out.p.tolist() == pytest.approx([0.625, 0.25]) and out.p_shuffled.tolist() == [0.5, 1.0]


def test_temporal_bonus_comparison_at_the_boundary():
    acc = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # p = 0.8 exactly
    gid = torch.zeros(5, dtype=torch.long)
    sacc, sgid = torch.tensor([1.0, 1.0]), torch.zeros(2, dtype=torch.long)  # p~ = 1, mu * p~ = 0.8
    assert temporal_bonus(acc, gid, sacc, sgid, mu=0.8, comparison="gt").bonus.sum() == 0
    ge = temporal_bonus(acc, gid, sacc, sgid, mu=0.8, comparison="ge", alpha=0.5)
    assert ge.bonus.tolist() == [0.5, 0.5, 0.5, 0.5, 0.0]
    assert temporal_bonus(acc, gid, sacc, sgid, mu=1.0, comparison="ge").bonus.sum() == 0
    with pytest.raises(KeyError, match="known: gt, ge"):
        temporal_bonus(acc, gid, sacc, sgid, comparison="geq")


# A group of 8 video completions, 3 correct, equal format reward 1, and an image group of 2 (no bonus).
ACC8 = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
GID8 = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
FORMAT8 = torch.ones(10)
BONUS8 = torch.tensor([0.3, 0, 0.3, 0, 0, 0.3, 0, 0, 0, 0])  # temporal_bonus applied to group 0 (alpha 0.3)
VIDEO8 = torch.tensor([0])


def test_reward_mode_bonus_is_erased_for_a_01_group_with_equal_format():
    # r = c + 1 -> with the bonus 1.3 c + 1: an affine map; A' - A = (c - 3/8) * 0.3 eps / ((s + eps)(1.3 s + eps))
    # with s = sqrt(3/8 * 5/8 * 8/7) = 0.517549 -> at most 0.625 * 0.3e-4 / (0.517649 * 0.672914) = 5.4e-5
    with_b, without = temporal_advantages(ACC8 + FORMAT8, BONUS8, GID8, mode="reward")
    assert torch.equal(without, group_advantages(ACC8 + FORMAT8, GID8))
    s = math.sqrt(3 / 8 * 5 / 8 * 8 / 7)
    largest = 0.625 * 0.3 * 1e-4 / ((s + 1e-4) * (1.3 * s + 1e-4))
    assert largest == pytest.approx(5.4e-5, rel=0.01)
    assert (with_b - without).abs().max().item() == pytest.approx(largest, rel=1e-2)
    shift = temporal_advantage_shift(with_b, without, GID8, VIDEO8)
    assert 0 < shift.item() < 1e-4


def test_reward_mode_bonus_survives_with_graded_rewards():
    # graded accuracies (e.g. OCR): 0.9 and 0.5 both correct (> 0.1), 0.05 and 0 not; the bonus on 0.9 and
    # 0.5 is no affine map of [0.9, 0.5, 0.05, 0] -> the advantages change by far more than eps
    acc = torch.tensor([0.9, 0.5, 0.05, 0.0])
    gid = torch.zeros(4, dtype=torch.long)
    bonus = torch.tensor([0.3, 0.3, 0.0, 0.0])
    with_b, without = temporal_advantages(acc, bonus, gid, mode="reward")
    # without: mean 0.3625, deviations [0.5375, 0.1375, -0.3125, -0.3625], std sqrt(0.536875 / 3) = 0.423035
    # with: [1.2, 0.8, 0.05, 0] mean 0.5125, deviations [0.6875, 0.2875, -0.4625, -0.5125], std
    # sqrt(1.031875 / 3) = 0.586479
    s0, s1 = math.sqrt(0.536875 / 3) + 1e-4, math.sqrt(1.031875 / 3) + 1e-4
    assert without.tolist() == pytest.approx([0.5375 / s0, 0.1375 / s0, -0.3125 / s0, -0.3625 / s0], rel=1e-5)
    assert with_b.tolist() == pytest.approx([0.6875 / s1, 0.2875 / s1, -0.4625 / s1, -0.5125 / s1], rel=1e-5)
    expected = sum(abs(a / s1 - b / s0) for a, b in ((0.6875, 0.5375), (0.2875, 0.1375), (-0.4625, -0.3125),
                                                       (-0.5125, -0.3625))) / 4
    shift = temporal_advantage_shift(with_b, without, gid, torch.tensor([0]))
    assert shift.item() == pytest.approx(expected, rel=1e-4) and shift.item() > 0.05


def test_advantage_mode_moves_correct_up_and_incorrect_down_by_stated_amounts():
    # A' = A + alpha (c - k/G): correct +0.3 * 5/8 = +0.1875, incorrect -0.3 * 3/8 = -0.1125; the image
    # group (no bonus) is unchanged; each group's advantages still sum to 0
    with_b, without = temporal_advantages(ACC8 + FORMAT8, BONUS8, GID8, mode="advantage")
    delta = (with_b - without).tolist()
    assert delta == pytest.approx([0.1875, -0.1125, 0.1875, -0.1125, -0.1125, 0.1875, -0.1125, -0.1125, 0, 0],
                                  abs=1e-6)
    assert with_b[:8].sum().item() == pytest.approx(0.0, abs=1e-5)
    # mean |delta| over the 8 video completions: (3 * 0.1875 + 5 * 0.1125) / 8 = 2 * 0.3 * 3/8 * 5/8
    shift = temporal_advantage_shift(with_b, without, GID8, VIDEO8)
    assert shift.item() == pytest.approx(0.140625, rel=1e-6)


def test_advantage_mode_cannot_blow_up_when_all_are_correct():
    # every completion correct: std 0, GRPO advantage 0; the centred bonus is 0 too (no 1 / (0 + eps) factor)
    acc, gid = torch.ones(4), torch.zeros(4, dtype=torch.long)
    with_b, without = temporal_advantages(acc, torch.full((4,), 0.3), gid, mode="advantage")
    assert with_b.tolist() == [0.0] * 4 and without.tolist() == [0.0] * 4


def test_modes_coincide_under_dr_grpo_scaling():
    # scale_rewards "none": A = r - mean, so the reward form centres the bonus exactly as the advantage form
    r = ACC8 + FORMAT8
    a_reward, _ = temporal_advantages(r, BONUS8, GID8, mode="reward", scale_rewards="none")
    a_adv, _ = temporal_advantages(r, BONUS8, GID8, mode="advantage", scale_rewards="none")
    assert torch.allclose(a_reward, a_adv, atol=1e-6)
    assert a_reward[0].item() == pytest.approx(0.625 + 0.1875, rel=1e-6)


def test_temporal_advantages_validates_mode_and_shift_without_video():
    with pytest.raises(KeyError, match="known: reward, advantage"):
        temporal_advantages(ACC8, BONUS8, GID8, mode="both")
    assert temporal_advantage_shift(ACC8, ACC8 + 1, GID8, torch.tensor([], dtype=torch.long)).item() == 0.0


def test_length_bonus_group_rules():
    acc = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.05, 1.0])
    lengths = torch.tensor([320, 600, 400, 512, 400, 400])
    gid = torch.tensor([0, 0, 0, 1, 1, 2])
    # group 0: two correct, only the first is in [320, 512]; group 1: one correct (0.05 is not > 0.1)
    # -> nothing; group 2: a single correct -> nothing
    out = length_bonus(acc, lengths, gid, omega=0.2)
    assert out.dtype == torch.float32 and out.tolist() == pytest.approx([0.2, 0, 0, 0, 0, 0])
    # groups need not be contiguous: ids 7 and 3 interleaved, each with two correct in range
    gid = torch.tensor([7, 3, 7, 3])
    assert length_bonus(torch.ones(4), torch.full((4,), 400), gid).tolist() == pytest.approx([0.2] * 4)


def test_length_bonus_threshold_is_strict():
    # exactly CORRECT_THRESHOLD is not correct: group 0 then has one correct completion -> no bonus
    from videor1.rewards import CORRECT_THRESHOLD

    acc = torch.tensor([CORRECT_THRESHOLD, 1.0, 0.11, 1.0])
    out = length_bonus(acc, torch.full((4,), 400), torch.tensor([0, 0, 1, 1]))
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.2, 0.2])


def test_length_bonus_bounds_inclusive_and_omega():
    lengths = torch.tensor([319, 320, 512, 513])
    acc, gid = torch.ones(4), torch.full((4,), 7)
    assert length_bonus(acc, lengths, gid, omega=0.1).tolist() == pytest.approx([0.0, 0.1, 0.1, 0.0])
    assert length_bonus(acc, lengths, gid, min_len=0, max_len=1000).tolist() == pytest.approx([0.2] * 4)


def test_length_bonus_validates():
    with pytest.raises(ValueError, match="must be \\[N\\]"):
        length_bonus(torch.ones(1), torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="min_len"):
        length_bonus(torch.ones(1), torch.tensor([1]), torch.tensor([0]), min_len=10, max_len=5)
    empty = length_bonus(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,) and empty.dtype == torch.float32


def _ratios_case():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2]])
    ratio = torch.tensor([[1.5, 1.0, 0.5], [0.7, 1.1, 1.3]])
    logp = (old + ratio.log()).requires_grad_()
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type,kwargs,expected", [
    # per-token losses with eps 0.2 / eps_high 0.28: seq 0 (A=+1): -min(1.5, 1.28) = -1.28, -1; seq 1 (A=-2):
    # -min(-1.4, -1.6) = 1.6, -min(-2.2, -2.2) = 2.2, -min(-2.6, -2.56) = 2.6. Sum 4.12 over 5 tokens.
    ("grpo", {}, ((-1.28 - 1.0) / 2 + (1.6 + 2.2 + 2.6) / 3) / 2),
    ("bnpo", {}, 4.12 / 5),
    ("dr_grpo", {"max_completion_length": 4}, 4.12 / (2 * 4)),
    ("dapo", {}, 4.12 / 5),
    ("dapo", {"normaliser": 10.0}, 4.12 / 10),   # the trainer's: 20 tokens on 2 processes -> 20 / 2
    ("grpo", {"normaliser": 4.0}, ((-1.28 - 1.0) / 2 + (1.6 + 2.2 + 2.6) / 3) / 4),
])
def test_policy_loss_aggregations(loss_type, kwargs, expected):
    logp, old, adv, mask = _ratios_case()
    out = policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28, loss_type=loss_type, **kwargs)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # clipped branch active: seq 0 token 0 (1.5 > 1.28, A > 0) and seq 1 token 0 (0.7 < 0.8, A < 0)
    assert out.clip_fraction.item() == pytest.approx(2 / 5)
    assert out.kl.item() == 0.0


def test_unknown_loss_type_and_dr_grpo_needs_length():
    logp, old, adv, mask = _ratios_case()
    with pytest.raises(KeyError, match="known: bnpo, dapo, dr_grpo, grpo"):
        policy_loss(logp, old, adv, mask, loss_type="token_mean")
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo")
    assert LOSS_AGGREGATIONS.names() == ["bnpo", "dapo", "dr_grpo", "grpo"] and "grpo" in ADVANTAGES


def test_k3_kl_and_beta_term():
    logp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.tensor([[math.log(2), -math.log(2)]])
    # k3: 2 - ln2 - 1 = 0.306853 and 0.5 + ln2 - 1 = 0.193147; mean 0.25
    assert k3_kl(logp, ref).tolist()[0] == pytest.approx([2 - math.log(2) - 1, 0.5 + math.log(2) - 1])
    out = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), ref_logp=ref, beta=0.04)
    assert out.loss.item() == pytest.approx(0.04 * 0.25) and out.kl.item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), beta=0.04)


def test_on_policy_gradient_is_minus_advantage_over_length():
    # ratio == 1 (one update per rollout): d/dlogp of -(ratio * A) averaged over 2 tokens = -A / 2
    logp = torch.zeros(1, 2, requires_grad=True)
    policy_loss(logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2)).loss.backward()
    assert logp.grad.tolist() == [[-1.0, -1.0]]


def test_selective_log_softmax_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(selective_log_softmax(logits, ids), expected, atol=1e-6)
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(selective_log_softmax(logits, ids, 0.7), expected, atol=1e-6)


def test_loss_counts_and_an_empty_normaliser():
    _, _, _, mask = _ratios_case()   # 2 sequences, 5 tokens
    assert loss_count("grpo", mask) == 2.0 and loss_count("bnpo", mask) == loss_count("dapo", mask) == 5.0
    assert loss_count("dr_grpo", mask, 4) == 8.0
    with pytest.raises(ValueError, match="normaliser must be > 0"):
        aggregate("grpo", torch.ones(2, 3), mask, 0.0)


def test_informative_groups_keeps_groups_whose_rewards_differ():
    # groups 0..3: {1, 1} equal; {0, 1} differ; {2, 2} equal; {0.5, 0.5000001} differ (no tolerance)
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 0.5, 0.5000001], dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert informative_groups(rewards, ids).tolist() == [False, True, False, True]
    # ids need not be contiguous: order is ascending id (2 before 5), as torch.unique
    assert informative_groups(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([5, 2, 5, 2])).tolist() == [False, True]
    # a dropped group is one whose advantages are all 0, under every scaling
    for scale in ("group", "batch", "none"):
        adv = group_advantages(rewards.float(), ids, scale_rewards=scale).view(4, 2)
        assert adv[[0, 2]].abs().max().item() == 0.0


def test_dropping_zero_advantage_groups_rescales_the_grpo_loss_only():
    # beta 0: rows with A = 0 add 0 to the per-sequence losses; "grpo" averages over sequences, so the loss of
    # the informative rows alone is the full loss times N / N_kept (here 4 / 2), and so is its gradient
    logp, old, adv, mask = _ratios_case()
    logp4 = torch.cat([logp.detach(), logp.detach()]).requires_grad_()
    full = policy_loss(logp4, torch.cat([old, old]), torch.cat([adv, torch.zeros(2)]), torch.cat([mask, mask]))
    kept = policy_loss(logp4[:2], old, adv, mask)
    assert kept.loss.item() == pytest.approx(full.loss.item() * 2, rel=1e-6)
    full.loss.backward()
    assert logp4.grad[2:].abs().max().item() == 0.0
