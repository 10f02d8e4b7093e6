"""`videor1.model.vision_shard`: the vision tower sharded over 2 processes (gloo, float64) by temporal patches gives
the plain call's outputs and, summed over the processes, its parameter gradients, for Qwen2.5-VL (window attention)
and Qwen3-VL (deepstack features, interpolated position table): one video of 3 temporal patches (not divisible by
2), one temporal patch and one image (rank 1 encodes nothing), several images, a video + image + video batch, and
the whole model fed the sharded features through `mm_encoder_outputs`. One launch (`vision_shard_probe.py`) runs
every case; both processes make the same collectives and vision-tower calls. Then under DeepSpeed ZeRO-3
(`vision_shard_zero3_probe.py`, one launch of 1 process and one of 2): features and three SGD steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines_common import launch
from videor1.model.tiny import build_tiny

PROBE = Path(__file__).with_name("vision_shard_probe.py")
EXACT = 1e-12   # float64; relative to the largest entry (measured: 0 to 1.5e-15)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("vision_shard")
    dirs = [build_tiny(tmp / family, family=family, seed=0) for family in ("qwen2_5_vl", "qwen3_vl")]
    out = tmp / "probe.json"
    launch("multi_gpu", str(out), [str(d) for d in dirs], tmp, script=PROBE)
    return json.loads(out.read_text())


def test_embeddings_and_gradients_equal_the_plain_call(probe):
    results = probe["results"]
    assert {k.split(":")[0] for k in results} == {"qwen2_5_vl", "qwen3_vl"}
    for case, got in results.items():
        if case.endswith(":model"):
            continue
        assert got["same_class"] == 1.0, case
        for key in ("embeds_own_whole", "embeds_sum_chunk", "grads_own_whole", "grads_sum_chunk"):
            assert got[key] <= EXACT, f"{case} {key}: relative difference {got[key]:.3g}"
    assert results["qwen2_5_vl:image"]["rows"] == [24, 0] and results["qwen3_vl:video_t1"]["rows"] == [12, 0]
    assert results["qwen2_5_vl:video_t3"]["rows"] == [60, 30] and results["qwen3_vl:images"]["rows"] == [24, 13]


def test_wrong_backward_for_the_downstream_is_detected(probe):
    """Own-slice backward while each rank back-propagates only its chunk of rows loses the other ranks' share
    (here where the vision shares and the row chunks differ); a summed backward while every rank
    back-propagates the whole loss doubles the gradient (relative difference 1): the check above sees both."""
    for family in ("qwen2_5_vl", "qwen3_vl"):
        assert probe["results"][f"{family}:video_t3"]["grads_own_chunk"] > 1e-3
        for case in ("video_t3", "images", "mixed"):
            assert abs(probe["results"][f"{family}:{case}"]["grads_sum_whole"] - 1.0) < 1e-12


def test_whole_model_with_sharded_features(probe):
    for family in ("qwen2_5_vl", "qwen3_vl"):
        got = probe["results"][f"{family}:model"]
        assert got["logits"] <= EXACT and got["grads"] <= EXACT, f"{family}: {got}"


def test_every_rank_makes_the_same_collectives_and_tower_calls(probe):
    logs = probe["logs"]
    assert len(logs) == 2 and logs[0] == logs[1]
    assert logs[0].count("visual") > 10 and any(x.startswith("reduce_scatter") for x in logs[0])


ZERO3_PROBE = Path(__file__).with_name("vision_shard_zero3_probe.py")
ZERO3_TOLERANCE = 1e-5   # fp32 features, relative to the largest entry (measured: 0 to 4e-7)


def test_under_zero3_the_sharded_tower_trains_as_the_plain_one(tiny_model_dir, tmp_path):
    """ZeRO-3 partitions the tower and gathers its parameters at every module call, forward and backward: the
    sharded tower over 2 processes (one batch where rank 1 encodes nothing) gives the features and, after three
    SGD steps, the vision weights of the plain tower in one process."""
    import torch

    runs = {}
    for mode, processes in (("plain", 1), ("sharded", 2)):
        out = tmp_path / f"{mode}.pt"
        launch("zero3", str(out), [str(tiny_model_dir), mode], tmp_path, num_processes=processes, script=ZERO3_PROBE)
        runs[mode] = torch.load(out)
    plain, sharded = runs["plain"], runs["sharded"]
    for case in ("video_t3", "image", "mixed"):
        for a, b in zip(sharded[case], plain[case], strict=True):
            assert float((a - b).abs().max()) <= ZERO3_TOLERANCE * float(b.abs().max()), case
    weights, start = plain["weights"], plain["initial"]
    moved = max(float((weights[k] - start[k]).abs().max()) for k in weights)
    diff = max(float((sharded["weights"][k] - weights[k]).abs().max()) for k in weights)
    assert len(weights) > 10 and moved > 1e-3
    # a wrong backward (summed, or the own slice missed) would be off by a whole update of some weights
    assert diff <= 1e-3 * moved, f"max |w_sharded - w_plain| {diff:.3g}, largest update {moved:.3g}"
