"""The evaluation runner with the tiny model on real videos: outputs, error items, shuffled frames,
kill-and-resume, and `videor1 score` reproducing `videor1 eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.media import ImageSpec, VideoSpec
from videor1.evaluate import runner
from videor1.evaluate.config import EvalConfig
from videor1.evaluate.runner import read_predictions, run_eval

FAST = dict(video=VideoSpec(fps=2.0, max_frames=4, max_pixels=8 * 28 * 28), image=ImageSpec(max_pixels=8 * 28 * 28),
            max_new_tokens=6, decoding="greedy", seed=0, engine="hf")


def eval_config(model, data, media_root, out, **kw) -> EvalConfig:
    return EvalConfig(model=Path(model), bench="videor1", data=Path(data), media_root=Path(media_root), out=Path(out),
                      **kw)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, bikes_mp4) -> Path:
    """Six records on a real video, plus one whose video is missing and one whose video is truncated."""
    root = tmp_path_factory.mktemp("evalset")
    (root / "media").mkdir()
    shutil.copy(bikes_mp4, root / "media/bikes.mp4")
    (root / "media/broken.mp4").write_bytes(bikes_mp4.read_bytes()[:3000])
    recs = [{"problem_id": f"q{i}", "problem": f"Question {i} about the bikes?", "data_type": "video",
             "problem_type": "multiple choice", "options": ["A. left", "B. right"],
             "solution": f"<answer>{'AB'[i % 2]}</answer>", "path": "media/bikes.mp4", "temporal": i < 3}
            for i in range(6)]
    recs.append({**recs[0], "problem_id": "missing", "path": "media/nothere.mp4"})
    recs.append({**recs[0], "problem_id": "broken", "path": "media/broken.mp4"})
    (root / "test.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return root


def evaluate(model, data_root, out, **kw):
    args = {**FAST, "batch_size": 3, "limit": None, "shuffle_frames": False, **kw}
    return run_eval(eval_config(model, data_root / "test.jsonl", data_root, out, **args), echo=lambda *_: None)


def comparable(rows):
    keep = ("id", "shuffled", "output", "official", "reference", "format", "error", "perm")
    return sorted((tuple(json.dumps(r.get(k)) for k in keep) for r in rows))


def test_eval_outputs_errors_and_settings(tiny_model_dir, small_set, tmp_path):
    summary = evaluate(tiny_model_dir, small_set, tmp_path / "run")
    for name in ("predictions.jsonl", "meta.json", "scores.json", "report.md", "scores.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert summary["counts"] == {"items": 8, "answered": 6, "errors": 2, "shuffled_items": 0}
    reasons = {e["id"]: e["reason"] for e in summary["errors"]}
    assert set(reasons) == {"missing", "broken"} and "MediaError" in reasons["missing"]
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert meta["video"]["max_frames"] == 4 and meta["video"]["fps"] == 2.0
    assert meta["video"]["max_pixels"] == 8 * 28 * 28 and meta["decoding"]["name"] == "greedy"
    assert meta["model"] == str(Path(tiny_model_dir).resolve()) and meta["version"]
    assert "instruction" in meta["prompt"]["templates"] and "git_commit" in meta
    rows = read_predictions(tmp_path / "run/predictions.jsonl")
    assert len(rows) == 8 and all(r["settings_id"] == meta["settings_id"] for r in rows)
    assert all(r["n_tokens"] >= 1 for r in rows if not r["error"])
    report = (tmp_path / "run/report.md").read_text()
    assert "**official**" in report and "2 errors" in report and "nothere.mp4" in report
    # the official number equals the mean of the per-item official scores (videor1: item mean)
    assert summary["official"]["overall"] == pytest.approx(sum(r["official"] for r in rows) / 8)


def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, small_set, tmp_path, monkeypatch):
    full = evaluate(tiny_model_dir, small_set, tmp_path / "full")

    real_make_engine = runner.make_engine
    calls = {"n": 0}

    class Dying:
        def __init__(self, engine):
            self.engine = engine

        def generate(self, samples, params):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("killed")
            return self.engine.generate(samples, params)

    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: Dying(real_make_engine(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_model_dir, small_set, tmp_path / "resumed")
    monkeypatch.setattr(runner, "make_engine", real_make_engine)
    pred = tmp_path / "resumed/predictions.jsonl"
    assert len(read_predictions(pred)) == 3                 # the first batch survived the kill
    with pred.open("a") as fh:                              # and a line was cut half-way by the kill
        fh.write('{"id": "q3", "shuffled": fal')
    resumed = evaluate(tiny_model_dir, small_set, tmp_path / "resumed")

    rows = read_predictions(pred)
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8      # nothing generated or scored twice
    assert comparable(rows) == comparable(read_predictions(tmp_path / "full/predictions.jsonl"))
    assert resumed["official"] == full["official"] and resumed["reference"] == full["reference"]
    assert resumed["counts"] == full["counts"]


def test_an_item_the_engine_refuses_is_an_error_item(tiny_model_dir, small_set, tmp_path, monkeypatch):
    """vLLM refuses a whole call when one prompt is longer than its max_model_len (`RequestRejected`, real
    vLLM: tests/vllm_real/test_vllm_logprobs.py): the batch is retried item by item, the refused item becomes
    an error item with the reason, and every other item is answered as in a run without the refusal."""
    from videor1.generation.engines import RequestRejected

    plain = evaluate(tiny_model_dir, small_set, tmp_path / "plain")
    real_make_engine = runner.make_engine
    calls = []

    class Refusing:
        def __init__(self, engine):
            self.engine = engine

        def generate(self, samples, params):
            calls.append([s.record.problem_id for s in samples])
            if "q4" in calls[-1]:
                raise RequestRejected("the decoder prompt (length 9999) is longer than the maximum model length")
            return self.engine.generate(samples, params)

    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: Refusing(real_make_engine(*a, **k)))
    summary = evaluate(tiny_model_dir, small_set, tmp_path / "refused")
    assert calls == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q3"], ["q4"], ["q5"]]
    assert summary["counts"] == {"items": 8, "answered": 5, "errors": 3, "shuffled_items": 0}
    reasons = {e["id"]: e["reason"] for e in summary["errors"]}
    assert reasons["q4"].startswith("engine refused the item: the decoder prompt (length 9999)")
    rows = read_predictions(tmp_path / "refused" / "predictions.jsonl")
    before = read_predictions(tmp_path / "plain" / "predictions.jsonl")
    assert comparable([r for r in rows if r["id"] != "q4"]) == comparable([r for r in before if r["id"] != "q4"])
    assert plain["counts"]["errors"] == 2


def test_resume_with_other_settings_is_refused(tiny_model_dir, small_set, tmp_path):
    evaluate(tiny_model_dir, small_set, tmp_path / "run", limit=2)
    with pytest.raises(ValueError, match="video"):
        evaluate(tiny_model_dir, small_set, tmp_path / "run", limit=2, video=VideoSpec(max_frames=8))


def test_score_cli_reproduces_eval_cli(tiny_model_dir, small_set, tmp_path):
    cli = CliRunner()
    res = cli.invoke(app, ["eval", "--model", str(tiny_model_dir), "--bench", "videor1",
                           "--data", str(small_set / "test.jsonl"), "--media-root", str(small_set),
                           "--out", str(tmp_path / "run"), "--frames", "4", "--max-pixels", str(8 * 28 * 28),
                           "--max-new-tokens", "6", "--batch-size", "4", "--limit", "5"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["score", "--bench", "videor1", "--predictions", str(tmp_path / "run/predictions.jsonl"),
                           "--out", str(tmp_path / "rescored")])
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "run/scores.json").read_text())
    b = json.loads((tmp_path / "rescored/scores.json").read_text())
    assert a == b
    assert (tmp_path / "rescored/report.md").read_text() == (tmp_path / "run/report.md").read_text()
    bad = cli.invoke(app, ["eval", "--model", str(tiny_model_dir), "--bench", "nope", "--data",
                           str(small_set / "test.jsonl"), "--media-root", str(small_set), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "known:" in bad.output


def test_shuffled_frames_on_synthetic_set(tiny_model_dir, synth_dir, tmp_path):
    summary = run_eval(eval_config(tiny_model_dir, synth_dir / "test.jsonl", synth_dir, tmp_path / "shuf",
                                   batch_size=6, limit=6, shuffle_frames=True, **FAST), echo=lambda *_: None)
    rows = read_predictions(tmp_path / "shuf/predictions.jsonl")
    ordered = {r["id"]: r for r in rows if not r["shuffled"]}
    shuffled = {r["id"]: r for r in rows if r["shuffled"]}
    assert set(ordered) == set(shuffled) and len(ordered) == 6
    for item_id, r in shuffled.items():
        if r["data_type"] == "video" and not r["error"]:
            assert sorted(r["perm"]) == list(range(len(r["perm"]))) and r["perm"] != sorted(r["perm"])
    tr = summary["temporal_reliance"]
    answered = [i for i in ordered if not ordered[i]["error"]]
    o = sum(ordered[i]["official"] for i in answered) / len(answered)
    s = sum(shuffled[i]["official"] for i in answered) / len(answered)
    assert tr["overall"]["ordered"] == pytest.approx(o) and tr["overall"]["gap"] == pytest.approx(o - s)
    labels = {("order-dependent" if ordered[i]["temporal"] else "order-independent") for i in answered}
    assert set(tr["by_temporal"]) == labels
    assert "Temporal reliance" in (tmp_path / "shuf/report.md").read_text()
    # the same permutation again for the same seed and item
    assert runner.frame_permutation(8, 0, "x") == runner.frame_permutation(8, 0, "x")
    assert runner.frame_permutation(8, 1, "x") != runner.frame_permutation(8, 0, "x")
