"""`videor1 annotate`: the acceptance rule, real sampling with the tiny model on the synthetic set, resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videor1.tools.annotate import AnnotateError, annotate, judge, rejects_path, think_part
from videor1.cli import app
from videor1.data.check import check_dataset
from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import load_records, parse_record

FAST = dict(samples=2, video=VideoSpec(max_frames=4), max_new_tokens=10, seed=0)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from videor1.model.load import load_model, load_processor
    from videor1.generation.engines import HFEngine

    return HFEngine(load_model(tiny_model_dir, device="cpu"), load_processor(tiny_model_dir), batch_size=4)


def _mc_record():
    return parse_record({"problem_id": 1, "problem": "Which way?", "data_type": "video",
                         "problem_type": "multiple choice", "options": ["A. left", "B. right"],
                         "solution": "<answer>B</answer>", "path": "v.mp4"}, file="t", index=0)


def test_judge_acceptance_rule():
    rec = _mc_record()
    good = "<think>hmm, it moves right</think><answer>B</answer>"
    unformatted = "it moves right <answer>B</answer>"
    wrong = "<think>left, I think</think><answer>A</answer>"
    v = judge(rec, [wrong, unformatted, good], threshold=0.6)
    assert v.accepted and v.index == 2 and v.process == "<think>hmm, it moves right</think>"
    assert (v.accuracy, v.format) == (1.0, 1.0)
    v = judge(rec, [wrong, unformatted], threshold=0.6)
    assert not v.accepted and (v.accuracy, v.format, v.index) == (1.0, 0.0, 1)  # the best sample seen
    v = judge(rec, [wrong, unformatted], threshold=0.6, require_format=False)
    assert v.accepted and v.index == 1 and v.process == "<think>it moves right</think>"
    assert judge(rec, [good], threshold=1.0).accepted  # at least the threshold
    assert not judge(rec, [good], threshold=1.01).accepted  # accuracy never exceeds 1
    assert not judge(rec, [wrong], threshold=0.01).accepted
    v = judge(rec, [wrong, "garbage"], threshold=0, require_format=False)
    assert v.accepted and v.index == 0  # ties keep the first sample


def test_think_part_always_valid_process():
    assert think_part("x <think>a</think> y <think>b</think>") == "<think>a</think>"
    assert think_part("no tags at all") == "<think>no tags at all</think>"
    assert think_part("reasoning <answer>3</answer>") == "<think>reasoning</think>"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_accept_all_gives_valid_cot_records(tmp_path, synth_dir, engine, processor):
    out = tmp_path / "cot.jsonl"
    summary = annotate(model="unused", data=synth_dir / "rl.jsonl", media_root=synth_dir, out=out,
                       threshold=0, require_format=False, batch_size=3, limit=6, engine=engine,
                       echo=lambda s: None, **FAST)
    source = load_records(synth_dir / "rl.jsonl")[:6]
    written = load_records(out)
    assert [r.problem_id for r in written] == [r.problem_id for r in source]
    for src, rec in zip(source, written):
        assert rec.solution == src.solution and rec.path == src.path and rec.problem == src.problem
        assert rec.process.startswith("<think>") and rec.process.endswith("</think>")
        assert rec.extra["annotation"]["of"] == 2 and rec.extra["synth_facts"] == src.extra["synth_facts"]
    assert check_dataset(out, synth_dir, echo=lambda s: None) == 0
    assert summary["this_run"]["accepted"] == 6 and _lines(rejects_path(out)) == []
    by_type = Counter(r.problem_type for r in source)
    assert {k: v["accepted"] for k, v in summary["problem_type"].items()} == dict(by_type)
    # the SFT trainer's data side reads them: response-only labels over process + solution
    from videor1.sft.data import SFTDataset, make_collate

    ds = SFTDataset(written, str(synth_dir), VideoSpec(max_frames=4, max_pixels=3136), ImageSpec(max_pixels=3136),
                    "You are a helpful assistant.")
    batch = make_collate(processor, 4096)([ds[i] for i in range(len(ds))])
    assert batch.n_samples == len(written) and not batch.skipped
    assert int((batch.inputs["labels"] != -100).sum()) > 0


def test_threshold_above_max_rejects_everything(tmp_path, synth_dir, engine):
    out = tmp_path / "cot.jsonl"
    summary = annotate(model="unused", data=synth_dir / "rl.jsonl", media_root=synth_dir, out=out,
                       threshold=1.01, require_format=False, batch_size=4, limit=5, engine=engine,
                       echo=lambda s: None, **FAST)
    rejects = _lines(rejects_path(out))
    assert _lines(out) == [] and len(rejects) == 5 and summary["this_run"]["rejected"] == 5
    assert all(r["reason"] == "no sample passed" and 0.0 <= r["best_accuracy"] <= 1.0 for r in rejects)


def test_resume_equals_one_run(tmp_path, synth_dir, engine):
    kw = dict(model="unused", data=synth_dir / "rl.jsonl", media_root=synth_dir, threshold=0,
              require_format=False, batch_size=4, engine=engine, echo=lambda s: None, **FAST)
    full = tmp_path / "full.jsonl"
    annotate(out=full, limit=7, **kw)
    part = tmp_path / "part.jsonl"
    annotate(out=part, limit=3, **kw)  # stops inside the first batch
    assert len(_lines(part)) == 3
    annotate(out=part, limit=7, **kw)
    assert part.read_bytes() == full.read_bytes()
    data = full.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1)  # keep 6 whole lines and half of the 7th: a kill mid-write
    part.write_bytes(data[: cut + 1] + data[cut + 1: cut + 30])
    messages: list[str] = []
    summary = annotate(out=part, limit=7, **{**kw, "echo": messages.append})
    assert part.read_bytes() == full.read_bytes() and summary["this_run"]["accepted"] == 1
    assert any("partly written" in m for m in messages)
    with pytest.raises(AnnotateError, match="samples"):
        annotate(out=part, limit=7, **{**kw, "samples": 3})


def test_bad_media_is_rejected_with_reason(tmp_path, synth_dir, engine):
    records = [json.loads(line) for line in (synth_dir / "rl.jsonl").read_text().splitlines()[:4]]
    root = tmp_path / "root"
    for rec in records:
        (root / rec["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_dir / rec["path"], root / rec["path"])
    blob = (root / records[1]["path"]).read_bytes()
    (root / records[1]["path"]).write_bytes(blob[: len(blob) // 3])
    (root / records[2]["path"]).unlink()
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"problem_id": "x"}\n')
    out = tmp_path / "cot.jsonl"
    summary = annotate(model="unused", data=data, media_root=root, out=out, threshold=0, require_format=False,
                       batch_size=4, limit=None, engine=engine, echo=lambda s: None, **FAST)
    assert summary["this_run"] == {"accepted": 2, "rejected": 0, "bad media": 2, "invalid": 1}
    rejects = {r["problem_id"]: r["reason"] for r in _lines(rejects_path(out))}
    assert set(rejects) == {records[1]["problem_id"], records[2]["problem_id"]}
    assert all(reason.startswith("media:") for reason in rejects.values())
    assert [r["problem_id"] for r in _lines(out)] == [records[0]["problem_id"], records[3]["problem_id"]]


def test_cli_annotate(tmp_path, synth_dir, tiny_model_dir):
    runner = CliRunner()
    out = tmp_path / "cot.jsonl"
    args = ["annotate", "--model", str(tiny_model_dir), "--data", str(synth_dir / "rl.jsonl"),
            "--media-root", str(synth_dir), "--out", str(out), "--samples", "2", "--frames", "4",
            "--max-new-tokens", "8", "--limit", "2", "--threshold=0", "--no-require-format"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accepted 2" in result.output and len(_lines(out)) == 2
    result = runner.invoke(app, [a if a != str(tiny_model_dir) else str(tmp_path / "nope") for a in args])
    assert result.exit_code == 2 and "no such model directory" in result.output
