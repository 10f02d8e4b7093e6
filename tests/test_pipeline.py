"""videor1.data.pipeline: prefetching in worker processes gives the same items, in the same order, as none;
bad items are still reported in place; the frame cache returns the decoded clip and counts its hits."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from videor1.data.media import ImageSpec, MediaError, VideoSpec, load_video
from videor1.data.pipeline import CacheStats, FrameCache, cached_load_video, prefetch, take
from videor1.data.records import Record, read_records
from videor1.evaluate.runner import evaluate_records
from videor1.rl.step import PromptSource
from videor1.sft.data import DataPlan, SFTDataset, StepBatchSampler, make_collate
from videor1.tools.annotate import decode_batch

VIDEO = VideoSpec(fps=2.0, min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)
IMAGE = ImageSpec(min_pixels=56 * 56, max_pixels=56 * 56)


def _square_or_reason(x: int) -> int | str:
    return f"bad {x}" if x % 3 == 0 else x * x


def test_prefetch_keeps_order_and_failures_in_place():
    items = list(range(11))
    plain = list(prefetch(_square_or_reason, items, num_workers=0))
    assert plain == [_square_or_reason(x) for x in items]
    for workers, ahead in ((1, 1), (2, 2), (2, 7)):
        got = prefetch(_square_or_reason, items, num_workers=workers, ahead=ahead)
        assert take(got, 4) + list(got) == plain
        assert got.wait_s >= 0.0
    assert list(prefetch(_square_or_reason, [], num_workers=2)) == []


def _with_bad_video(records: list[Record]) -> list[Record]:
    video = next(r for r in records if r.data_type == "video")
    bad = dataclasses.replace(video, problem_id="bad-video", path="media/no_such_file.mp4")
    return records[:3] + [bad] + records[3:]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_eval_same_predictions_with_0_and_2_workers(model, processor, synth_dir, tmp_path):
    records, _ = read_records(synth_dir / "test.jsonl", synth_dir)
    records = _with_bad_video(records[:7])
    outs = []
    for workers in (0, 2):
        out, timing = tmp_path / f"w{workers}", {}
        evaluate_records(model, processor, records, synth_dir, video=VIDEO, image=IMAGE, batch_size=3,
                         max_new_tokens=8, shuffle_frames=True, out=out, num_workers=workers, timing=timing)
        assert timing["data_wait_s"] >= 0.0
        outs.append(_rows(out))
    assert outs[0] == outs[1]
    assert len(outs[0]) == 2 * len(records)
    errors = [r for r in outs[0] if r["error"]]
    assert {r["id"] for r in errors} == {"bad-video"} and "no such file" in errors[0]["error"]


def test_rl_prompts_same_with_0_and_2_workers(synth_dir, processor):
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    records = _with_bad_video(records)
    source = PromptSource(records, processor, synth_dir, VIDEO, IMAGE, 4096, seed=3, pps=3, rank=0, world=1,
                          first_step=1, position=0)
    steps = range(1, 9)
    runs = [list(prefetch(source, steps, num_workers=w)) for w in (0, 2)]
    skipped = [rid for prompts, _ in runs[0] for rid, _ in prompts.skipped]
    assert "bad-video" in skipped
    for (a, _), (b, _) in zip(*runs):
        assert a.positions == b.positions and a.skipped == b.skipped
        assert [s.record.problem_id for s in a.samples] == [s.record.problem_id for s in b.samples]
        assert a.batch.keys() == b.batch.keys()
        for key in a.batch:
            torch.testing.assert_close(a.batch[key], b.batch[key], rtol=0, atol=0)


def test_sft_micro_batches_same_with_0_and_2_workers(synth_dir, processor):
    from videor1.data.pipeline import make_loader

    records, _ = read_records(synth_dir / "cot.jsonl", synth_dir)
    dataset = SFTDataset(_with_bad_video(records), str(synth_dir), VIDEO, IMAGE, None)
    plan = DataPlan(n_records=len(dataset), seed=0, micro_batch=2, accumulation=2)
    runs = []
    for workers in (0, 2):
        loader = make_loader(dataset, num_workers=workers, batch_sampler=StepBatchSampler(plan, 0, 3),
                             collate_fn=make_collate(processor, 4096))
        runs.append(list(loader))
    for a, b in zip(*runs):
        assert a.n_samples == b.n_samples and a.skipped == b.skipped
        assert (a.inputs is None) == (b.inputs is None)
        for key in a.inputs or {}:
            torch.testing.assert_close(a.inputs[key], b.inputs[key], rtol=0, atol=0)


def test_annotate_decode_batch_same_with_workers(synth_dir):
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    records = _with_bad_video(records[:6])
    batches = [records[i:i + 3] for i in range(0, len(records), 3)]
    fn = functools.partial(decode_batch, media_root=synth_dir, video=VIDEO, image=IMAGE)
    a, b = (list(prefetch(fn, batches, num_workers=w)) for w in (0, 2))
    flat_a, flat_b = [x for batch in a for x in batch], [x for batch in b for x in batch]
    reasons = [x for x in flat_a if isinstance(x, str)]
    assert len(reasons) == 1 and "no such file" in reasons[0]
    assert [x if isinstance(x, str) else x.record.problem_id for x in flat_a] == \
        [x if isinstance(x, str) else x.record.problem_id for x in flat_b]


def test_frame_cache_hits_and_key(bikes_mp4, tmp_path):
    video = tmp_path / "bikes.mp4"
    shutil.copy(bikes_mp4, video)
    cache = FrameCache(tmp_path / "cache")
    spec = VideoSpec(max_frames=6, max_pixels=32 * 28 * 28)
    first, s1 = cached_load_video(cache, video, spec)
    again, s2 = cached_load_video(cache, video, spec)
    assert (s1.hits, s1.lookups, s2.hits, s2.lookups) == (0, 1, 1, 1)
    np.testing.assert_array_equal(first.frames, again.frames)
    assert dataclasses.asdict(dataclasses.replace(again, frames=None)) == \
        dataclasses.asdict(dataclasses.replace(load_video(video, spec), frames=None))
    # another spec, or the file changed (mtime), is another key
    _, s3 = cached_load_video(cache, video, dataclasses.replace(spec, max_frames=4))
    os.utime(video, ns=(1, 1))
    _, s4 = cached_load_video(cache, video, spec)
    assert (s3.hits, s4.hits) == (0, 0)
    total = CacheStats()
    for s in (s1, s2, s3, s4):
        total.add(s)
    assert total.hit_rate == pytest.approx(1 / 4)
    with pytest.raises(MediaError):
        cached_load_video(cache, tmp_path / "missing.mp4", spec)
    assert cached_load_video(None, video, spec)[1].lookups == 0


def test_rl_frame_cache_second_epoch_hits(synth_dir, processor, tmp_path):
    records, _ = read_records(synth_dir / "rl.jsonl", synth_dir)
    n = len(records)
    source = PromptSource(records, processor, synth_dir, VIDEO, IMAGE, 4096, seed=0, pps=n, rank=0, world=1,
                          first_step=1, position=0, cache_dir=str(tmp_path / "frames"))
    plain = dataclasses.replace(source, cache_dir=None)
    (p1, s1), (p2, s2) = list(prefetch(source, [1, 2], num_workers=0))  # in turn: hits are deterministic
    videos = [r.path for r in records if r.data_type == "video"]
    # epoch 1 misses once per distinct file (records may share a video), epoch 2 hits every time
    assert (s1.hits, s1.lookups, s2.hits, s2.lookups) == (len(videos) - len(set(videos)), len(videos),
                                                          len(videos), len(videos))
    (_, s3), = list(prefetch(source, [3], num_workers=2))  # workers read the same cache
    assert s3.hits == s3.lookups == len(videos)
    ref, _ = plain(2)
    for key in ref.batch:
        torch.testing.assert_close(p2.batch[key], ref.batch[key], rtol=0, atol=0)
