"""Rows and folders in the shapes Video-R1 and the benchmarks publish them (field names and value styles of the
dataset cards, the reference repo's eval JSONs and the lmms-eval task folders), built here as small fixtures.
Each test asserts the number of loaded questions and the breakdown keys; `videor1 data download` is run
against a local folder laid out like the hub snapshot (the one download call is patched; no network)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from test_eval_benchmarks import SPEC, put_video, write_parquet
from videor1.data.check import check_dataset
from videor1.data.download import unpack_all
from videor1.data.records import read_records
from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.report import render_report
from videor1.data.media import ImageSpec
from videor1.evaluate.runner import load_item_media, score_row, summarize


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def answered(bench, items, text="<answer>A</answer>"):
    return [score_row(bench, {**it.row(), "output": text, "error": None}) for it in items]


# ---------------------------------------------------------------------------------- Video-R1-260k
R1_ROWS = [
    {"problem_id": 1, "problem": "How many cups are on the table?", "data_type": "image", "problem_type": "numerical",
     "options": [], "process": "", "solution": "<answer>3</answer>", "path": "./CLEVR-Math/images/a.png",
     "data_source": "CLEVR-Math"},
    {"problem_id": 2, "problem": "What happens after the man opens the door?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. He sits", "B. He leaves"], "process": "  ",
     "solution": "<answer>B</answer>", "path": "./LLaVA-Video-178K/v/b.mp4", "data_source": "LLaVA-Video-178K"},
    {"problem_id": 3, "problem": "Read the sign.", "data_type": "image", "problem_type": "OCR", "options": [],
     "process": "<think>it says stop</think>", "solution": "<answer>STOP</answer>", "path": "./TextVQA/c.jpg",
     "data_source": "TextVQA"},
]


def test_video_r1_260k_rows_all_load_and_check_lists_missing_media_by_source(tmp_path):
    data = write_json(tmp_path / "Video-R1-260k.json", R1_ROWS)
    records, errors = read_records(data)
    assert len(records) == 3 and not errors
    assert records[0].process is None and records[1].process is None and records[2].process.startswith("<think>")
    lines: list[str] = []
    assert check_dataset(data, tmp_path, decode=False, echo=lines.append) == 3
    assert "missing media by source: CLEVR-Math: 1, LLaVA-Video-178K: 1, TextVQA: 1" in lines


# ------------------------------------------------------------------------- Video-R1's eval_vsibench.json
EVAL_VSI = [
    {"problem_id": 1, "problem": "How many chair(s) are in this room?", "data_type": "video",
     "problem_type": "regression", "options": None, "process": "", "solution": "<answer>4</answer>",
     "path": "./Evaluation/vsi_bench/arkitscenes/41069025.mp4", "data_source": "vsibench",
     "original_question_type": "object_counting"},
    {"problem_id": 2, "problem": "Is the lamp to my left or right?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. left", "B. right"], "process": "",
     "solution": "<answer>A</answer>", "path": "./Evaluation/vsi_bench/scannet/scene0011_00.mp4",
     "data_source": "vsibench", "original_question_type": "object_rel_direction_easy"},
    {"problem_id": 3, "problem": "Is the lamp behind me?", "data_type": "video", "problem_type": "multiple choice",
     "options": ["A. yes", "B. no"], "process": "", "solution": "<answer>A</answer>",
     "path": "./Evaluation/vsi_bench/scannet/scene0011_00.mp4", "data_source": "vsibench",
     "original_question_type": "object_rel_direction_hard"},
]


def test_video_r1_eval_json_gets_the_vsibench_breakdowns_with_bench_videor1(tmp_path):
    bench = get_benchmark("videor1")
    loaded = bench.load(write_json(tmp_path / "eval_vsibench.json", EVAL_VSI))
    assert len(loaded.items) == 3 and not loaded.problems
    rows = answered(bench, loaded.items, "<answer>A</answer>")
    out = bench.aggregate(rows)
    assert set(out["breakdowns"]) == {"task", "relative direction level", "scene source", "problem type"}
    assert set(out["breakdowns"]["task"]) == {"object_counting", "object_rel_direction"}
    assert out["overall"] == 0.5           # counting 0, relative direction = mean(easy 1, hard 1) = 1
    assert out["headline_rule"].startswith("vsibench")


def test_video_r1_eval_json_read_by_the_vsibench_adapter(tmp_path):
    bench = get_benchmark("vsibench")
    loaded = bench.load(write_json(tmp_path / "eval_vsibench.json", EVAL_VSI))
    assert len(loaded.items) == 3 and not loaded.problems
    count = loaded.items[0]
    assert count.meta["task"] == "object_counting" and count.meta["dataset"] == "arkitscenes"
    assert count.record.path == "./Evaluation/vsi_bench/arkitscenes/41069025.mp4" and count.answer == "4"


# ------------------------------------------------- Video-R1's other eval JSONs, aggregated by their benchmark
def eval_row(pid: int, problem: str, options: list[str] | None, answer: str, path: str, source: str,
             problem_type: str = "multiple choice", **extra) -> dict:
    """One row as the reference repo's `src/r1-v/Evaluation/eval_*.json` state it."""
    return {"problem_id": pid, "problem": problem, "data_type": "video", "problem_type": problem_type,
            "options": options, "process": "", "solution": f"<answer>{answer}</answer>", "path": path,
            "data_source": source, **extra}


AB = ["A. left", "B. right"]
EVAL_JSONS = {
    "eval_mvbench.json": ([
        eval_row(1, "What did the person do first?", AB, "A", "./Evaluation/MVBench/star/Charades_v1_480/ZS9XR.mp4",
                 "MVBench", original_question_type="Action Sequence"),
        eval_row(2, "How many objects enter?", AB, "B", "./Evaluation/MVBench/clevrer/video_validation/v1.mp4",
                 "MVBench", original_question_type="Moving Count"),
        eval_row(3, "Which direction?", AB, "A", "./Evaluation/MVBench/clevrer/video_validation/v2.mp4",
                 "MVBench", original_question_type="Moving Count")],
        "mvbench", {"task"}, ("task", {"Action Sequence": 1, "Moving Count": 2})),
    "eval_videomme.json": ([
        eval_row(1, "What is shown?", AB, "A", "./Evaluation/VideoMME/fFjv93ACGo8.mp4", "VideoMME",
                 original_question_type="short"),
        eval_row(2, "When does it end?", AB, "B", "./Evaluation/VideoMME/JcRl2hY3Ns4.mp4", "VideoMME",
                 original_question_type="long")],
        "videomme", {"duration", "domain", "task type"}, ("duration", {"short": 1, "long": 1})),
    "eval_mmvu.json": ([
        eval_row(1, "Which algorithm?", AB, "A", "./Evaluation/MMVU/videos/Computer_Science/12.mp4", "MMVU"),
        eval_row(2, "Which organ?", AB, "B", "./Evaluation/MMVU/videos/Clinical_Medicine/3.mp4", "MMVU")],
        "mmvu", {"discipline", "subject"}, ("discipline", {"Engineering": 1, "Healthcare": 1})),
    "eval_videommmu.json": ([
        eval_row(1, "Which bond?", AB, "A", "./Evaluation/VideoMMMU/Science/validation_Chemistry_1.mp4",
                 "VideoMMMU", original_question_type="Comprehension"),
        eval_row(2, "Compute the force in N.", None, "3.5", "./Evaluation/VideoMMMU/Science/validation_Physics_2.mp4",
                 "VideoMMMU", problem_type="numerical", original_question_type="Adaptation")],
        "videommmu", {"track", "discipline"}, ("track", {"Comprehension": 1, "Adaptation": 1})),
    "eval_tempcompass.json": ([
        eval_row(1, "How fast?", AB, "A", "./Evaluation/TempCompass/videos/1025.mp4", "TempCompass",
                 original_question_type="speed"),
        eval_row(2, "Which direction?", AB, "B", "./Evaluation/TempCompass/videos/2033.mp4", "TempCompass",
                 original_question_type="direction")],
        "tempcompass", {"format", "dimension", "format x dimension"}, ("dimension", {"speed": 1, "direction": 1})),
}


def test_each_video_r1_eval_json_gets_its_benchmarks_breakdowns_with_bench_videor1(tmp_path):
    bench = get_benchmark("videor1")
    for name, (rows, owner, keys, (key, groups)) in EVAL_JSONS.items():
        loaded = bench.load(write_json(tmp_path / name, rows))
        assert len(loaded.items) == len(rows) and not loaded.problems, name
        assert {it.meta["bench"] for it in loaded.items} == {owner}, name
        scored_rows = answered(bench, loaded.items, "<answer>A</answer>")
        out = bench.aggregate(scored_rows)
        own = get_benchmark(owner).aggregate(scored_rows)       # what the benchmark's own adapter gives
        assert out["overall"] == own["overall"] and out["headline_rule"] == f"{owner}: {get_benchmark(owner).headline}"
        assert set(out["breakdowns"]) == keys | {"problem type"}, name
        assert {k: v["n"] for k, v in out["breakdowns"][key].items()} == groups, name
        assert sum(v["n"] for v in out["breakdowns"][key].values()) == len(rows)   # nothing dropped


def test_mvbench_headline_from_its_eval_json_is_the_mean_of_task_accuracies(tmp_path):
    bench = get_benchmark("videor1")
    rows, *_ = EVAL_JSONS["eval_mvbench.json"]
    out = bench.aggregate(answered(bench, bench.load(write_json(tmp_path / "eval_mvbench.json", rows)).items))
    assert out["overall"] == (1.0 + 0.5) / 2                    # tasks 1/1 and 1/2, not the item mean 2/3


def test_eval_json_benchmark_detected_from_the_file_name_when_data_source_is_generic(tmp_path):
    rows = [{**r, "data_source": "eval"} for r in EVAL_JSONS["eval_videommmu.json"][0]]
    loaded = get_benchmark("videor1").load(write_json(tmp_path / "eval_videommmu.json", rows))
    assert {it.meta["bench"] for it in loaded.items} == {"videommmu"}
    assert {it.meta["discipline"] for it in loaded.items} == {"Science"}
    loaded = get_benchmark("videor1").load(write_json(tmp_path / "my_set.json", rows))
    assert all("bench" not in it.meta for it in loaded.items)   # no rule applies: flat summary
    out = get_benchmark("videor1").aggregate(answered(get_benchmark("videor1"), loaded.items))
    assert "source" in out["breakdowns"] and "headline_rule" not in out


# ----------------------------------------------------------------------- VSI-Bench folder as published
def test_vsibench_folder_with_subsets_loads_each_question_once(tmp_path):
    base = {"dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
            "question": "How many chairs?", "options": None, "ground_truth": "4"}
    rows = [{**base, "id": i} for i in range(5)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_parquet(tmp_path / "test_debiased.parquet", rows[:3])
    write_parquet(tmp_path / "test_pruned.parquet", rows[:4])
    loaded = get_benchmark("vsibench").load(tmp_path)
    assert len(loaded.items) == 5
    assert len(loaded.problems) == 2 and all("published subset" in p for p in loaded.problems)
    alone = get_benchmark("vsibench").load(tmp_path / "test_pruned.parquet")
    assert len(alone.items) == 4 and not alone.problems


def test_duplicate_ids_across_files_are_refused_naming_both_files(tmp_path):
    base = {"dataset": "scannet", "scene_name": "s", "question_type": "object_counting", "question": "n?",
            "options": None, "ground_truth": "2", "id": 9}
    (tmp_path / "a.jsonl").write_text(json.dumps(base) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(base) + "\n")
    loaded = get_benchmark("vsibench").load(tmp_path)
    assert len(loaded.items) == 1
    (problem,) = loaded.problems
    assert "b.jsonl" in problem and "a.jsonl" in problem and "duplicate id" in problem


# ------------------------------------------------------------------------- TempCompass original release
def write_tempcompass_release(root: Path) -> Path:
    q = root / "questions"
    write_json(q / "multi-choice.json", {"v1": {"speed": [
        {"question": "How fast?\nA. slowly\nB. fast", "answer": "B. fast"},
        {"question": "Is it sped up?\nA. normal\nB. sped up\nC. slowed", "answer": "A. normal"}]}})
    write_json(q / "yes_no.json", {"v1": {"speed": [{"question": "Is it fast?", "answer": "yes"}]}})
    write_json(q / "caption_matching.json", {"v1": {"direction": [
        {"question": "Which caption?\nCaption A: Left.\nCaption B: Right.", "answer": "Caption B: Right."},
        {"question": "Which sentence?\nOption 1: Left.\nOption 2: Right.", "answer": "Option 1: Left."}]}})
    write_json(q / "captioning.json", {"v1": {"speed": [
        {"question": "Which caption fits?\nOption 1: A fast car.\nOption 2: A slow car.", "answer": "Option 1: A fast car."}]}})
    return q


def test_tempcompass_release_every_question_loaded_or_listed(tmp_path):
    bench = get_benchmark("tempcompass")
    loaded = bench.load(write_tempcompass_release(tmp_path))
    assert len(loaded.items) == 5 and len(loaded.problems) == 1   # 6 questions: 5 evaluated, captioning listed
    option = [it for it in loaded.items if it.meta.get("answer_raw") == "Option 1: Left."][0]
    assert option.record.options == ("A. Left.", "B. Right.") and option.answer == "A"
    rows = answered(bench, loaded.items)
    assert set(bench.aggregate(rows)["breakdowns"]) == {"format", "dimension", "format x dimension"}
    assert set(bench.aggregate(rows)["breakdowns"]["format"]) == {"multi-choice", "yes_no", "caption_matching"}


# ------------------------------------------------------------------------- MVBench `video` revision
MVB_SEQ = [{"video": "ZS9XR.mp4", "question": "What happened after the person took the food?",
            "candidates": ["Ate the medicine.", "Put down the cup.", "Took the towel."], "answer": "Put down the cup.",
            "start": 2.0, "end": 6.5},
           {"video": "3MSZA.mp4", "question": "What happened before the person opened the bag?",
            "candidates": ["Sat on the sofa.", "Closed the door."], "answer": "Sat on the sofa.", "start": 1.0, "end": 4.0}]
MVB_POSE = [{"video": "S001C001P001R001A001_rgb.avi", "question": "What is the pose?",
             "candidates": ["drink water", "eat meal"], "answer": "drink water"}]
MVB_COUNT = [{"video": "video_10000.mp4", "question": "How many metal objects enter the scene?",
              "candidates": ["1", "2", "3", "0"], "answer": "2"}]


def write_mvbench_json(root: Path) -> Path:
    write_json(root / "json/action_sequence.json", MVB_SEQ)
    write_json(root / "json/fine_grained_pose.json", MVB_POSE)
    write_json(root / "json/moving_count.json", MVB_COUNT)
    return root / "json"


def test_mvbench_video_revision_uses_its_folders_and_never_clips_twice(tmp_path, bikes_mp4):
    media = tmp_path / "mvbench_video"                  # the `video` branch: already-cut clips, other folders
    put_video(bikes_mp4, media / "star/Charades_segment/ZS9XR.mp4")
    put_video(bikes_mp4, media / "nturgbd_convert/S001C001P001R001A001_rgb.mp4")   # converted from .avi
    put_video(bikes_mp4, media / "clevrer/video_validation/video_10000.mp4")
    bench = get_benchmark("mvbench")
    loaded = bench.load(write_mvbench_json(tmp_path), media)
    assert len(loaded.items) == 4 and not loaded.problems
    by_video = {it.meta["video"]: it for it in loaded.items}
    seq, missing = by_video["ZS9XR.mp4"], by_video["3MSZA.mp4"]
    assert seq.record.path == "star/Charades_segment/ZS9XR.mp4" and (seq.start, seq.end) == (None, None)
    assert missing.record.path == "star/Charades_segment/3MSZA.mp4" and missing.start is None
    assert by_video["S001C001P001R001A001_rgb.avi"].record.path == "nturgbd_convert/S001C001P001R001A001_rgb.mp4"
    assert by_video["video_10000.mp4"].record.path == "clevrer/video_validation/video_10000.mp4"
    assert {it.meta["layout"] for it in loaded.items} == {"video", "main"}
    clip = load_item_media(seq, media, SPEC, ImageSpec())
    assert max(clip.timestamps) > 9.0                   # the whole (already cut) clip, not start..end again
    rows = answered(bench, loaded.items, "<answer>(A) x</answer>")
    out = bench.aggregate(rows)
    assert set(out["breakdowns"]) == {"task"}
    assert set(out["breakdowns"]["task"]) == {"Action Sequence", "Fine-grained Pose", "Moving Count"}


def test_mvbench_main_revision_clips_by_start_end(tmp_path, bikes_mp4):
    media = tmp_path / "video"                          # the main branch: full videos, clipped here
    put_video(bikes_mp4, media / "star/Charades_v1_480/ZS9XR.mp4")
    put_video(bikes_mp4, media / "star/Charades_segment/ZS9XR.mp4")   # both unpacked: the main one wins
    loaded = get_benchmark("mvbench").load(write_mvbench_json(tmp_path), media)
    assert len(loaded.items) == 3          # the Fine-grained Pose question: NTU videos not there, listed
    (ntu,) = loaded.problems
    assert "fine_grained_pose" in ntu and "MVBench_videos_ntu.txt" in ntu and "removed" in ntu
    seq = next(it for it in loaded.items if it.meta["video"] == "ZS9XR.mp4")
    assert seq.record.path == "star/Charades_v1_480/ZS9XR.mp4" and (seq.start, seq.end) == (2.0, 6.5)
    assert seq.meta["layout"] == "main"
    (media / "nturgbd").mkdir()            # a user who obtained the NTU videos gets the question back
    loaded = get_benchmark("mvbench").load(write_mvbench_json(tmp_path), media)
    pose = next(it for it in loaded.items if it.meta["task"] == "Fine-grained Pose")
    assert pose.record.path == "nturgbd/S001C001P001R001A001_rgb.avi" and not loaded.problems


# ------------------------------------------------------------------------------------ MMVU disciplines
def test_mmvu_subjects_spelled_with_spaces_get_their_discipline(tmp_path):
    base = {"question": "Q?", "choices": {"A": "x", "B": "y"}, "answer": "A", "question_type": "multiple-choice",
            "video": "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/Computer_Science/1.mp4"}
    rows = [{**base, "id": "1", "metadata": {"subject": "Computer Science"}},
            {**base, "id": "2", "metadata": {"subject": "Clinical Medicine"}},
            {**base, "id": "3", "metadata": {"subject": "Underwater Basket Weaving"}}]
    loaded = get_benchmark("mmvu").load(write_json(tmp_path / "validation.json", rows))
    assert [it.meta["discipline"] for it in loaded.items] == ["Engineering", "Healthcare", "unlisted subject"]


# ----------------------------------------------------------------------------- Video-MME file names
def test_videomme_finds_upper_case_and_mkv_videos(tmp_path):
    base = {"video_id": "001", "duration": "short", "domain": "Knowledge", "question": "Q?",
            "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "A"}
    data = write_parquet(tmp_path / "videomme/test.parquet", [
        {**base, "videoID": "up", "question_id": "1"}, {**base, "videoID": "mk", "question_id": "2"},
        {**base, "videoID": "gone", "question_id": "3"}])
    media = tmp_path / "data"
    media.mkdir()
    (media / "up.MP4").write_bytes(b"x")
    (media / "mk.mkv").write_bytes(b"x")
    loaded = get_benchmark("videomme").load(data, media)
    assert [it.record.path for it in loaded.items] == ["up.MP4", "mk.mkv", "gone.mp4"]


# ------------------------------------------------------------------------------ Video-MMMU options
def test_videommmu_row_with_options_is_multiple_choice_whatever_its_type(tmp_path):
    data = write_parquet(tmp_path / "Comprehension/test.parquet", [
        {"id": "validation_Chemistry_1", "question": "Which bond?", "options": ["ionic", "bonds", "metallic"],
         "answer": "B", "question_type": "multiple_choice"}])
    bench = get_benchmark("videommmu")
    (item,) = bench.load(data).items
    assert item.record.problem_type == "multiple choice"
    assert answered(bench, [item], "<answer>I think the answer is about bonds</answer>")[0]["official"] == 1.0
    assert answered(bench, [item], "<answer>ionic</answer>")[0]["official"] == 0.0


# --------------------------------------------------------------------- unusable entries in the outputs
def test_unusable_entries_are_listed_in_scores_and_report(tmp_path):
    bench = get_benchmark("tempcompass")
    loaded = bench.load(write_tempcompass_release(tmp_path))
    summary = summarize(bench, answered(bench, loaded.items), {}, loaded.problems)
    assert summary["unusable"] == loaded.problems
    report = render_report(summary)
    assert "## Not evaluated" in report and "captioning.json" in report


def test_tempcompass_lmms_lab_parquets_list_captioning_rows_not_duplicate_them(tmp_path):
    root = tmp_path / "TempCompass"                     # lmms-lab/TempCompass: one parquet folder per format
    write_parquet(root / "multi-choice/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "How fast?\nA. slowly\nB. fast", "answer": "B. fast", "dim": "speed"},
        {"video_id": "1025", "question": "Which way?\nA. left\nB. right", "answer": "A. left", "dim": "direction"}])
    write_parquet(root / "yes_no/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "Is it fast?", "answer": "yes", "dim": "speed"}])
    write_parquet(root / "caption_matching/test-00000-of-00001.parquet", [
        {"video_id": "1025", "question": "Which caption?\nCaption A: Left.\nCaption B: Right.",
         "answer": "Caption B: Right.", "dim": "direction"}])
    caption_q = "Describe the speed of the car in the video."
    write_parquet(root / "captioning/test-00000-of-00001.parquet", [   # repeated once per multi-choice question
        {"video_id": "1025", "question": caption_q, "answer": "", "dim": "speed",
         "mc_question": "How fast?\nA. slowly\nB. fast", "mc_answer": "B. fast"},
        {"video_id": "1025", "question": caption_q, "answer": "", "dim": "direction",
         "mc_question": "Which way?\nA. left\nB. right", "mc_answer": "A. left"}])
    bench = get_benchmark("tempcompass")
    loaded = bench.load(root)
    assert len(loaded.items) == 4                       # 2 multi-choice + 1 yes_no + 1 caption_matching
    assert {it.meta["format"] for it in loaded.items} == {"multi-choice", "yes_no", "caption_matching"}
    assert len({(it.record.problem, it.record.options) for it in loaded.items}) == 4   # no captioning duplicates
    listed = [p for p in loaded.problems if "captioning" in p]
    assert len(listed) == 2 and len(loaded.problems) == 2 and all("LLM judge" in p for p in listed)
    summary = summarize(bench, answered(bench, loaded.items), {}, loaded.problems)
    assert summary["unusable"] == listed
    report = render_report(summary)
    assert all(line in report for line in listed)
    assert set(bench.aggregate(answered(bench, loaded.items))["breakdowns"]["format"]) == {
        "multi-choice", "yes_no", "caption_matching"}


# -------------------------------------------------------------------------------- data download
def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_split_zip_parts_are_joined_unpacked_once_and_checked(tmp_path):
    """Split archives (`x.zip.001`, ...) are joined in order and unpacked once; the published Video-R1-data
    layout (folders of independent part zips) is downloaded in tests/test_hub_layouts.py."""
    out = tmp_path / "r1"
    write_json(out / "Video-R1-260k.json", R1_ROWS)
    blob = zip_bytes({"CLEVR-Math/images/a.png": b"png", "TextVQA/c.jpg": b"jpg"})
    (out / "images.zip.001").write_bytes(blob[:40])
    (out / "images.zip.002").write_bytes(blob[40:])
    (out / "LLaVA-Video-178K.zip").write_bytes(zip_bytes({"LLaVA-Video-178K/v/b.mp4": b"mp4"}))
    done = unpack_all(out, echo=lambda s: None)
    assert [p.name for p in done] == ["LLaVA-Video-178K.zip", "images.zip"]
    assert (out / "CLEVR-Math/images/a.png").read_bytes() == b"png" and (out / "LLaVA-Video-178K/v/b.mp4").is_file()
    assert check_dataset(out / "Video-R1-260k.json", out, decode=False, echo=lambda s: None) == 0
    assert unpack_all(out, echo=lambda s: None) == []          # markers: nothing unpacked twice
