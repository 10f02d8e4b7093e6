"""videor1.model.positions: the one M-RoPE (Qwen's original rule), hand-computed, against transformers' own
`get_rope_index`, and installed into every forward and `generate` of the tiny models of all three families."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from videor1.data.media import Clip, smart_resize
from videor1.model.inputs import Sample, encode
from videor1.model.load import load_model, load_processor
from videor1.model.positions import (IMAGE, TEXT, VIDEO, MropeRule, install_mrope, mrope_installed, rope_index,
                                     row_positions, rule_of)

QWEN25 = MropeRule(spatial_merge=2, tokens_per_second=2.0)
QWEN2 = MropeRule(spatial_merge=2)
QWEN3 = MropeRule(spatial_merge=2, frame_runs=True)


def _types(*runs: tuple[int, int]) -> list[int]:
    return [kind for kind, n in runs for _ in range(n)]


# ------------------------------------------------------------------------------------ hand-computed rows
def test_video_then_text_continues_after_the_videos_temporal_reach():
    # 2 text tokens, a video of grid (t 3, h 4, w 4) -> 3 x 2 x 2 merged tokens, 1 s per grid step at 2 tok/s
    types = _types((TEXT, 2), (VIDEO, 12), (TEXT, 3))
    pos = row_positions(types, video_grids=[(3, 4, 4)], seconds=[1.0], rule=QWEN25)
    t_axis = [2] * 4 + [4] * 4 + [6] * 4          # start 2 + floor(i * 2)
    h_axis = [2, 2, 3, 3] * 3
    w_axis = [2, 3, 2, 3] * 3
    assert pos[:, :2].tolist() == [[0, 1]] * 3
    assert pos[:, 2:14].tolist() == [t_axis, h_axis, w_axis]
    assert pos[:, 14:].tolist() == [[7, 8, 9]] * 3    # max(6, 3, 3) + 1; transformers 5.x starts at 2 + 2 = 4


def test_image_then_text():
    types = _types((TEXT, 1), (IMAGE, 6), (TEXT, 2))  # grid (1, 4, 6) -> 2 x 3
    pos = row_positions(types, image_grids=[(1, 4, 6)], rule=QWEN25)
    assert pos[:, 1:7].tolist() == [[1] * 6, [1, 1, 1, 2, 2, 2], [1, 2, 3, 1, 2, 3]]
    assert pos[:, 7:].tolist() == [[4, 5]] * 3        # max(1, 2, 3) + 1


def test_two_videos_each_start_after_everything_before():
    # video 1: grid (2, 4, 4) -> 2 x 2 x 2 tokens, 2 s a step; video 2: (2, 2, 4) -> 2 x 1 x 2, 0.5 s a step
    types = _types((VIDEO, 8), (TEXT, 1), (VIDEO, 4), (TEXT, 1))
    pos = row_positions(types, video_grids=[(2, 4, 4), (2, 2, 4)], seconds=[2.0, 0.5], rule=QWEN25)
    assert pos[0, :8].tolist() == [0] * 4 + [4] * 4   # factor 2 s x 2 tok/s = 4
    assert pos[:, 8].tolist() == [5, 5, 5]            # max(4, 1, 1) + 1
    assert pos[:, 9:13].tolist() == [[6, 6, 7, 7], [6, 6, 6, 6], [6, 7, 6, 7]]  # factor 0.5 x 2 = 1
    assert pos[:, 13].tolist() == [8, 8, 8]


def test_fractional_seconds_truncate_as_vllm_does():
    # 2 / 2.4 fps seconds per grid step, stored as float32 by the processor: factor 1.6666666269... in float64
    spg = float(torch.tensor(2 / 2.4, dtype=torch.float32))
    pos = row_positions(_types((VIDEO, 8)), video_grids=[(8, 2, 2)], seconds=[spg], rule=QWEN25)
    # exact arithmetic would give 0, 1, 3, 5, 6, 8, 10, 11; the float32 seconds put steps 3 and 6 one below
    assert pos[0].tolist() == [0, 1, 3, 4, 6, 8, 9, 11]


def test_qwen2_counts_grid_steps_and_qwen3_makes_one_run_per_frame():
    pos2 = row_positions(_types((VIDEO, 3), (TEXT, 1)), video_grids=[(3, 2, 2)], rule=QWEN2)
    assert pos2[:, :3].tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]
    assert pos2[:, 3].tolist() == [3, 3, 3]           # transformers 5.x: 0 + max(1, 1) = 1
    # Qwen3-VL: <t> text, frame 1 (1 token), <t> text, frame 2 (1 token), then text
    types = _types((TEXT, 2), (VIDEO, 1), (TEXT, 2), (VIDEO, 1), (TEXT, 1))
    pos3 = row_positions(types, video_grids=[(2, 2, 2)], rule=QWEN3)
    assert pos3[0].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_mismatched_grids_are_refused():
    with pytest.raises(ValueError, match="does not match"):
        row_positions(_types((VIDEO, 5)), video_grids=[(2, 4, 4)], rule=QWEN25)
    with pytest.raises(ValueError, match="no tokens"):
        row_positions(_types((TEXT, 3)), image_grids=[(1, 4, 4)], rule=QWEN25)


@pytest.mark.parametrize("frames", [16, 32, 64])
@pytest.mark.parametrize("source", [(720, 1280), (480, 640)])   # 16:9 and 4:3
@pytest.mark.parametrize("budget", [128, 256])                  # x 28 x 28 pixels a frame (train / eval)
def test_real_clip_geometries(frames, source, budget):
    """Where the text after a video starts at real sizes: ours (max + 1) and transformers 5.x's rule
    (start + max(h, w) / merge), at 2 fps sampling (1 s per grid step)."""
    h_px, w_px = smart_resize(*source, min_pixels=4 * 28 * 28, max_pixels=budget * 28 * 28)
    grid = (frames // 2, h_px // 14, w_px // 14)
    n_video = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    pos = row_positions(_types((TEXT, 5), (VIDEO, n_video), (TEXT, 4)), video_grids=[grid], seconds=[1.0],
                        rule=QWEN25)
    temporal_reach = (grid[0] - 1) * 2
    spatial_reach = max(grid[1], grid[2]) // 2 - 1
    assert pos[0, 5 + n_video] == 5 + max(temporal_reach, spatial_reach) + 1
    transformers_start = 5 + max(grid[1], grid[2]) // 2
    differs = temporal_reach > spatial_reach
    assert (pos[0, 5 + n_video] != transformers_start) == differs
    # at the training budget 16 frames of 16:9 agree and of 4:3 differ; 32 and 64 frames differ at both
    if frames == 16 and budget == 128:
        assert differs == (source == (480, 640))
    if frames >= 32:
        assert differs


# ------------------------------------------------------------------------------------ on real inputs
def _clip(n: int, side: int, fps: float = 2.0, seed: int = 0) -> Clip:
    frames = np.random.default_rng(seed).integers(0, 255, (n, side, side, 3), dtype=np.uint8)
    return Clip(frames=frames, sample_fps=fps, timestamps=[i / fps for i in range(n)], indices=list(range(n)),
                total_frames=n, native_fps=fps, path="synthetic")


def _samples(n_frames: int, side: int, fps: float = 2.0) -> list[Sample]:
    video = {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which way does it move?"}]}
    image = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}
    img = np.random.default_rng(1).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    return [Sample(None, _clip(n_frames, side, fps), [video]), Sample(None, img, [image]),
            Sample(None, _clip(n_frames, side, fps, seed=2), [video])]


@pytest.fixture(scope="module")
def families(family_model_dirs):
    return {name: (load_model(d, device="cpu").eval(), load_processor(d)) for name, d in family_model_dirs.items()}


def _stock(model):
    """The model's backbone with transformers' own get_rope_index (a fresh deep copy, not installed)."""
    backbone = model.model
    fresh = copy.copy(backbone)
    fresh.__dict__ = {k: v for k, v in backbone.__dict__.items() if k not in ("get_rope_index", "_videor1_mrope")}
    return fresh


def _index(fn, batch):
    return fn(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
              image_grid_thw=batch.get("image_grid_thw"), video_grid_thw=batch.get("video_grid_thw"),
              second_per_grid_ts=batch.get("second_per_grid_ts"), attention_mask=batch["attention_mask"])


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_against_transformers_rule(families, name):
    """Images and spatially wide clips: the same positions as transformers; clips whose temporal reach
    exceeds their spatial one: the same except the text after the video (Qwen3-VL: always the same)."""
    model, processor = families[name]
    stock = _stock(model)
    for n_frames, side in ((4, 112), (8, 56)):
        batch = encode(processor, _samples(n_frames, side))
        ours, deltas = _index(model.model.get_rope_index, batch)
        theirs, their_deltas = _index(stock.get_rope_index, batch)
        mask = batch["attention_mask"].bool()
        image_row = 1
        assert torch.equal(ours[:, image_row][:, mask[image_row]], theirs[:, image_row][:, mask[image_row]])
        video_rows_equal = all(torch.equal(ours[:, r][:, mask[r]], theirs[:, r][:, mask[r]]) for r in (0, 2))
        if name == "qwen3_vl" or (n_frames, side) == (4, 112):
            assert video_rows_equal and torch.equal(deltas, their_deltas)
        else:   # 8 frames of 56 px: 4 (Qwen2.5-VL: 4 x 2 tok) temporal steps against 2 x 2 merged patches
            assert not video_rows_equal
            vision = batch["mm_token_type_ids"][0].bool()[mask[0]]
            assert torch.equal(ours[:, 0][:, mask[0]][:, vision], theirs[:, 0][:, mask[0]][:, vision])
            assert (deltas[[0, 2]] > their_deltas[[0, 2]]).all()


@pytest.mark.parametrize("name", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def test_forward_and_generate_use_the_installed_positions(families, name):
    model, processor = families[name]
    assert mrope_installed(model)
    batch = encode(processor, _samples(8, 56))
    explicit, _ = _index(model.model.get_rope_index, batch)
    with torch.no_grad():
        auto = model(**batch, use_cache=False).logits
        given = model(**batch, position_ids=explicit, use_cache=False).logits
    mask = batch["attention_mask"].bool()
    assert torch.allclose(auto[mask], given[mask], atol=1e-5)
    # greedy generate == a greedy loop of full forwards under our positions (no cache): decoding steps too
    gen = model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5,
                         pad_token_id=processor.tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:]
    ids, att, mm = batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"]
    rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    for _ in range(5):
        pos, _ = rope_index(rule_of(model.model.config), ids, mm, batch.get("image_grid_thw"),
                            batch.get("video_grid_thw"), batch.get("second_per_grid_ts"), att)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=att, mm_token_type_ids=mm, position_ids=pos,
                           use_cache=False, **rest).logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        ids, att = torch.cat([ids, nxt], 1), torch.cat([att, torch.ones_like(nxt)], 1)
        mm = torch.cat([mm, torch.zeros_like(nxt, dtype=mm.dtype)], 1)
    assert torch.equal(gen, ids[:, batch["input_ids"].shape[1]:])


def test_install_is_idempotent_and_survives_lora(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_model_dir, device="cpu")
    bound = model.model.get_rope_index
    install_mrope(model)
    assert model.model.get_rope_index is bound
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert mrope_installed(wrapped)
    with pytest.raises(ValueError, match="get_rope_index"):
        install_mrope(torch.nn.Linear(2, 2))
