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

Official scoring: the option letter the answer starts with ("(B) ..." / "B. ...") against the truth's.
Headline: the mean of the per-task accuracies (20 tasks, unweighted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadFile, BadRow, Benchmark, Item, Row, RowSource, bad_entry, lettered, read_json, require
from videor1.evaluate.scoring import LETTERS, answer_span, group_scores, leading_letter, mean, meta_key

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
            start=seconds(row, "start"), end=seconds(row, "end"), meta={"task": task})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        letters = LETTERS[: len(row.get("options") or [])]
        return 1.0 if leading_letter(answer_span(output), letters) == str(row["answer"]) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        tasks = group_scores(rows, meta_key("task"))
        return {"overall": mean(v["score"] for v in tasks.values()), "n": len(rows),
                "breakdowns": {"task": tasks}}
