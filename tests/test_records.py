"""Records: validation of every field, JSON / JSONL reading, safe media paths, atomic round-trips."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from videor1.data.records import (
    DatasetFileError,
    Record,
    RecordError,
    load_records,
    parse_record,
    read_records,
    resolve_media_path,
    write_records,
)


def mc(**kw) -> dict:
    base = {"problem_id": 7, "problem": "Which way does the ball move?", "data_type": "video",
            "problem_type": "multiple choice", "options": ["A. left", "B. right", "C. up"],
            "solution": "<answer>B</answer>", "path": "./videos/a.mp4", "data_source": "synth"}
    base.update(kw)
    return base


def num(**kw) -> dict:
    base = {"problem_id": "n1", "problem": "How many dots?", "data_type": "image",
            "problem_type": "numerical", "options": [], "solution": "<answer>3.5</answer>",
            "path": "img/b.png"}
    base.update(kw)
    return base


def test_parse_good_records_keep_every_field():
    rec = parse_record(mc(temporal=True, process="<think>hmm, it moves right</think>", split="train"),
                       file="f.json", index=0)
    assert rec.problem_id == 7 and rec.options == ("A. left", "B. right", "C. up")
    assert rec.temporal is True and rec.answer == "B" and rec.extra == {"split": "train"}
    out = rec.to_dict()
    assert out["split"] == "train" and out["options"] == ["A. left", "B. right", "C. up"]
    assert parse_record(out, file="f.json", index=0) == rec
    rec2 = parse_record(num(options=None), file="f.json", index=1)
    assert rec2.options == () and rec2.process is None and "process" not in rec2.to_dict()


@pytest.mark.parametrize("bad, field", [
    ({"problem_id": None}, "problem_id"),
    ({"problem_id": True}, "problem_id"),
    ({"problem": "  "}, "problem"),
    ({"data_type": "audio"}, "data_type"),
    ({"problem_type": "yes/no"}, "problem_type"),
    ({"options": []}, "options"),
    ({"options": ["A. left", "C. right"]}, "options"),
    ({"options": ["left", "right"]}, "options"),
    ({"options": "A. left"}, "options"),
    ({"solution": "B"}, "solution"),
    ({"solution": "<answer>D</answer>"}, "solution"),
    ({"path": ""}, "path"),
    ({"process": "no tags here"}, "process"),
    ({"temporal": "yes"}, "temporal"),
    ({"data_source": 3}, "data_source"),
])
def test_bad_fields_name_record_file_and_field(bad, field):
    with pytest.raises(RecordError) as info:
        parse_record(mc(**bad), file="data/x.json", index=4)
    err = info.value
    assert err.field == field and err.file == "data/x.json"
    assert field in str(err) and "data/x.json" in str(err)
    expected_id = 7 if field != "problem_id" else "#4"
    assert err.record_id == expected_id


@pytest.mark.parametrize("answer, ok", [("42", True), ("-3.14", True), ("1e3", True), ("four", False),
                                        ("nan", False), ("", False)])
def test_numeric_answers_must_parse(answer, ok):
    for ptype in ("numerical", "regression"):
        obj = num(problem_type=ptype, solution=f"<answer>{answer}</answer>")
        if ok:
            assert parse_record(obj, file="f", index=0).answer == answer
        else:
            with pytest.raises(RecordError, match="solution"):
                parse_record(obj, file="f", index=0)


def test_free_form_and_ocr_accept_any_answer_text():
    for ptype in ("free-form", "OCR"):
        rec = parse_record(num(problem_type=ptype, solution="<answer> a red car </answer>"), file="f", index=0)
        assert rec.answer == "a red car"


def test_read_jsonl_reports_bad_lines_and_keeps_good(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(mc()), "{not json", "", json.dumps(num(problem_type="bogus")), json.dumps(num())]
    path.write_text("\n".join(lines) + "\n")
    good, errors = read_records(path)
    assert [r.problem_id for r in good] == [7, "n1"]
    assert len(errors) == 2
    assert errors[0].line == 2 and "invalid JSON" in errors[0].reason
    assert errors[1].line == 4 and errors[1].field == "problem_type" and errors[1].record_id == "n1"
    with pytest.raises(RecordError, match="problem_type|invalid JSON"):
        load_records(path)


def test_format_detected_by_content(tmp_path):
    as_list = tmp_path / "list.data"
    as_list.write_text(json.dumps([mc(), num()], indent=2))
    as_lines = tmp_path / "lines.json"
    as_lines.write_text(json.dumps(mc()) + "\n" + json.dumps(num()) + "\n")
    assert [r.problem_id for r in load_records(as_list)] == [7, "n1"]
    assert [r.problem_id for r in load_records(as_lines)] == [7, "n1"]


def test_whole_file_errors_raise(tmp_path):
    with pytest.raises(DatasetFileError, match="no such"):
        read_records(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"problem_id": 1,')
    with pytest.raises(DatasetFileError, match="JSON list"):
        read_records(broken)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("hello\nworld\n")
    with pytest.raises(DatasetFileError):
        read_records(garbage)


def test_resolve_media_path_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "videos" / "link.mp4")
    assert resolve_media_path(root, "./videos/a.mp4") == (root / "videos" / "a.mp4").resolve()
    assert resolve_media_path(root, "videos/../videos/a.mp4") == (root / "videos" / "a.mp4").resolve()
    for bad in (str(outside), "../secret.mp4", "videos/../../secret.mp4", "videos/link.mp4", ""):
        with pytest.raises(RecordError) as info:
            resolve_media_path(root, bad, record_id=3, file="d.json")
        assert info.value.field == "path" and info.value.record_id == 3


def test_read_with_media_root_checks_existence_and_escape(tmp_path, bikes_mp4):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    shutil.copy(bikes_mp4, root / "videos" / "a.mp4")
    path = tmp_path / "d.json"
    write_records(path, [mc(), mc(problem_id=8, path="videos/missing.mp4"), mc(problem_id=9, path="../d.json")])
    good, errors = read_records(path, media_root=root)
    assert [r.problem_id for r in good] == [7]
    assert [(e.record_id, e.field) for e in errors] == [(8, "path"), (9, "path")]
    assert "not found" in errors[0].reason and "escapes" in errors[1].reason


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_write_round_trip_is_atomic_and_exact(tmp_path, suffix):
    records = [parse_record(mc(extra_field={"k": [1, 2]}), file="f", index=0), num(problem_id="ü-1")]
    path = tmp_path / "sub" / f"out{suffix}"
    write_records(path, records)
    back = load_records(path)
    assert back[0] == records[0] and back[0].extra == {"extra_field": {"k": [1, 2]}}
    assert back[1].to_dict() == parse_record(num(problem_id="ü-1"), file="f", index=1).to_dict()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("[") == (suffix == ".json")
    n_lines = len(text.splitlines())
    assert n_lines == 2 if suffix == ".jsonl" else n_lines > 10  # JSON list is indented
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    with pytest.raises(ValueError, match=".json or .jsonl"):
        write_records(tmp_path / "out.csv", records)


def test_record_to_dict_known_fields_win_over_extra():
    rec = Record(problem_id=1, problem="q", data_type="image", problem_type="OCR", options=(),
                 solution="<answer>x</answer>", path="a.png", extra={"problem": "shadow", "k": 1})
    assert rec.to_dict()["problem"] == "q" and rec.to_dict()["k"] == 1
