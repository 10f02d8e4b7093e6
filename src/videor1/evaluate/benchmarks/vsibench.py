"""`vsibench`: VSI-Bench (nyu-visionx/VSI-Bench), the 288 indoor-scene videos' spatial questions.

The count is the file's, reported at load: the paper and the earlier card say 5,130 questions, the card now
says 5,131; nothing here assumes either.
Files: the released parquet (or a JSON / JSONL export of it); one row per question with `id`, `dataset`
(arkitscenes | scannet | scannetpp), `scene_name`, `question_type`, `question`, `options` (a list of
"A. ..." strings, null for numerical questions) and `ground_truth` (the option letter, or a number).
Media: `<media_root>/<dataset>/<scene_name>.mp4`, the layout of the released video archives.

One full set per folder. The repository's main holds the full set twice (`test.jsonl` and
`test-00000-of-00001.parquet`) beside the subsets `test_debiased.parquet` and `test_pruned.parquet`, which
repeat the same ids. Rule, given a folder: files whose stem contains `debiased` or `pruned` are subsets and
are left out; of the full-set files left, the parquet ones are read (what `datasets` and lmms-eval load) and
any JSON / JSONL copy is left out, each with a note in the load problems. With only subsets, they are read.
Evaluate a subset or a copy by passing its file as `--data`. An id still read twice is refused with a
problem line naming both files.

Video-R1's own `eval_vsibench.json` (Video-R1 records with `original_question_type`) is read by this adapter
too: `problem` / `options` / `solution` / `path` give the question, options, truth and media path (as the
record states it, relative to media_root), `original_question_type` the task.

Official scoring (thinking-in-space / the lmms-eval task), on the answer span: the first *space-separated*
token with trailing dots removed (`fuzzy_matching`; "3\nchairs" is one token); multiple-choice tasks by its
case-insensitive equality with the letter; numerical tasks by the official MRA, in binary floating point as
the official scorer computes it (`vsi_official_mra`: thresholds `np.linspace(0.5, 0.95, 10)`, relative error
`abs(pred - gt) / gt` compared with `<=` against `1 - θ`), of Python's float() of that token (no thousands
commas: "1,200" scores 0). So pred 1.595 vs gt 1.1 scores 0.1 as officially (the exact-fraction MRA,
`videor1.rewards.mean_relative_accuracy`, gives 0.2: the error is 0.45 in decimal, 0.45000000000000007 in
float); that exact MRA stays for training and is `exact_score` here. gt = 0 scores 1 only for pred = 0 (the
official scorer raises ZeroDivisionError there). The lenient parse (`leading_token` + `parse_float`: any
whitespace, commas stripped, exact MRA) is kept as `lenient_score`. The headline is the *unweighted* mean of
8 task scores, where relative direction is first the mean of its easy / medium / hard levels. With
`--limit`, tasks or levels with no items are left out of the means (and the report lists which tasks were
present).

For the reference protocol, numerical tasks are records of type `regression` (scored by MRA, as SPEC §7),
multiple-choice ones of type `multiple choice`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadRow, Benchmark, Item, Row, RowSource, data_files, require
from videor1.evaluate.scoring import (answer_span, group_scores, leading_token, mean, meta_key, mra, parse_float,
                                      vsi_float, vsi_official_mra, vsi_token)

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


SUBSET_MARKERS = ("debiased", "pruned")


def is_subset_file(file: Path) -> bool:
    """A published subset of the test set (`test_debiased.parquet`, `test_pruned.parquet`)."""
    return any(marker in file.stem.lower() for marker in SUBSET_MARKERS)


def one_full_set(found: list[Path]) -> tuple[list[Path], list[str]]:
    """The files to read of a folder's data files, and a note per file left out (the rule in the module doc)."""
    full = [f for f in found if not is_subset_file(f)]
    if not full:
        return found, []
    notes = [f"file {f}: not read: a published subset of the full test set in the same folder (pass it as "
             "--data to evaluate that subset)" for f in found if is_subset_file(f)]
    parquet = [f for f in full if f.suffix.lower() == ".parquet"]
    if parquet and len(parquet) < len(full):
        notes += [f"file {f}: not read: another copy of the full test set (the parquet {parquet[0].name} is "
                  "read; pass this file as --data to read it instead)" for f in full if f not in parquet]
        full = parquet
    return full, notes


def from_videor1_record(row: Row) -> dict[str, Any]:
    """A Video-R1 eval-JSON record (`eval_vsibench.json`) as a VSI-Bench row; BadRow naming the field."""
    require(row, ["problem", "solution", "path", "original_question_type"])
    solution = str(row["solution"])
    start, end = solution.find("<answer>"), solution.find("</answer>")
    if start < 0 or end < start:
        raise BadRow(f"solution has no <answer>...</answer>: {solution[:60]!r}", "solution")
    parts = str(row["path"]).replace("\\", "/").split("/")
    return {"question": row["problem"], "options": row.get("options") or None,
            "ground_truth": solution[start + len("<answer>"): end].strip(),
            "question_type": row["original_question_type"], "path": str(row["path"]),
            "dataset": parts[-2] if len(parts) >= 2 else "", "scene_name": Path(parts[-1]).stem}


class VSIBench(Benchmark):
    name = "vsibench"
    description = "VSI-Bench: visual-spatial intelligence, 8 tasks (MC accuracy + numerical MRA)"
    headline = "unweighted mean of 8 task scores (relative direction = mean of 3 levels)"

    def files(self, data: Path) -> tuple[list[Path], list[str]]:
        found = data_files(data, self.patterns)
        if data.is_file():
            return found, []
        return one_full_set(found)

    def row_id(self, row: Row, file: Path, index: int) -> str | int | None:
        return row.get("id", row.get("problem_id", f"{file.stem}-{index}"))

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        if "problem_id" in row and "solution" in row:
            row = from_videor1_record(row)
        require(row, ["dataset", "scene_name", "question_type", "question", "ground_truth"])
        task, level = split_question_type(str(row["question_type"]))
        if task not in TASKS:
            raise BadRow(f"unknown question_type {row['question_type']!r}", "question_type")
        is_mc = task in MC_TASKS
        return self.item(
            source, problem=str(row["question"]), problem_type="multiple choice" if is_mc else "regression",
            options=list(row.get("options") or []) if is_mc else [], answer=row["ground_truth"],
            path=str(row.get("path") or f"{row['dataset']}/{row['scene_name']}.mp4"),
            meta={"task": task, "level": level, "question_type": row["question_type"], "dataset": row["dataset"]})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        token = vsi_token(answer_span(output))
        if row["meta"]["task"] in MC_TASKS:
            return 1.0 if token.lower() == str(row["answer"]).lower() else 0.0
        return vsi_official_mra(vsi_float(token), vsi_float(row["answer"]))

    def exact_score(self, row: Mapping[str, Any], output: str) -> float:
        """The official parse with the exact-fraction MRA (`videor1.rewards.mean_relative_accuracy`, `<=`)
        instead of the official float arithmetic; differs only on float-boundary items."""
        token = vsi_token(answer_span(output))
        if row["meta"]["task"] in MC_TASKS:
            return 1.0 if token.lower() == str(row["answer"]).lower() else 0.0
        return mra(vsi_float(token), vsi_float(row["answer"]), inclusive=True)

    def lenient_score(self, row: Mapping[str, Any], output: str) -> float:
        """The lenient variant: first whitespace token, thousands commas stripped."""
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
