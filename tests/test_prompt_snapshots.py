"""Golden snapshots of what every benchmark adapter loads: ids, record fields, rendered prompt, meta, problems.

For each benchmark, `tests/golden/prompts/<bench>.json` holds the items (and load problems) read from two
small data sets: the fixture of `tests/test_eval_benchmarks.py` and a set of edge rows below (bad fields,
fallback ids, alternative layouts). The prompt is the exact user text the model sees
(`videor1.data.prompts.question_text`), stored one line per list entry so a diff reads well.

A change to an adapter, to the record parser or to the prompt templates that alters any of this fails here.
When the change is meant, rewrite the snapshots and review the diff:

    VIDEOR1_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_prompt_snapshots.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from test_eval_benchmarks import FIXTURES, write_parquet
from videor1.data.prompts import question_text
from videor1.evaluate.benchmarks import Item, benchmark_names, get_benchmark

GOLDEN = Path(__file__).parent / "golden" / "prompts"
UPDATE = os.environ.get("VIDEOR1_UPDATE_GOLDEN") == "1"


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ edge rows
def edge_vsibench(root: Path) -> Path:
    base = {"dataset": "scannet", "scene_name": "scene0011_00", "question_type": "room_size_estimation",
            "question": "What is the size of this room in square meters?", "options": None, "ground_truth": "21.5"}
    return write_jsonl(root / "vsi.jsonl", [
        {**base},                                                         # no id: file stem + index
        {**base, "id": 7, "scene_name": None},                            # missing field
        {**base, "id": 8, "question_type": "object_rel_direction_easy", "question": "Where is the lamp?",
         "options": ["A. left", "B. right"], "ground_truth": "A"},
        {**base, "id": 9, "question_type": "object_rel_direction_extreme"},   # no such level
        {**base, "id": 10, "question_type": "route_planning", "options": None, "ground_truth": "B"},
    ])


def edge_videomme(root: Path) -> Path:
    base = {"video_id": "002", "duration": "long", "domain": "Sports", "videoID": "xyz", "task_type": "OCR",
            "question": "What is written on the wall?", "options": ["Stop", "Go", "Wait", "Run"], "answer": "C"}
    return write_jsonl(root / "mme.jsonl", [
        {**base},                                                         # no question_id; unlettered options
        {**base, "question_id": "002-2", "options": None},                # missing field
        {**base, "question_id": "002-3", "answer": "E", "options": ["A. x", "B. y"]},
    ])


def edge_mmvu(root: Path) -> Path:
    base = {"question": "Which gas law?", "choices": {"B": "Charles", "A": "Boyle", "C": ""}, "answer": "A",
            "question_type": "multiple-choice", "video": "videos/Chemistry/3.mp4"}
    return write_jsonl(root / "mmvu.jsonl", [
        {**base},                                                         # no id; empty choice dropped
        {**base, "id": "p1", "video_path": "local/clip.mp4", "metadata": {"subject": "Law"}},
        {**base, "id": "p2", "video": "https://example.org/clip.mp4"},    # no usable media path
        {**base, "id": "p3", "choices": ["Boyle", "Charles"]},            # not a letter mapping
        {**base, "id": "p4", "answer": None},
        {**base, "id": "p5", "question_type": "open-ended"},
    ])


def edge_mvbench(root: Path) -> Path:
    (root / "nturgbd").mkdir()   # the NTU videos obtained from their authors (else these rows are listed unusable)
    write_json(root / "mv/not_a_list.json", {"video": "a.mp4"})
    return write_json(root / "mv/fine_grained_pose.json", [
        {"video": "S001.avi", "question": "Which pose?", "candidates": ["sit", "stand"], "answer": "stand",
         "start": 1, "end": "4.5"},
        {"video": "S002.avi", "question": "Which pose?", "candidates": ["sit", "stand"]},
        {"video": "S003.avi", "question": "Which pose?", "candidates": ["sit", "stand"], "answer": "sit",
         "start": "soon"},
        {"video": "S004.avi", "question": "Which pose?", "candidates": ["A. sit", "B. stand"], "answer": "A. sit"},
    ]).parent


def edge_tempcompass(root: Path) -> Path:
    write_jsonl(root / "tc/yes_no.jsonl", [
        {"video_id": "7", "dim": "speed", "question": "Is it fast?", "answer": "Yes"},
        {"video_id": "7", "dimension": "order", "question": "Is it first?", "answer": "maybe"},
    ])
    write_jsonl(root / "tc/multi_choice/rows.jsonl", [
        {"video_id": "8", "dim": "direction", "question": "Which way?\n(A) up\nB) down", "answer": "B) down"},
        {"video_id": "8", "dim": "direction", "question": "Which way?\nA. up", "answer": "A. up"},
        {"video_id": "8", "dim": "direction", "question": "Which way?\nA. up\nB. down", "answer": "C. left"},
    ])
    write_json(root / "tc/captioning.json", {"9": {"action": {"question": "Describe.", "answer": "x"}}})
    write_json(root / "tc/notes.json", {"9": {}})
    return root / "tc"


def edge_videommmu(root: Path) -> Path:
    write_jsonl(root / "mmmu/rows.jsonl", [
        {"id": "dev_Physics_1", "track": "Comprehension", "question": "Speed?", "options": [], "answer": "3.5e2",
         "question_type": "open"},
        {"id": "dev_Law_2", "track": "Comprehension", "question": "Who?", "answer": "x", "question_type": "open"},
        {"id": "dev_History_3", "question": "Who?", "answer": "Caesar", "question_type": "open"},
        {"id": "dev_Music_4", "track": "Adaptation", "question": "Key?", "options": ["C major", "G major", " ", ""],
         "answer": "B", "question_type": "multiple-choice"},
        {"track": "Perception", "question": "No id", "answer": "A", "question_type": "multiple-choice"},
    ])
    write_parquet(root / "mmmu/Comprehension/part.parquet", [
        {"id": "test_Finance_5", "question": "Rate?", "options": ["5%", "6%"], "answer": "A",
         "question_type": "multiple-choice"}])
    return root / "mmmu"


def edge_videor1(root: Path) -> Path:
    rec = {"problem_id": 5, "problem": "How many cars?", "data_type": "video", "problem_type": "numerical",
           "options": [], "solution": "<answer>3</answer>", "path": "c.mp4", "data_source": "synthetic"}
    return write_jsonl(root / "recs.jsonl", [
        rec, {**rec, "problem": "How many bikes?", "temporal": False}, {**rec, "temporal": True},
        {**rec, "problem_id": 6, "solution": "no tags"},
    ])


EDGES: dict[str, Callable[[Path], Path]] = {
    "vsibench": edge_vsibench, "videomme": edge_videomme, "mmvu": edge_mmvu, "mvbench": edge_mvbench,
    "tempcompass": edge_tempcompass, "videommmu": edge_videommmu, "videor1": edge_videor1,
}


# ------------------------------------------------------------------------------------------ snapshot
def item_snapshot(item: Item) -> dict[str, Any]:
    rec = item.record
    return {"id": item.id, "problem_type": rec.problem_type, "options": list(rec.options),
            "solution": rec.solution, "answer": item.answer, "path": rec.path, "data_source": rec.data_source,
            "temporal": rec.temporal, "start": item.start, "end": item.end, "meta": dict(item.meta),
            "prompt": question_text(rec).split("\n")}


def load_snapshot(name: str, write: Callable[[Path], Path], root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    loaded = get_benchmark(name).load(write(root), root)
    return {"items": [item_snapshot(it) for it in loaded.items],
            "problems": [p.replace(str(root), "<data>") for p in loaded.problems]}


def test_every_benchmark_has_a_snapshot():
    assert sorted(FIXTURES) == sorted(EDGES) == benchmark_names()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_prompt_snapshot(name, tmp_path):
    got = {"fixture": load_snapshot(name, FIXTURES[name], tmp_path / "fixture"),
           "edge": load_snapshot(name, EDGES[name], tmp_path / "edge")}
    text = json.dumps(got, indent=1, ensure_ascii=False, default=str) + "\n"
    golden = GOLDEN / f"{name}.json"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"no snapshot {golden}; create it with VIDEOR1_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), (
        f"{name}: loaded items / prompts differ from {golden}; if meant, rerun with VIDEOR1_UPDATE_GOLDEN=1 "
        "and review the diff")
