"""The synthetic dataset: valid records, real decodable media that show what the answers say, determinism."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videor1.data.synth import render as R
from videor1.data.records import DATA_TYPES, PROBLEM_TYPES, load_records
from videor1.data.synth.build import allocate, make_dataset, resolve_mix

TEMPORAL_TASKS = {"direction", "first_shape", "colour_change"}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _task(record) -> str:
    return record.data_source.split("/", 1)[1]


def _centre(frame: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the pixels that differ clearly from the background."""
    diff = np.abs(frame.astype(int) - np.array(R.BACKGROUND)).sum(-1)
    ys, xs = np.nonzero(diff > 120)
    assert len(xs) > 20, "no shape found in the frame"
    return np.array([xs.mean(), ys.mean()])


def test_records_load_with_every_type(synth_dir):
    splits = {s: load_records(synth_dir / f"{s}.jsonl", synth_dir) for s in ("rl", "cot", "test")}
    assert [len(splits[s]) for s in ("rl", "cot", "test")] == [24, 24, 12]
    rl = splits["rl"]
    assert {r.problem_type for r in rl} == set(PROBLEM_TYPES)
    assert {r.data_type for r in rl} == set(DATA_TYPES)
    for split, records in splits.items():
        ids = [r.problem_id for r in records]
        assert len(set(ids)) == len(ids)
        for r in records:
            assert r.data_source.startswith("synth/") and _task(r) in resolve_mix(None)
            assert isinstance(r.temporal, bool)
            assert (r.process is not None) == (split == "cot")
            assert r.path.endswith(".mp4" if r.data_type == "video" else ".png")
            if r.problem_type == "multiple choice":
                assert len(r.options) == 4 and len({o[3:] for o in r.options}) == 4


def test_temporal_flags_follow_the_task(synth_dir):
    records = load_records(synth_dir / "rl.jsonl", synth_dir)
    assert any(r.temporal for r in records) and not all(r.temporal for r in records)
    for r in records:
        assert r.temporal == (_task(r) in TEMPORAL_TASKS), r.problem_id
        if r.temporal:
            assert r.data_type == "video"


def test_cot_reasoning_names_the_evidence(synth_dir):
    records = load_records(synth_dir / "cot.jsonl", synth_dir)
    for r in records:
        body = r.process.removeprefix("<think>").removesuffix("</think>")
        assert 0 < len(body.split()) <= 25, r.process      # one short sentence
        facts = r.extra["synth_facts"]
        if _task(r) == "direction":
            assert body.endswith(f"moves {facts['direction']}.")
        if _task(r) in ("colour", "image_colour"):
            assert facts["colour"] in body
            letter = r.answer
            assert dict(o.split(". ", 1) for o in r.options)[letter] == facts["colour"]


def test_direction_clips_move_the_stated_way(synth_dir):
    from videor1.data.media import VideoSpec, load_video

    records = [r for r in load_records(synth_dir / "test.jsonl", synth_dir)
               + load_records(synth_dir / "rl.jsonl", synth_dir) if _task(r) == "direction"]
    assert len(records) >= 5
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for r in records:
        clip = load_video(synth_dir / r.path, VideoSpec(fps=2.0, min_frames=4, max_frames=16))
        assert clip.frames.shape[0] == 4 and clip.frames.shape[1:3] == (56, 56)
        move = _centre(clip.frames[-1]) - _centre(clip.frames[0])
        way = dict(o.split(". ", 1) for o in r.options)[r.answer]
        assert np.sign(np.round(move / 8)).tolist() == list(expected[way]), (r.problem_id, way, move)
        # the colour named in the question is the colour drawn (decoded within a few levels)
        colour = r.extra["synth_facts"]["colour"]
        x, y = _centre(clip.frames[0]).round().astype(int)
        assert np.abs(clip.frames[0, y, x].astype(int) - R.PALETTE[colour]).max() < 24


def test_order_dependent_clips_differ_between_halves(synth_dir):
    from videor1.data.media import load_video

    records = [r for r in load_records(synth_dir / "rl.jsonl", synth_dir)
               if _task(r) in ("colour_change", "first_shape")]
    assert records
    for r in records:
        frames = load_video(synth_dir / r.path).frames.astype(int)
        assert np.abs(frames[0] - frames[-1]).max() > 100       # the two halves show different things
        assert np.abs(frames[0] - frames[1]).max() < 40         # within a half nothing changes


def test_held_out_temporal_tasks_show_what_they_ask(tmp_path):
    """last_shape answers the shape shown late; direction_short moves the stated way by 16-24 pixels."""
    from videor1.data.media import VideoSpec, load_video

    paths = make_dataset(tmp_path / "h", n_train=24, n_test=0, n_cot=0, seed=2, shuffle_options=False,
                         tasks={"last_shape": 1.0, "direction_short": 1.0})
    records = load_records(paths["rl"], paths["media_root"])
    assert {_task(r) for r in records} == {"last_shape", "direction_short"} and all(r.temporal for r in records)
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for r in records:
        clip = load_video(paths["media_root"] / r.path, VideoSpec(fps=2.0, min_frames=4, max_frames=16))
        said = dict(o.split(". ", 1) for o in r.options)[r.answer]
        if _task(r) == "last_shape":
            assert "last" in r.problem
            x, y = _centre(clip.frames[-1]).round().astype(int)
            assert np.abs(clip.frames[-1, y, x].astype(int) - R.PALETTE[said]).max() < 24
            x, y = _centre(clip.frames[0]).round().astype(int)
            assert np.abs(clip.frames[0, y, x].astype(int) - R.PALETTE[said]).max() > 60   # not the first
        else:
            move = _centre(clip.frames[-1]) - _centre(clip.frames[0])
            assert np.sign(np.round(move / 8)).tolist() == list(expected[said]), (r.problem_id, said, move)
            assert 12 <= np.abs(move).max() <= 26 and r.extra["synth_facts"]["distance"] in range(16, 25)


def test_direction_distractor_moves_the_square_and_keeps_the_other_shape_still(tmp_path):
    from videor1.data.media import VideoSpec, load_video

    paths = make_dataset(tmp_path / "dd", n_train=16, n_test=0, n_cot=0, seed=5, shuffle_options=False,
                         tasks={"direction_distractor": 1.0})
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for r in load_records(paths["rl"], paths["media_root"]):
        assert r.temporal and r.problem.startswith("In which direction does the ")
        frames = load_video(paths["media_root"] / r.path, VideoSpec(fps=2.0, min_frames=4, max_frames=16)).frames
        said = dict(o.split(". ", 1) for o in r.options)[r.answer]
        square = r.problem.split("the ", 1)[1].split(" square")[0]
        other = r.extra["synth_facts"]["distractor"].split()[0]
        assert other != square
        centres = []
        for frame in (frames[0], frames[-1]):
            mask = np.abs(frame.astype(int) - R.PALETTE[square]).max(-1) < 24
            ys, xs = np.nonzero(mask)
            centres.append(np.array([xs.mean(), ys.mean()]))
            still = np.abs(frame.astype(int) - R.PALETTE[other]).max(-1) < 24
            assert still.sum() > 20                                # the distractor is in every frame
        move = centres[1] - centres[0]
        assert np.sign(np.round(move / 8)).tolist() == list(expected[said]), (r.problem_id, said, move)
        first = np.abs(frames[0].astype(int) - R.PALETTE[other]).max(-1) < 24
        last = np.abs(frames[-1].astype(int) - R.PALETTE[other]).max(-1) < 24
        assert (first == last).mean() > 0.99                       # ... and it does not move


def test_rl_set_can_have_its_own_mix(tmp_path):
    paths = make_dataset(tmp_path / "m", n_train=12, n_test=8, n_cot=6, seed=1, tasks={"colour": 1.0, "count": 1.0},
                         cot_tasks={"colour": 1.0}, rl_tasks={"direction": 1.0})
    tasks = {split: {_task(r) for r in load_records(paths[split], paths["media_root"])}
             for split in ("rl", "cot", "test")}
    assert tasks == {"rl": {"direction"}, "cot": {"colour"}, "test": {"colour", "count"}}


def test_validation_set_is_optional_and_drawn_apart(tmp_path):
    """n_val adds val.jsonl of its own mix (default: the CoT mix), with clips unlike the CoT set's."""
    none = make_dataset(tmp_path / "n", n_train=4, n_test=4, n_cot=4, seed=1, tasks={"direction": 1.0})
    assert "val" not in none and not (tmp_path / "n" / "val.jsonl").exists()
    paths = make_dataset(tmp_path / "v", n_train=4, n_test=4, n_cot=8, seed=1, tasks={"colour": 1.0},
                         cot_tasks={"direction": 1.0}, n_val=8)
    val, cot = (load_records(paths[s], paths["media_root"]) for s in ("val", "cot"))
    assert len(val) == 8 and {_task(r) for r in val} == {"direction"}
    assert not any(r.process for r in val)    # scored like test questions, no reasoning attached
    clips = {(paths["media_root"] / r.path).read_bytes() for r in cot}
    assert not any((paths["media_root"] / r.path).read_bytes() in clips for r in val)
    own = make_dataset(tmp_path / "o", n_train=4, n_test=4, n_cot=4, seed=1, tasks={"colour": 1.0}, n_val=3,
                       val_tasks={"count": 1.0})
    assert {_task(r) for r in load_records(own["val"], own["media_root"])} == {"count"}


def test_make_dataset_is_deterministic(tmp_path):
    a = make_dataset(tmp_path / "a", n_train=12, n_test=6, seed=3)
    b = make_dataset(tmp_path / "b", n_train=12, n_test=6, seed=3)
    c = make_dataset(tmp_path / "c", n_train=12, n_test=6, seed=4)
    assert _digest(a["media_root"]) == _digest(b["media_root"])
    assert a["rl"].read_bytes() != c["rl"].read_bytes()


def test_answer_letters_are_balanced(tmp_path):
    paths = make_dataset(tmp_path / "d", n_train=120, n_test=0, n_cot=0, seed=1,
                         tasks={"direction": 1.0, "image_colour": 1.0})
    records = load_records(paths["rl"], paths["media_root"])
    for task in ("direction", "image_colour"):
        letters = collections.Counter(r.answer for r in records if _task(r) == task)
        assert sorted(letters) == ["A", "B", "C", "D"]
        assert max(letters.values()) - min(letters.values()) <= 1, letters
    ways = collections.Counter(r.extra["synth_facts"]["direction"] for r in records if _task(r) == "direction")
    assert len(ways) == 4 and min(ways.values()) >= 5


def test_fixed_option_order(tmp_path):
    paths = make_dataset(tmp_path / "g", n_train=40, n_test=0, n_cot=0, seed=5, shuffle_options=False,
                         tasks={"direction": 1.0, "colour": 1.0, "colour_change": 1.0})
    records = load_records(paths["rl"], paths["media_root"])
    letter_of: dict[tuple[str, str], str] = {}
    for r in records:
        facts = r.extra["synth_facts"]
        truth = {"direction": facts.get("direction"), "colour": facts.get("colour"),
                 "colour_change": facts.get("end")}[_task(r)]
        assert dict(o.split(". ", 1) for o in r.options)[r.answer] == truth
        expected = ["A. left", "B. right", "C. up", "D. down"] if _task(r) == "direction" else \
            [f"{chr(65 + i)}. {c}" for i, c in enumerate(R.PALETTE)]
        assert list(r.options) == expected
        assert letter_of.setdefault((_task(r), truth), r.answer) == r.answer   # one letter per answer


def test_task_selection_and_cot_mix(tmp_path):
    paths = make_dataset(tmp_path / "e", n_train=8, n_test=4, seed=0, tasks=["colour", "count"],
                         cot_tasks={"colour": 1.0})
    rl = load_records(paths["rl"], paths["media_root"])
    cot = load_records(paths["cot"], paths["media_root"])
    assert collections.Counter(_task(r) for r in rl) == {"colour": 4, "count": 4}
    assert {_task(r) for r in cot} == {"colour"}
    with pytest.raises(ValueError, match="unknown synthetic task.*known"):
        make_dataset(tmp_path / "f", n_train=2, n_test=0, tasks=["no_such_task"])
    assert allocate(10, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 5, "b": 3, "c": 2}
    assert sum(allocate(7, resolve_mix(None)).values()) == 7


def test_check_dataset_finds_no_bad_record(synth_dir):
    from videor1.data.check import check_dataset

    lines: list[str] = []
    for split in ("rl", "cot", "test"):
        assert check_dataset(synth_dir / f"{split}.jsonl", synth_dir, decode=True, echo=lines.append) == 0


def test_cli_synth(tmp_path):
    from videor1.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--n-train", "6", "--n-test", "3",
                                      "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "rl:" in result.output and "test:" in result.output
    assert len(load_records(out / "rl.jsonl", out)) == 6
    assert len(load_records(out / "test.jsonl", out)) == 3
    assert len(list((out / "media").rglob("*.mp4"))) + len(list((out / "media").rglob("*.png"))) == 15
