"""`videommmu`: Video-MMMU (lmms-lab/VideoMMMU), 900 questions on 300 lecture videos, three tracks.

Files: the release's three parquet files, one per track (`Perception/`, `Comprehension/`, `Adaptation/`;
pass the folder holding them, or one file whose path names its track; a JSON / JSONL export with a
`track` field works too). Rows have `id` (`<split>_<Subject>_<n>`), `question`, `options` (a list, with
or without "A." letters), `answer` (the letter, or the value for open questions) and `question_type`
(`multiple-choice`, otherwise open). Media: `<media_root>/<Discipline>/<id>.mp4`, the layout of the
release's per-discipline video archives (Art, Business, Science, Humanities, Engineering, Medicine).
Adaptation questions also come with an image; we give the model the video only (as Video-R1 does).

Official scoring (MMMU style): multiple choice by the parsed letter (a marked letter, else the option's
text, the last mention wins; unparsable scores 0 rather than MMMU's random guess); open questions by
number equality at 2 decimals, or, for text answers, the answer appearing in the response.
Open questions are `numerical` records for the reference protocol when the answer is a number, else
`free-form`. Aggregation: accuracy overall (the headline), by track and by discipline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import BadRow, Benchmark, Item, Row, RowSource, lettered, require
from videor1.evaluate.scoring import NUMBER_RE, accuracy_summary, answer_span, choose_option, in_order, parse_float

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


def open_correct(answer: str, response: str) -> bool:
    """MMMU-style open answer check: equal numbers (2 decimals), else the answer text in the response."""
    gt = parse_float(answer)
    if gt is not None:
        found = [parse_float(m.group(0)) for m in NUMBER_RE.finditer(response)]
        return any(x is not None and round(x, 2) == round(gt, 2) for x in found)
    norm = answer.strip().lower()
    return bool(norm) and norm in response.lower()


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
        is_mc = row.get("question_type") == "multiple-choice"
        options = [str(o) for o in (row.get("options") or [])]
        while options and not options[-1].strip():
            options.pop()
        number = None if is_mc else parse_float(row["answer"])
        return self.item(
            source, problem=str(row["question"]),
            problem_type="multiple choice" if is_mc else ("numerical" if number is not None else "free-form"),
            options=lettered(options) if is_mc else [], path=f"{discipline}/{row['id']}.mp4",
            answer=str(row["answer"]).replace(",", "") if number is not None else row["answer"],
            meta={"track": track, "discipline": discipline, "subject": subject,
                  "question_type": row.get("question_type")})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        span = answer_span(output)
        if row["problem_type"] == "multiple choice":
            return 1.0 if choose_option(span, row.get("options") or []) == str(row["answer"]) else 0.0
        return 1.0 if open_correct(str(row["answer"]), span) else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"track": "track", "discipline": "discipline"})
        out["breakdowns"]["track"] = in_order(out["breakdowns"]["track"], TRACKS)
        return out
