"""Resuming eval and annotate folders written by older versions, before `video.seek`, the frame `factor` and
the weight fingerprint were recorded: each missing key takes what the old code did, with a note; a real
difference is still refused; the resumed folder ends with complete new-shape settings and one consistent run.

The old shapes are made from a real run on the tiny model by removing exactly the keys the older versions
did not write (git history: `videor1.legacy`), and, for eval, re-deriving the settings id the way they did."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from videor1.data.media import ImageSpec, VideoSpec
from videor1.evaluate import runner
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.resume import RESULT_KEYS, check_resumable
from videor1.evaluate.runner import read_predictions, rescore, run_eval
from videor1.legacy import OldDefault, fill_missing, media_defaults, notes
from videor1.model.load import frame_factor_of
from videor1.tools.annotate import AnnotateError, annotate, rejects_path, settings_path

VIDEO = dict(fps=2.0, max_frames=4, max_pixels=8 * 28 * 28)
FAST = dict(image=ImageSpec(max_pixels=8 * 28 * 28), max_new_tokens=6, decoding="greedy", seed=0, engine="hf",
            batch_size=2, limit=None, shuffle_frames=False)
# meta.json of eval runs before fc3089a: no fingerprint, input limits, judge, seek or factors; its settings id
# hashed these keys (RESULT_KEYS of 3e5498b .. 167abf5).
BEFORE_FC3089A = (("model_fingerprint", "limits", "judge", "video.seek", "video.factor", "image.factor"),
                  ("model", "bench", "data", "video", "image", "decoding", "max_new_tokens", "seed", "prompt"))
# fc3089a .. c44e07d: seek, fingerprint and limits recorded; no judge (c44e07d) and no factors (dc5ad40).
FC3089A_TO_DC5AD40 = (("judge", "video.factor", "image.factor"), RESULT_KEYS)


def drop(settings: dict, keys) -> dict:
    """`settings` without the (dotted) keys."""
    out = copy.deepcopy(settings)
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        node = out
        for name in parents:
            node = node[name]
        del node[leaf]
    return out


def old_settings_id(meta: dict, keys) -> str:
    """The settings id as the older versions computed it (the hash of their result keys)."""
    relevant = {k: meta.get(k) for k in keys}
    return hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def bikes_set(tmp_path_factory, bikes_mp4) -> Path:
    root = tmp_path_factory.mktemp("oldset")
    (root / "media").mkdir()
    shutil.copy(bikes_mp4, root / "media/bikes.mp4")
    recs = [{"problem_id": f"q{i}", "problem": f"Question {i} about the bikes?", "data_type": "video",
             "problem_type": "multiple choice", "options": ["A. left", "B. right"],
             "solution": f"<answer>{'AB'[i % 2]}</answer>", "path": "media/bikes.mp4"} for i in range(6)]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def eval_config(model, root: Path, out: Path, **video) -> EvalConfig:
    return EvalConfig(model=Path(model), bench="videor1", data=root / "test.jsonl", media_root=root, out=out,
                      video=VideoSpec(**{**VIDEO, **video}), **FAST)


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, bikes_set, tmp_path_factory) -> Path:
    """An uninterrupted run of the current version over the six items."""
    out = tmp_path_factory.mktemp("full") / "run"
    run_eval(eval_config(tiny_model_dir, bikes_set, out), echo=lambda *_: None)
    return out


def make_old_folder(full: Path, dest: Path, shape, keep: int = 3) -> str:
    """`full` as an older version would have left it, killed after `keep` lines (and half of the next);
    returns the old settings id its lines carry."""
    dropped, id_keys = shape
    shutil.copytree(full, dest)
    meta = drop(json.loads((full / "meta.json").read_text()), dropped)
    meta["settings_id"] = old_id = old_settings_id(meta, id_keys)
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    rows = [{**r, "settings_id": old_id} for r in read_predictions(full / "predictions.jsonl")]
    lines = [json.dumps(r) + "\n" for r in rows]
    (dest / "predictions.jsonl").write_text("".join(lines[:keep]) + lines[keep][:25])
    return old_id


class Spy:
    """The real engine, recording the ids of the items it generates for."""

    def __init__(self, engine, seen: list):
        self.engine, self.seen = engine, seen

    def generate(self, samples, params):
        self.seen.extend(str(s.record.problem_id) for s in samples)
        return self.engine.generate(samples, params)


def comparable(rows):
    keep = ("id", "output", "official", "reference", "format", "error", "n_tokens")
    return sorted(tuple(json.dumps(r.get(k)) for k in keep) for r in rows)


@pytest.mark.parametrize("shape", [BEFORE_FC3089A, FC3089A_TO_DC5AD40], ids=["before-fc3089a", "fc3089a-dc5ad40"])
def test_old_eval_folder_resumes_with_old_defaults(tiny_model_dir, bikes_set, full_run, tmp_path, monkeypatch,
                                                   shape):
    old = tmp_path / "old"
    old_id = make_old_folder(full_run, old, shape)
    real_make_engine, seen = runner.make_engine, []
    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: Spy(real_make_engine(*a, **k), seen))
    messages: list[str] = []
    resumed = run_eval(eval_config(tiny_model_dir, bikes_set, old), echo=messages.append)

    assert seen == ["q3", "q4", "q5"]                                  # only the items left, each once
    rows = read_predictions(old / "predictions.jsonl")
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]
    assert comparable(rows) == comparable(read_predictions(full_run / "predictions.jsonl"))
    full_meta, meta = (json.loads((d / "meta.json").read_text()) for d in (full_run, old))
    assert {**meta, "earlier_settings_ids": None} == {**full_meta, "earlier_settings_ids": None}  # complete
    assert meta["earlier_settings_ids"] == [old_id] and old_id != meta["settings_id"]
    assert [r["settings_id"] for r in rows] == [old_id] * 3 + [meta["settings_id"]] * 3

    said = "\n".join(messages)
    assert ("assuming video.seek: 'exact'" in said) == ("video.seek" in shape[0])
    assert "assuming video.factor: None" in said and "assuming image.factor: None" in said
    fingerprint_notes = [m for m in messages if "model_fingerprint" in m]
    if "model_fingerprint" in shape[0]:
        assert len(fingerprint_notes) == 1 and "cannot be checked" in fingerprint_notes[0]
    else:
        assert not fingerprint_notes and "has no model_fingerprint" not in said
    # one run: `videor1 score` reads the old and new lines together and gives the eval's numbers
    rescore("videor1", old / "predictions.jsonl", tmp_path / "rescored")
    assert json.loads((tmp_path / "rescored/scores.json").read_text()) == json.loads((old / "scores.json").read_text())
    assert resumed["counts"]["items"] == 6
    # resuming again: nothing to do, no notes, the earlier id kept
    seen.clear()
    again: list[str] = []
    run_eval(eval_config(tiny_model_dir, bikes_set, old), echo=again.append)
    assert seen == [] and not [m for m in again if "has no" in m]
    assert json.loads((old / "meta.json").read_text())["earlier_settings_ids"] == [old_id]


def test_old_eval_folder_with_a_real_difference_is_refused(tiny_model_dir, bikes_set, full_run, tmp_path):
    old = tmp_path / "old"
    make_old_folder(full_run, old, BEFORE_FC3089A)
    before = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"video differ \(recorded -> now\): video\.seek: 'exact' -> 'keyframe' \(video\.seek: not "
                                         r"recorded by the older version"):
        run_eval(eval_config(tiny_model_dir, bikes_set, old, seek="keyframe"), echo=lambda *_: None)
    with pytest.raises(ValueError, match=r"video\.max_frames: 4 -> 8"):
        run_eval(eval_config(tiny_model_dir, bikes_set, old, max_frames=8), echo=lambda *_: None)
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == before     # the folder is left as it was


def _meta_folder(tmp_path: Path, meta: dict) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "predictions.jsonl").write_text("")
    return out


def test_frame_factor_of_an_old_folder_follows_the_model_family(tmp_path):
    """Before dc5ad40 every family's frames were multiples of 28: the same as `factor: None` for Qwen2/2.5-VL
    (28), not for Qwen3-VL (32), whose old folders are refused."""
    new = {"model": "m", "model_fingerprint": "f", "video": asdict(VideoSpec()), "image": asdict(ImageSpec()),
           "settings_id": "new"}
    out = _meta_folder(tmp_path, {**drop(new, ["video.factor", "image.factor"]), "settings_id": "old"})
    resume = check_resumable(out, new, frame_factor=28)
    assert resume.earlier_settings_ids == ["old"] and len(resume.notes) == 2
    with pytest.raises(ValueError, match=r"video\.factor: 28 -> None.*image\.factor: 28 -> None"):
        check_resumable(out, new, frame_factor=32)
    with pytest.raises(ValueError, match="video.factor: 28 -> None"):   # family unknown: 28 is not assumed to match
        check_resumable(out, new, frame_factor=None)


def test_frame_factor_read_from_the_model_directory(family_model_dirs, tmp_path):
    assert {name: frame_factor_of(d) for name, d in family_model_dirs.items()} == {
        "qwen2_5_vl": 28, "qwen2_vl": 28, "qwen3_vl": 32, "qwen3_5": 32, "qwen3_5_moe": 32}
    (tmp_path / "config.json").write_text("[1, 2]")
    assert frame_factor_of(tmp_path) is None and frame_factor_of(tmp_path / "nothere") is None


def test_fill_missing_fills_only_absent_keys_under_present_sections():
    defaults = {"video.seek": OldDefault("exact", "why"), "image.factor": OldDefault(None, "why"),
                "fingerprint": OldDefault("abc", "unchecked", checked=False)}
    recorded = {"video": {"fps": 2.0}, "fingerprint": "xyz"}
    filled, assumed = fill_missing(recorded, defaults)
    assert filled == {"video": {"fps": 2.0, "seek": "exact"}, "fingerprint": "xyz"}   # no image section: not made
    assert recorded == {"video": {"fps": 2.0}, "fingerprint": "xyz"} and list(assumed) == ["video.seek"]
    filled, assumed = fill_missing({"video": {"seek": "keyframe"}}, defaults)
    assert filled == {"video": {"seek": "keyframe"}, "fingerprint": "abc"} and list(assumed) == ["fingerprint"]
    assert notes("f.json", assumed) == ["f.json has no fingerprint (an older version made it): unchecked"]
    assert media_defaults(32)["video.factor"].value == 28 and media_defaults(28)["video.factor"].value is None


# ------------------------------------------------------------------------------------------------- annotate
ANNOTATE = dict(model="unused", threshold=0, require_format=False, batch_size=4, samples=2, max_new_tokens=10,
                seed=0, limit=6)
# <out>.annotate.json before fc3089a (86f853a .. 167abf5): no limits, no video.seek, no factors;
# fc3089a .. dc5ad40: no factors.
ANNOTATE_SHAPES = {"before-fc3089a": ("limits", "video.seek", "video.factor", "image.factor"),
                   "fc3089a-dc5ad40": ("video.factor", "image.factor")}


@pytest.fixture(scope="module")
def annotate_engine(tiny_model_dir):
    from videor1.generation.engines import HFEngine
    from videor1.model.load import load_model, load_processor

    return HFEngine(load_model(tiny_model_dir, device="cpu"), load_processor(tiny_model_dir), batch_size=4)


@pytest.fixture(scope="module")
def annotate_full(synth_dir, annotate_engine, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ann") / "full.jsonl"
    annotate(out=out, data=synth_dir / "rl.jsonl", media_root=synth_dir, video=VideoSpec(max_frames=4),
             engine=annotate_engine, echo=lambda s: None, **ANNOTATE)
    assert len(out.read_text().splitlines()) == 6
    return out


def make_old_annotation(full: Path, part: Path, dropped, keep: int = 3) -> None:
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:keep]))
    rejects_path(part).write_text(rejects_path(full).read_text())
    settings = drop(json.loads(settings_path(full).read_text()), dropped)
    settings_path(part).write_text(json.dumps(settings, indent=2) + "\n")


@pytest.mark.parametrize("shape", list(ANNOTATE_SHAPES))
def test_old_annotate_output_resumes_with_old_defaults(synth_dir, annotate_engine, annotate_full, tmp_path, shape):
    part = tmp_path / "part.jsonl"
    make_old_annotation(annotate_full, part, ANNOTATE_SHAPES[shape])
    messages: list[str] = []
    summary = annotate(out=part, data=synth_dir / "rl.jsonl", media_root=synth_dir, video=VideoSpec(max_frames=4),
                       engine=annotate_engine, echo=messages.append, **ANNOTATE)
    assert part.read_bytes() == annotate_full.read_bytes()        # the rest written, nothing twice
    assert summary["this_run"]["accepted"] == 3
    assert settings_path(part).read_text() == settings_path(annotate_full).read_text()   # complete new shape
    said = "\n".join(messages)
    assert "assuming video.factor: None" in said and "assuming image.factor: None" in said
    assert ("assuming video.seek: 'exact'" in said) == ("video.seek" in ANNOTATE_SHAPES[shape])
    assert "limits" not in said   # recorded, never compared: its absence needs no default


def test_old_annotate_output_with_a_real_difference_is_refused(synth_dir, annotate_engine, annotate_full, tmp_path):
    part = tmp_path / "part.jsonl"
    make_old_annotation(annotate_full, part, ANNOTATE_SHAPES["before-fc3089a"])
    before = part.read_bytes(), settings_path(part).read_text()
    with pytest.raises(AnnotateError, match=r"video differ.*'seek': 'exact'.*video\.seek: not recorded"):
        annotate(out=part, data=synth_dir / "rl.jsonl", media_root=synth_dir,
                 video=VideoSpec(max_frames=4, seek="keyframe"), engine=annotate_engine, echo=lambda s: None,
                 **ANNOTATE)
    assert (part.read_bytes(), settings_path(part).read_text()) == before
