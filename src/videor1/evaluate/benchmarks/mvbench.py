"""`mvbench`: MVBench (OpenGVLab/MVBench), 20 temporal tasks x 200 questions.

Files: the released per-task JSONs (`json/<task>.json`; pass the folder or one file). Each is a list of
`{"video", "question", "candidates": [...], "answer": <the correct candidate's text>}`, plus `start` /
`end` seconds for the tasks whose question covers only part of the video. The option letters follow the
order of `candidates`; the ground-truth letter is the position of `answer` among them.
Media: `<media_root>/<task folder>/<video>`, with media_root the release's `video/` folder and the task
folders of the release (table `TASKS` below, from the benchmark's data list). A JSON whose name is not a
known task is read as a task of that name with videos directly under media_root.
Clipping: items with `start`/`end` are decoded from that window only (`load_video(start=, end=)`).
Episodic Reasoning ships frame folders rather than videos; those items become error items (counted)
until frame folders are supported by `videor1.data.media`.

Two media layouts, decided per task by the folders present under media_root (`locate`):
* main revision (`TASKS`): full videos, e.g. `star/Charades_v1_480/`, clipped by `start`/`end`.
* `video` revision (the branch lmms-eval reads, `VIDEO_REVISION_FOLDERS`): other folder names
  (`star/Charades_segment/`, `sta/sta_video_segment/`, `tvqa/video_fps3_hq_segment/`, `nturgbd_convert/`,
  `ssv2_video_mp4/`) holding clips already cut to the question's window, so `start`/`end` are dropped
  (never applied twice); where the row's file name is absent there, `<stem>.mp4` is tried (converted files).
Rule: a task whose main-revision folder exists under media_root uses the main layout; else one whose
`video`-revision folder exists uses that; else the main layout (the item then becomes a counted
missing-media error naming the main path). Tasks whose folder is the same in both revisions have no
`start`/`end` in either. The layout used is in each item's meta (`layout`).
June-2024 replacements: `video/data0613.zip` holds the videos of the questions replaced in June 2024 under
`data0613/<task folder>/`; a video absent from its task folder is looked for there (`layout` "data0613").
NTU RGB+D: the Fine-grained Pose videos (200 questions) were removed upstream for licence reasons; the
release lists them in `video/MVBench_videos_ntu.txt` (get them from the NTU RGB+D authors). When neither
`nturgbd/` nor `nturgbd_convert/` is under media_root, each such question is listed as not evaluated with
that reason (not counted as a decode error).

Official scoring: MVBench's `check_ans` against the truth "(X) text", on the answer span: the lower-cased
first space-separated token must hold a letter a-g and, dots dropped, be part of "(x)" or contain it (so
"b. right", "(B)" and "B)" count; "Because" does not).
Headline: the mean of the per-task accuracies (20 tasks, unweighted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadFile, BadRow, Benchmark, Item, Row, RowSource, bad_entry, lettered, read_json, require
from videor1.evaluate.scoring import LETTERS, answer_span, group_scores, mean, meta_key, mvbench_correct

# json stem -> (task name, video folder under the release's video/)
TASKS: dict[str, tuple[str, str]] = {
    "action_sequence": ("Action Sequence", "star/Charades_v1_480/"),
    "action_prediction": ("Action Prediction", "star/Charades_v1_480/"),
    "action_antonym": ("Action Antonym", "ssv2_video/"),
    "fine_grained_action": ("Fine-grained Action", "Moments_in_Time_Raw/videos/"),
    "unexpected_action": ("Unexpected Action", "FunQA_test/test/"),
    "object_existence": ("Object Existence", "clevrer/video_validation/"),
    "object_interaction": ("Object Interaction", "star/Charades_v1_480/"),
    "object_shuffle": ("Object Shuffle", "perception/videos/"),
    "moving_direction": ("Moving Direction", "clevrer/video_validation/"),
    "action_localization": ("Action Localization", "sta/sta_video/"),
    "scene_transition": ("Scene Transition", "scene_qa/video/"),
    "action_count": ("Action Count", "perception/videos/"),
    "moving_count": ("Moving Count", "clevrer/video_validation/"),
    "moving_attribute": ("Moving Attribute", "clevrer/video_validation/"),
    "state_change": ("State Change", "perception/videos/"),
    "fine_grained_pose": ("Fine-grained Pose", "nturgbd/"),
    "character_order": ("Character Order", "perception/videos/"),
    "egocentric_navigation": ("Egocentric Navigation", "vlnqa/"),
    "episodic_reasoning": ("Episodic Reasoning", "tvqa/frames_fps3_hq/"),
    "counterfactual_inference": ("Counterfactual Inference", "clevrer/video_validation/"),
}

# json stem -> video folder of the `video` revision where it differs from the main one (lmms-eval's data list)
VIDEO_REVISION_FOLDERS: dict[str, str] = {
    "action_sequence": "star/Charades_segment/",
    "action_prediction": "star/Charades_segment/",
    "object_interaction": "star/Charades_segment/",
    "action_localization": "sta/sta_video_segment/",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment/",
    "fine_grained_pose": "nturgbd_convert/",
    "action_antonym": "ssv2_video_mp4/",
}


def task_layout(media_root: Path, task_file: str) -> str:
    """"main" or "video": the revision whose folder for this task exists under media_root (main first)."""
    main = TASKS.get(task_file, ("", ""))[1]
    cut = VIDEO_REVISION_FOLDERS.get(task_file)
    if cut is None or (main and (Path(media_root) / main).is_dir()):
        return "main"
    return "video" if (Path(media_root) / cut).is_dir() else "main"


def video_revision_path(media_root: Path, folder: str, video: str) -> str:
    """`<folder><video>`, or `<folder><stem>.mp4` when only that converted file exists."""
    path = f"{folder}{video}"
    converted = f"{folder}{Path(video).with_suffix('.mp4').as_posix()}"
    if not (Path(media_root) / path).exists() and (Path(media_root) / converted).is_file():
        return converted
    return path


REPLACEMENTS = "data0613/"   # the June-2024 replacement videos, `data0613/<task folder>/<video>`
NTU_TASK = "fine_grained_pose"
NTU_REASON = ("NTU RGB+D videos were removed from the MVBench release (licence); the files are listed in "
              "video/MVBench_videos_ntu.txt: request them from the NTU RGB+D authors and unpack them into nturgbd/")


def replacement_path(media_root: Path, path: str) -> str:
    """`data0613/<path>` when only that June-2024 replacement file exists, else `path`."""
    root = Path(media_root)
    if not (root / path).exists() and (root / REPLACEMENTS / path).is_file():
        return f"{REPLACEMENTS}{path}"
    return path


def seconds(row: Row, key: str) -> float | None:
    """`row[key]` as seconds, None when absent; BadRow naming the field when it is not a number."""
    value = row.get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError) as exc:
        raise BadRow(str(exc), key) from None


class MVBench(Benchmark):
    name = "mvbench"
    description = "MVBench: 20 temporal tasks, multiple choice, clipped by start/end where given"
    headline = "mean of per-task accuracies"
    patterns = ("*.json",)

    def rows(self, file: Path) -> list[Row]:
        entries = read_json(file)
        if not isinstance(entries, list):
            raise BadFile(bad_entry(file, 0, None, "expected a JSON list of questions"))
        return entries

    def row_id(self, row: Row, file: Path, index: int) -> str:
        return f"{file.stem}/{index}"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        task, folder = TASKS.get(source.file.stem, (source.file.stem, ""))
        require(row, ["video", "question", "candidates", "answer"])
        candidates = [str(c) for c in row["candidates"]]
        if str(row["answer"]) not in candidates:
            raise BadRow("answer is not one of the candidates", "answer")
        return self.item(
            source, problem=str(row["question"]), problem_type="multiple choice", options=lettered(candidates),
            answer=LETTERS[candidates.index(str(row["answer"]))], path=f"{folder}{row['video']}",
            start=seconds(row, "start"), end=seconds(row, "end"),
            meta={"task": task, "task_file": source.file.stem, "video": str(row["video"]), "layout": "main"})

    def locate(self, item: Item, media_root: Path) -> Item:
        """The item in the layout its task has under media_root: the `video` revision's already-cut clip
        (no start/end) when only that revision's folder is there, else the main path or its June-2024
        replacement. BadRow for a Fine-grained Pose question when the NTU videos are not there."""
        task_file = str(item.meta.get("task_file", ""))
        root = Path(media_root)
        if task_file == NTU_TASK and not any((root / d).is_dir() for d in ("nturgbd", "nturgbd_convert")):
            raise BadRow(NTU_REASON, "video")
        if task_layout(media_root, task_file) != "video":
            path = replacement_path(media_root, item.record.path)
            if path == item.record.path:
                return item
            return replace(item, record=replace(item.record, path=path), meta={**item.meta, "layout": "data0613"})
        path = video_revision_path(media_root, VIDEO_REVISION_FOLDERS[task_file], str(item.meta["video"]))
        return replace(item, record=replace(item.record, path=path), start=None, end=None,
                       meta={**item.meta, "layout": "video"})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        return 1.0 if mvbench_correct(answer_span(output), str(row["answer"])) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        tasks = group_scores(rows, meta_key("task"))
        return {"overall": mean(v["score"] for v in tasks.values()), "n": len(rows),
                "breakdowns": {"task": tasks}}
