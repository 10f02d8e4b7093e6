"""`videommmu`: Video-MMMU (lmms-lab/VideoMMMU), 900 questions on 300 lecture videos, three tracks.

Files: the release's three parquet files, one per track (`Perception/`, `Comprehension/`, `Adaptation/`;
pass the folder holding them, or one file whose path names its track; a JSON / JSONL export with a
`track` field works too). Rows have `id` (`<split>_<Subject>_<n>`), `question`, `options` (a list, with
or without "A." letters), `answer` (the letter, or the value for open questions) and `question_type`
(`multiple-choice`, otherwise open). A row is multiple choice when it has options (after trailing empty
ones are dropped), whatever its `question_type` says, so such a row is never scored by substring. Media: `<media_root>/<Discipline>/<id>.mp4`, the layout of the
release's per-discipline video archives (Art, Business, Science, Humanities, Engineering, Medicine).
Adaptation questions also come with an image; we give the model the video only (as Video-R1 does).

Official scoring: Video-MMMU's own (MMMU-style) rules on the answer span: multiple choice by
`parse_multi_choice_response` (`mmmu_choice`, over the options as the release states them, kept in the
item's meta) and exact letter equality, "No Answer Found" scoring 0; open questions by `parse_open_response`
+ `eval_open` (`mmmu_open_correct`: numbers normalized to 2 decimals, else the answer text inside a key part
of the response). Departure: an empty answer, which Video-MMMU drops from the denominator ("API Error"),
scores 0 here; a row with options is multiple choice whatever its `question_type` (officially a row not typed
exactly `multiple-choice` is parsed as open, so answer `B` would match any " b" in the text).
Open questions are `numerical` records for the reference protocol when the answer is a number, else
`free-form`. Aggregation: accuracy overall (the headline), by track and by discipline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadRow, Benchmark, Item, Row, RowSource, lettered, require
from videor1.evaluate.scoring import accuracy_summary, answer_span, in_order, mmmu_choice, mmmu_open_correct, option_text, parse_float

TRACKS = ("Perception", "Comprehension", "Adaptation")
DISCIPLINES = {
    "Art": ("Art", "Art_Theory", "Design", "Music"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Humanities": ("History", "Literature", "Sociology", "Psychology"),
    "Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                    "Energy_and_Power", "Materials", "Mechanical_Engineering"),
    "Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                 "Pharmacy", "Public_Health"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
}
_DISCIPLINE_OF = {s: d for d, subjects in DISCIPLINES.items() for s in subjects}


def subject_of(item_id: str | int) -> str:
    """"validation_Clinical_Medicine_12" -> "Clinical_Medicine"."""
    return "_".join(str(item_id).split("_")[1:-1])


def track_of(file: Path, row: Row) -> str | None:
    """The row's `track` field, else the track its file path names."""
    if row.get("track"):
        return str(row["track"])
    for part in reversed(file.parts):
        for track in TRACKS:
            if track.lower() in part.lower():
                return track
    return None


class VideoMMMU(Benchmark):
    name = "videommmu"
    description = "Video-MMMU: knowledge acquisition from lecture videos (Perception / Comprehension / Adaptation)"
    headline = "accuracy (also by track)"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        require(row, ["id", "question", "answer"])
        track = track_of(source.file, row)
        if track is None:
            raise BadRow("track not named by the file path or a `track` field", "track")
        subject = subject_of(row["id"])
        discipline = _DISCIPLINE_OF.get(subject)
        if discipline is None:
            raise BadRow(f"unknown subject {subject!r} in id", "id")
        raw_options = [str(o) for o in (row.get("options") or [])]
        options = list(raw_options)
        while options and not options[-1].strip():
            options.pop()
        if row.get("question_type") == "multiple-choice" and not options:
            raise BadRow("multiple-choice question without options", "options")
        is_mc = bool(options)
        number = None if is_mc else parse_float(row["answer"])
        return self.item(
            source, problem=str(row["question"]),
            problem_type="multiple choice" if is_mc else ("numerical" if number is not None else "free-form"),
            options=lettered(options) if is_mc else [], path=f"{discipline}/{row['id']}.mp4",
            answer=str(row["answer"]).replace(",", "") if number is not None else row["answer"],
            meta={"track": track, "discipline": discipline, "subject": subject,
                  "question_type": row.get("question_type"), "options_raw": raw_options})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        span = answer_span(output)
        if row["problem_type"] == "multiple choice":
            options = (row.get("meta") or {}).get("options_raw") or [option_text(o) for o in row.get("options") or []]
            return 1.0 if mmmu_choice(span, options) == str(row["answer"]) else 0.0
        return 1.0 if mmmu_open_correct(str(row["answer"]), span) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"track": "track", "discipline": "discipline"})
        out["breakdowns"]["track"] = in_order(out["breakdowns"]["track"], TRACKS)
        return out
