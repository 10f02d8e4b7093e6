"""`mmvu`: MMVU (yale-nlp/MMVU), expert-level video understanding; the 625 multiple-choice validation questions.

File: the release's `validation.json`, a list of `{"id", "question", "choices": {"A": ..., "E": ...},
"answer": <letter>, "question_type": "multiple-choice" | "open-ended", "video": <URL or path>,
"metadata": {"subject": ..., ...}}`. Only `multiple-choice` questions are kept (Video-R1 evaluates those);
the open-ended ones are counted in the load report, not scored. A `video_path` field, where an export has
one, is used as is; otherwise the path is the part of `video` from `videos/` on (the URL
`.../resolve/main/videos/Art/1.mp4` gives `videos/Art/1.mp4`), relative to media_root (the release folder).

Official scoring: the benchmark scores multiple choice by the chosen letter (its reference evaluation
extracts the letter with an LLM; we parse it by rule: a marked letter, else the option's text, from the
answer span; unparsable scores 0). Aggregation: accuracy, also by subject and by discipline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from videor1.evaluate.benchmarks.base import Benchmark, LoadResult, bad_entry, data_files, make_item, read_rows, require
from videor1.evaluate.scoring import accuracy_summary, answer_span, choose_option

DISCIPLINES = {
    "Science": ("Biology", "Chemistry", "Modern_Physics", "Astronomy", "Geography", "Materials_Science",
                "Neurobiology", "Electromagnetism", "Thermodynamics", "Mechanics"),
    "Engineering": ("Civil_Engineering", "Electrical_Engineering", "Mechanical_Engineering",
                    "Biomedical_Engineering", "Electronics_and_Communication", "Computer_Science"),
    "Healthcare": ("Clinical_Medicine", "Basic_Medicine", "Preventive_Medicine", "Pharmacy", "Dentistry"),
    "Humanities and Social Science": ("Art", "Literature", "History", "Law", "Economics", "Management"),
}
_DISCIPLINE_OF = {s: d for d, subjects in DISCIPLINES.items() for s in subjects}


def media_path(row: Mapping[str, Any]) -> str | None:
    if row.get("video_path"):
        return str(row["video_path"])
    video = str(row.get("video") or "")
    m = re.search(r"(videos/.+)$", video)
    if m:
        return m.group(1)
    return video if video and "://" not in video else None


def subject_of(row: Mapping[str, Any], path: str) -> str | None:
    meta = row.get("metadata") or {}
    if isinstance(meta, Mapping) and meta.get("subject"):
        return str(meta["subject"])
    parts = path.split("/")
    return parts[-2] if len(parts) >= 2 else None


class MMVU(Benchmark):
    name = "mmvu"
    description = "MMVU validation split, multiple-choice questions only"
    headline = "accuracy"

    def load(self, data: Path, media_root: Path | None = None) -> LoadResult:
        result = LoadResult(items=[])
        for file in data_files(data, ["validation.json", "*.jsonl", "*.parquet"]):
            n_open = 0
            for i, row in enumerate(read_rows(file)):
                item_id = row.get("id", f"{file.stem}-{i}")
                if row.get("question_type") != "multiple-choice":
                    n_open += 1
                    continue
                missing = require(row, ["question", "choices", "answer"])
                path = media_path(row)
                if missing or path is None:
                    result.problems.append(bad_entry(file, i, item_id, f"missing field(s) {missing or ['video']}"))
                    continue
                choices = row["choices"]
                if not isinstance(choices, Mapping):
                    result.problems.append(bad_entry(file, i, item_id, "choices is not a letter -> text mapping"))
                    continue
                options = [f"{k}. {v}" for k, v in sorted(choices.items()) if v not in (None, "")]
                subject = subject_of(row, path)
                try:
                    result.items.append(make_item(
                        item_id=item_id, problem=str(row["question"]), problem_type="multiple choice",
                        options=options, answer=row["answer"], file=file, index=i, source=self.name,
                        path=path, meta={"subject": subject, "discipline": _DISCIPLINE_OF.get(subject or "")}))
                except ValueError as exc:
                    result.problems.append(str(exc))
            if n_open:
                result.problems.append(f"file {file}: {n_open} open-ended question(s) not evaluated (multiple choice only)")
        return result

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        return 1.0 if choose_option(answer_span(output), row.get("options") or []) == str(row["answer"]) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return accuracy_summary(rows, {"discipline": "discipline", "subject": "subject"})
