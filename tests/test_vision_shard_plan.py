"""`videor1.model.vision_shard.plan_shards`: which temporal patches each rank of a group encodes (pure)."""

from __future__ import annotations

import pytest
import torch

from videor1.model.vision_shard import Piece, local_inputs, plan_shards, unit_ranks


def test_units_split_in_contiguous_runs_of_about_equal_weight():
    assert unit_ranks([1] * 5, 4) == [0, 1, 1, 2, 3]   # the midpoint of unit 2 lies on a boundary
    assert unit_ranks([1] * 8, 4) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert unit_ranks([10, 1, 1, 1], 2) == [0, 1, 1, 1]
    assert unit_ranks([7], 3) == [1]   # one unit: the share that holds its midpoint
    for weights in ([3, 1, 4, 1, 5, 9, 2, 6], [1] * 17, [100, 1, 1, 1, 1, 100]):
        for world in (1, 2, 3, 4):
            ranks = unit_ranks(weights, world)
            assert ranks == sorted(ranks) and max(ranks) < world
            loads = [sum(w for w, r in zip(weights, ranks) if r == k) for k in range(world)]
            assert max(loads) <= sum(weights) / world + max(weights)


def test_a_video_spreads_over_every_rank_and_images_stay_whole():
    plan = plan_shards([[7, 4, 6]], 4, 4)          # 7 temporal patches of 6 merged rows each
    assert [sum(p.t_stop - p.t_start for p in runs) for runs in plan.pieces] == [2, 2, 1, 2]
    assert plan.rows == (12, 12, 6, 12)
    mixed = plan_shards([[1, 8, 8], [3, 4, 4], [1, 2, 2]], 2, 4)
    assert mixed.pieces == ((Piece(0, 0, 1),), (Piece(1, 0, 3), Piece(2, 0, 1)))
    assert sum(mixed.rows) == (64 + 48 + 4) // 4
    assert plan_shards([[1, 4, 4]], 2, 4).rows == (4, 0)


def test_local_inputs_take_the_rows_of_the_runs():
    grid = [[2, 2, 2], [3, 2, 4]]
    pixels = torch.arange(8 + 24, dtype=torch.float64)[:, None]
    rows, local = local_inputs(pixels, grid, (Piece(0, 1, 2), Piece(1, 0, 2)))
    assert rows[:, 0].tolist() == [4, 5, 6, 7] + list(range(8, 24))
    assert local.tolist() == [[1, 2, 2], [2, 2, 4]]


@pytest.mark.parametrize("world", [2, 3])
def test_every_patch_is_encoded_once_in_order(world):
    grid = [[5, 4, 6], [1, 8, 8], [2, 2, 2]]
    plan = plan_shards(grid, world, 4)
    units = [(p.item, t) for runs in plan.pieces for p in runs for t in range(p.t_start, p.t_stop)]
    assert units == [(i, t) for i, (n, _, _) in enumerate(grid) for t in range(n)]
