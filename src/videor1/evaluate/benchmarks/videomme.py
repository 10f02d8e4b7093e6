"""`videomme`: Video-MME (lmms-lab/Video-MME), 2,700 questions on 900 videos, without subtitles.

Files: the released parquet (or a JSON / JSONL export), one row per question with `video_id`, `duration`
(short | medium | long), `domain`, `sub_category`, `videoID` (the video file's stem), `question_id`,
`task_type`, `question`, `options` (four "A. ..." strings) and `answer` (the letter).
Media: `<media_root>/<videoID>.mp4` (media_root is the folder of the released mp4s, the archive's `data/`).

Official scoring: the answer's option letter against `answer`. The official extractor strips answer
prefixes ("The best answer is") and takes the first capital A-D anywhere; ours takes the first A-D that
stands alone as a word (so the "A" of "After" is not read as an answer), from the answer span.
Aggregation: overall accuracy, and accuracy by duration (the official table), domain and task type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from videor1.evaluate.benchmarks.base import Benchmark, Item, Row, RowSource, lettered, require
from videor1.evaluate.scoring import LETTERS, accuracy_summary, answer_span, in_order, standalone_letter

DURATIONS = ("short", "medium", "long")


class VideoMME(Benchmark):
    name = "videomme"
    description = "Video-MME (no subtitles): multiple choice, short / medium / long videos"
    headline = "accuracy (also by duration)"
    id_field = "question_id"

    def row_to_item(self, row: Row, source: RowSource) -> Item:
        require(row, ["videoID", "duration", "question", "options", "answer"])
        return self.item(
            source, problem=str(row["question"]), problem_type="multiple choice",
            options=lettered(list(row["options"])), answer=row["answer"], path=f"{row['videoID']}.mp4",
            meta={"duration": row["duration"], "domain": row.get("domain"), "task_type": row.get("task_type"),
                  "sub_category": row.get("sub_category"), "video_id": row.get("video_id")})

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        letters = LETTERS[: max(len(row.get("options") or []), 4)]
        return 1.0 if standalone_letter(answer_span(output), letters) == str(row["answer"]).strip() else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"duration": "duration", "domain": "domain", "task type": "task_type"})
        out["breakdowns"]["duration"] = in_order(out["breakdowns"]["duration"], DURATIONS)
        return out
