"""`vsibench`: VSI-Bench (nyu-visionx/VSI-Bench), 5,130 questions on 288 indoor-scene videos.

Files: the released parquet (or a JSON / JSONL export of it); one row per question with `id`, `dataset`
(arkitscenes | scannet | scannetpp), `scene_name`, `question_type`, `question`, `options` (a list of
"A. ..." strings, null for numerical questions) and `ground_truth` (the option letter, or a number).
Media: `<media_root>/<dataset>/<scene_name>.mp4`, the layout of the released video archives.

Official scoring (the benchmark's lmms-eval task): multiple-choice tasks by exact match of the answer's
first token (trailing periods removed) against the letter; numerical tasks by MRA over θ ∈ {.50, ..., .95}
with `<=`. The headline is the *unweighted* mean of 8 task scores, where relative direction is first the
mean of its easy / medium / hard levels. With `--limit`, tasks or levels with no items are left out of
the means (and the report lists which tasks were present).

For the reference protocol, numerical tasks are records of type `regression` (scored by MRA, as SPEC §7),
multiple-choice ones of type `multiple choice`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from videor1.evaluate.benchmarks.base import BadRow, Benchmark, Item, Row, RowSource, require
from videor1.evaluate.scoring import answer_span, group_scores, leading_token, mean, meta_key, mra, parse_float

MC_TASKS = ("object_rel_direction", "object_rel_distance", "route_planning", "obj_appearance_order")
NUM_TASKS = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
TASKS = NUM_TASKS + MC_TASKS
LEVELS = ("easy", "medium", "hard")


def split_question_type(question_type: str) -> tuple[str, str | None]:
    """"object_rel_direction_hard" -> ("object_rel_direction", "hard"); other types have no level."""
    for level in LEVELS:
        suffix = f"_{level}"
        if question_type.endswith(suffix) and question_type[: -len(suffix)] == "object_rel_direction":
            return "object_rel_direction", level
    return question_type, None


class VSIBench(Benchmark):
    name = "vsibench"
    description = "VSI-Bench: visual-spatial intelligence, 8 tasks (MC accuracy + numerical MRA)"
    headline = "unweighted mean of 8 task scores (relative direction = mean of 3 levels)"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        require(row, ["dataset", "scene_name", "question_type", "question", "ground_truth"])
        task, level = split_question_type(str(row["question_type"]))
        if task not in TASKS:
            raise BadRow(f"unknown question_type {row['question_type']!r}", "question_type")
        is_mc = task in MC_TASKS
        return self.item(
            source, problem=str(row["question"]), problem_type="multiple choice" if is_mc else "regression",
            options=list(row.get("options") or []) if is_mc else [], answer=row["ground_truth"],
            path=f"{row['dataset']}/{row['scene_name']}.mp4",
            meta={"task": task, "level": level, "question_type": row["question_type"], "dataset": row["dataset"]})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        token = leading_token(answer_span(output))
        if row["meta"]["task"] in MC_TASKS:
            return 1.0 if token.lower() == str(row["answer"]).strip().lower() else 0.0
        return mra(parse_float(token), parse_float(row["answer"]), inclusive=True)

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        by_task = group_scores(rows, meta_key("task"))
        levels = group_scores([r for r in rows if r["meta"].get("task") == "object_rel_direction"],
                              meta_key("level"))
        if levels:   # relative direction: mean of its levels, not of its items
            by_task["object_rel_direction"] = {"score": mean(v["score"] for v in levels.values()),
                                               "n": sum(v["n"] for v in levels.values())}
        tasks = {t: by_task[t] for t in TASKS if t in by_task}
        return {
            "overall": mean(v["score"] for v in tasks.values()),
            "n": len(rows),
            "breakdowns": {"task": tasks, "relative direction level": levels,
                           "scene source": group_scores(rows, meta_key("dataset"))},
        }
