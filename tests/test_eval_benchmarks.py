"""Each benchmark adapter reads a small fixture in its benchmark's real file layout (written by the
`write_<bench>` functions here, with real mp4s), builds the training prompt, decodes the media (clipped where
the benchmark says so) and scores. The shared load loop and the registry are tested at the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.prompts import TEMPLATES, build_messages, question_text
from videor1.evaluate.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from videor1.evaluate.benchmarks.base import BadFile, BadRow, SkipRow, read_rows, require
from videor1.evaluate.runner import load_item_media, score_row

SPEC = VideoSpec(max_frames=4, max_pixels=8 * 28 * 28)


def out(answer: str) -> str:
    return f"<think>let me think</think><answer>{answer}</answer>"


def put_video(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def scored(bench, item, output: str) -> dict:
    return score_row(bench, {**item.row(), "output": output, "error": None})


def check_prompt_and_media(item, media_root: Path) -> None:
    text = question_text(item.record)
    assert text.startswith(item.record.problem)
    assert TEMPLATES["suffix"][item.record.problem_type] in text
    for option in item.record.options:
        assert option in text
    assert build_messages(item.record)[-1]["content"][0] == {"type": "video"}
    clip = load_item_media(item, media_root, SPEC, ImageSpec())
    assert clip.frames.shape[0] == 4 and clip.frames.dtype.name == "uint8"


# ------------------------------------------------------------------------------------------ VSI-Bench
def write_vsibench(root: Path) -> Path:
    return write_parquet(root / "test-00000-of-00001.parquet", [
        {"id": 1, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
         "question": "How many chairs are in this room?", "options": None, "ground_truth": "4"},
        {"id": 2, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_rel_direction_hard",
         "question": "Standing by the sofa facing the TV, is the lamp to my front-left, front-right, back-left or back-right?",
         "options": ["A. front-left", "B. front-right", "C. back-left", "D. back-right"], "ground_truth": "C"},
        {"id": 3, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "mystery_task",
         "question": "?", "options": None, "ground_truth": "1"},
    ])


def test_vsibench_parquet(tmp_path, bikes_mp4):
    put_video(bikes_mp4, tmp_path / "media/arkitscenes/41069025.mp4")
    data = write_vsibench(tmp_path)
    bench = get_benchmark("vsibench")
    loaded = bench.load(data, tmp_path / "media")
    assert [it.id for it in loaded.items] == ["1", "2"]
    assert len(loaded.problems) == 1 and "mystery_task" in loaded.problems[0] and "record 3" in loaded.problems[0]
    count, direction = loaded.items
    assert count.record.problem_type == "regression" and count.record.path == "arkitscenes/41069025.mp4"
    assert direction.meta["task"] == "object_rel_direction" and direction.meta["level"] == "hard"
    for item in loaded.items:
        check_prompt_and_media(item, tmp_path / "media")
    assert scored(bench, direction, out("C."))["official"] == 1.0        # first token, trailing "." removed
    assert scored(bench, direction, out("C."))["reference"] == 0.0       # reference: exact string
    assert scored(bench, count, out("5"))["official"] == pytest.approx(0.6)   # 25 % off: θ .50 ... .75
    assert scored(bench, count, out("4 chairs"))["official"] == 1.0


# ------------------------------------------------------------------------------------------ Video-MME
def write_videomme(root: Path) -> Path:
    return write_parquet(root / "videomme/test-00000-of-00001.parquet", [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
             "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
             "task_type": "Counting Problem", "question": "How many rabbits appear?",
             "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "A"}])


def test_videomme_parquet(tmp_path, bunny_mp4):
    put_video(bunny_mp4, tmp_path / "data/fFjv93ACGo8.mp4")
    data = write_videomme(tmp_path)
    bench = get_benchmark("videomme")
    (item,) = bench.load(data, tmp_path / "data").items
    assert item.record.options == ("A. One.", "B. Two.", "C. Three.", "D. Four.")
    assert item.meta["duration"] == "short" and item.record.path == "fFjv93ACGo8.mp4"
    check_prompt_and_media(item, tmp_path / "data")
    assert scored(bench, item, out("The best answer is A"))["official"] == 1.0
    assert scored(bench, item, out("After all, B"))["official"] == 1.0   # official: first capital A-D anywhere
    assert scored(bench, item, out("B"))["official"] == 0.0


# ----------------------------------------------------------------------------------------------- MMVU
def write_mmvu(root: Path) -> Path:
    (root / "MMVU").mkdir(parents=True, exist_ok=True)
    (root / "MMVU/validation.json").write_text(json.dumps([
        {"id": "mc-7", "question": "Which law explains the motion of the bikes?",
         "choices": {"A": "Ohm's law", "B": "Newton's first law", "C": "Hooke's law", "D": "Snell's law", "E": "Boyle's law"},
         "answer": "B", "question_type": "multiple-choice",
         "video": "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Mechanics/7.mp4",
         "metadata": {"subject": "Mechanics", "textbook": "t"}},
        {"id": "open-8", "question": "Name the law.", "answer": "Newton's first law", "question_type": "open-ended",
         "video": "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Mechanics/7.mp4",
         "metadata": {"subject": "Mechanics"}},
    ]))
    return root / "MMVU"


def test_mmvu_validation_json_multiple_choice_only(tmp_path, bikes_mp4):
    put_video(bikes_mp4, tmp_path / "MMVU/videos/Mechanics/7.mp4")
    bench = get_benchmark("mmvu")
    loaded = bench.load(write_mmvu(tmp_path), tmp_path / "MMVU")
    (item,) = loaded.items
    (line,) = loaded.problems            # without a judge the open-ended question is listed, with the reason
    assert "open-8" in line and "MMVU open-ended is scored by an LLM judge" in line and "--judge" in line
    judged = bench.load(tmp_path / "MMVU", tmp_path / "MMVU", judge=True)
    assert [it.id for it in judged.items] == ["mc-7", "open-8"] and not judged.problems
    open_item = judged.items[1]
    assert open_item.record.problem_type == "free-form" and open_item.meta["judge"] == "MMVU open-ended"
    assert item.record.path == "videos/Mechanics/7.mp4" and item.meta["discipline"] == "Science"
    assert item.record.options[1] == "B. Newton's first law"
    check_prompt_and_media(item, tmp_path / "MMVU")
    assert scored(bench, item, out("(B)"))["official"] == 1.0
    assert scored(bench, item, out("Newton's first law"))["official"] == 1.0   # option text
    assert scored(bench, item, out("Newton's first law"))["reference"] == 0.0  # reference: the letter only


# -------------------------------------------------------------------------------------------- MVBench
def write_mvbench(root: Path) -> Path:
    (root / "json").mkdir(parents=True, exist_ok=True)
    (root / "json/action_sequence.json").write_text(json.dumps([
        {"video": "ABC12.mp4", "question": "What did the person do first?",
         "candidates": ["Opened the door.", "Sat on the bed.", "Took the cup."], "answer": "Sat on the bed.",
         "start": 2.0, "end": 6.5},
        {"video": "ABC12.mp4", "question": "Broken", "candidates": ["x", "y"], "answer": "z"},
    ]))
    (root / "json/moving_count.json").write_text(json.dumps([
        {"video": "video_10000.mp4", "question": "How many metal objects enter the scene?",
         "candidates": ["1", "2", "3", "0"], "answer": "2"}]))
    return root / "json"


def test_mvbench_task_json_with_clipping(tmp_path, bikes_mp4):
    put_video(bikes_mp4, tmp_path / "video/star/Charades_v1_480/ABC12.mp4")
    put_video(bikes_mp4, tmp_path / "video/clevrer/video_validation/video_10000.mp4")
    bench = get_benchmark("mvbench")
    loaded = bench.load(write_mvbench(tmp_path), tmp_path / "video")
    assert len(loaded.items) == 2 and "not one of the candidates" in loaded.problems[0]
    seq, count = sorted(loaded.items, key=lambda it: it.id)
    assert seq.meta["task"] == "Action Sequence" and seq.answer == "B" and (seq.start, seq.end) == (2.0, 6.5)
    assert count.record.path == "clevrer/video_validation/video_10000.mp4" and count.start is None
    for item in loaded.items:
        check_prompt_and_media(item, tmp_path / "video")
    clip = load_item_media(seq, tmp_path / "video", SPEC, ImageSpec())
    assert 2.0 - 0.05 <= min(clip.timestamps) and max(clip.timestamps) <= 6.5 + 0.05
    full = load_item_media(count, tmp_path / "video", SPEC, ImageSpec())
    assert max(full.timestamps) > 9.0
    assert scored(bench, seq, out("(B) Sat on the bed."))["official"] == 1.0
    assert scored(bench, count, out("A"))["official"] == 0.0


# ---------------------------------------------------------------------------------------- TempCompass
def write_tempcompass(root: Path) -> Path:
    q = root / "questions"
    q.mkdir(parents=True, exist_ok=True)
    (q / "multi-choice.json").write_text(json.dumps({"1025": {"speed": [
        {"question": "How fast are the bikes moving?\nA. slowly\nB. fast\nC. not moving", "answer": "B. fast"}]}}))
    (q / "yes_no.json").write_text(json.dumps({"1025": {"direction": [
        {"question": "Are the bikes moving to the left?", "answer": "no"}]}}))
    (q / "caption_matching.json").write_text(json.dumps({"1025": {"order": [
        {"question": "Which caption matches the video better?\nCaption A: Bikes pass, then a car.\nCaption B: A car passes, then bikes.",
         "answer": "Caption A: Bikes pass, then a car."}]}}))
    (q / "captioning.json").write_text(json.dumps({"1025": {"action": [
        {"question": "Describe the video.", "answer": "x",
         "mc_question": "What are the people doing?\nA. riding bikes\nB. swimming", "mc_answer": "A. riding bikes"}]}}))
    return q


def test_tempcompass_four_formats(tmp_path, bikes_mp4):
    put_video(bikes_mp4, tmp_path / "videos/1025.mp4")
    bench = get_benchmark("tempcompass")
    loaded = bench.load(write_tempcompass(tmp_path), tmp_path / "videos")
    (captioning,) = loaded.problems   # listed, with its reason, never asked as a duplicate multi-choice question
    assert "captioning.json" in captioning and "LLM judge" in captioning
    items = {it.meta["format"]: it for it in loaded.items}
    assert set(items) == {"multi-choice", "yes_no", "caption_matching"}
    mc = items["multi-choice"]
    assert mc.record.problem == "How fast are the bikes moving?" and mc.answer == "B" and mc.meta["dimension"] == "speed"
    assert items["caption_matching"].record.options[1] == "B. A car passes, then bikes."
    for item in loaded.items:
        check_prompt_and_media(item, tmp_path / "videos")
    assert scored(bench, mc, out("B. fast"))["official"] == 1.0
    assert scored(bench, items["yes_no"], out("No, they move right."))["official"] == 1.0
    assert scored(bench, items["yes_no"], out("B"))["official"] == 0.0     # official: must start with yes / no
    assert scored(bench, items["yes_no"], out("yes"))["official"] == 0.0
    assert scored(bench, items["caption_matching"], out("Caption A"))["official"] == 1.0


# ------------------------------------------------------------------------------------------ VideoMMMU
def write_videommmu(root: Path) -> Path:
    write_parquet(root / "VideoMMMU/Perception/test-00000-of-00001.parquet", [
        {"id": "validation_Clinical_Medicine_3", "question": "Which organ is shown?",
         "options": ["Heart", "Lung", "Liver", "Kidney"], "answer": "B", "question_type": "multiple-choice",
         "link_selected": "https://example.org/v", "image": None}])
    write_parquet(root / "VideoMMMU/Adaptation/test-00000-of-00001.parquet", [
        {"id": "validation_Math_12", "question": "Compute the sum of the series.", "options": [],
         "answer": "1,250", "question_type": "open", "link_selected": "x", "image": None}])
    return root / "VideoMMMU"


def test_videommmu_tracks(tmp_path, bunny_mp4):
    put_video(bunny_mp4, tmp_path / "media/Medicine/validation_Clinical_Medicine_3.mp4")
    put_video(bunny_mp4, tmp_path / "media/Science/validation_Math_12.mp4")
    bench = get_benchmark("videommmu")
    loaded = bench.load(write_videommmu(tmp_path), tmp_path / "media")
    assert not loaded.problems
    items = {it.meta["track"]: it for it in loaded.items}
    perc, adapt = items["Perception"], items["Adaptation"]
    assert perc.record.options == ("A. Heart", "B. Lung", "C. Liver", "D. Kidney")
    assert perc.record.path == "Medicine/validation_Clinical_Medicine_3.mp4"
    assert adapt.record.problem_type == "numerical" and adapt.answer == "1250"
    for item in loaded.items:
        check_prompt_and_media(item, tmp_path / "media")
    assert scored(bench, perc, out("The answer is (B) Lung"))["official"] == 1.0
    assert scored(bench, perc, out("liver"))["official"] == 0.0
    assert scored(bench, adapt, out("The sum is 1250.0"))["official"] == 1.0
    assert scored(bench, adapt, out("1250"))["reference"] == 1.0


# --------------------------------------------------------------------------------- Video-R1 records
def write_videor1(root: Path) -> Path:
    recs = [{"problem_id": 1, "problem": "Which way do the bikes go?", "data_type": "video",
             "problem_type": "multiple choice", "options": ["A. left", "B. right"],
             "solution": "<answer>B</answer>", "path": "media/a.mp4", "temporal": True},
            {"problem_id": 2, "problem": "bad", "data_type": "video", "problem_type": "essay", "options": [],
             "solution": "<answer>x</answer>", "path": "media/a.mp4"}]
    (root / "eval.json").write_text(json.dumps(recs))
    return root / "eval.json"


def test_videor1_records_with_bad_record_reported(tmp_path, bikes_mp4):
    put_video(bikes_mp4, tmp_path / "media/a.mp4")
    bench = get_benchmark("videor1")
    loaded = bench.load(write_videor1(tmp_path), tmp_path)
    (item,) = loaded.items
    assert len(loaded.problems) == 1 and "problem_type" in loaded.problems[0]
    assert item.meta["temporal"] == "order-dependent"
    check_prompt_and_media(item, tmp_path)
    r = scored(bench, item, out("B"))
    assert r["official"] == r["reference"] == 1.0 and r["format"] == 1.0
    assert scored(bench, item, "B. right")["official"] == 0.0   # reference: exact letter



# --------------------------------------------------------------------------- the shared load loop, registry
class Toy(Benchmark):
    """An adapter with no `name`, so it is not registered: drives `Benchmark.load` through every outcome."""

    patterns = ("*.jsonl",)

    def rows(self, file):
        if file.stem == "broken":
            raise BadFile(f"file {file}: unreadable on purpose")
        return read_rows(file)

    def row_to_item(self, row, source):
        if row.get("skip"):
            raise SkipRow("row(s) skipped on purpose")
        require(row, ["q"])
        if row["q"] == "?":
            raise BadRow("not a question", "q")
        return self.item(source, problem=row["q"], problem_type="multiple choice", answer="A", path="v.mp4",
                         options=row.get("options", []))


def test_base_load_loop_reports_every_bad_row_and_skip(tmp_path):
    (tmp_path / "broken.jsonl").write_text("{}\n")
    (tmp_path / "qs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "q": "Which?", "options": ["A. x", "B. y"]},
        {"id": "b", "skip": True}, {"skip": True},
        {"q": None},
        {"id": 5, "q": "?"},
        {"id": "c", "q": "No options?"},
    ]))
    loaded = Toy().load(tmp_path)
    assert [it.id for it in loaded.items] == ["a"] and loaded.items[0].record.solution == "<answer>A</answer>"
    broken, missing, bad, invalid, skipped = loaded.problems
    assert broken.endswith("broken.jsonl: unreadable on purpose")
    assert missing.endswith("qs.jsonl, record 'qs-3': missing field(s) ['q']")
    assert bad.endswith("qs.jsonl, record 5: not a question")
    assert "record 'c', field 'options'" in invalid          # the record parser's own error, as it is
    assert skipped.endswith("qs.jsonl: 2 row(s) skipped on purpose")


def test_registry_holds_the_builtin_adapters_and_refuses_a_second_name():
    assert BENCHMARKS.names() == ["mmvu", "mvbench", "tempcompass", "videomme", "videommmu", "videor1", "vsibench"]
    assert all(BENCHMARKS[n].name == n for n in BENCHMARKS)
    with pytest.raises(ValueError, match="already registered"):
        type("Impostor", (Benchmark,), {"name": "vsibench"})


# The data-file writers above, by benchmark name (tests/test_prompt_snapshots.py renders their prompts).
FIXTURES = {"vsibench": write_vsibench, "videomme": write_videomme, "mmvu": write_mmvu, "mvbench": write_mvbench,
            "tempcompass": write_tempcompass, "videommmu": write_videommmu, "videor1": write_videor1}
