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

from pathlib import Path
from typing import Any, Mapping, Sequence

from videor1.evaluate.benchmarks.base import LETTERS, Benchmark, LoadResult, bad_entry, data_files, lettered, make_item, read_rows, require
from videor1.evaluate.scoring import accuracy_summary, answer_span, standalone_letter

DURATIONS = ("short", "medium", "long")


class VideoMME(Benchmark):
    name = "videomme"
    description = "Video-MME (no subtitles): multiple choice, short / medium / long videos"
    headline = "accuracy (also by duration)"

    def load(self, data: Path, media_root: Path | None = None) -> LoadResult:
        result = LoadResult(items=[])
        for file in data_files(data, ["*.parquet", "*.jsonl", "*.json"]):
            for i, row in enumerate(read_rows(file)):
                item_id = row.get("question_id", f"{file.stem}-{i}")
                missing = require(row, ["videoID", "duration", "question", "options", "answer"])
                if missing:
                    result.problems.append(bad_entry(file, i, item_id, f"missing field(s) {missing}"))
                    continue
                try:
                    result.items.append(make_item(
                        item_id=item_id, problem=str(row["question"]), problem_type="multiple choice",
                        options=lettered(list(row["options"])), answer=row["answer"], file=file, index=i,
                        source=self.name, path=f"{row['videoID']}.mp4",
                        meta={"duration": row["duration"], "domain": row.get("domain"),
                              "task_type": row.get("task_type"), "sub_category": row.get("sub_category"),
                              "video_id": row.get("video_id")}))
                except ValueError as exc:
                    result.problems.append(str(exc))
        return result

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        letters = LETTERS[: max(len(row.get("options") or []), 4)]
        return 1.0 if standalone_letter(answer_span(output), letters) == str(row["answer"]).strip() else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"duration": "duration", "domain": "domain", "task type": "task_type"})
        dur = out["breakdowns"]["duration"]
        out["breakdowns"]["duration"] = {d: dur[d] for d in DURATIONS if d in dur} | {
            d: v for d, v in dur.items() if d not in DURATIONS}
        return out
