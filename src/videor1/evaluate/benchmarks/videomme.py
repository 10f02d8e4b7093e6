"""`videomme`: Video-MME (lmms-lab/Video-MME), 2,700 questions on 900 videos, without subtitles.

Files: the released parquet (or a JSON / JSONL export), one row per question with `video_id`, `duration`
(short | medium | long), `domain`, `sub_category`, `videoID` (the video file's stem), `question_id`,
`task_type`, `question`, `options` (four "A. ..." strings) and `answer` (the letter).
Media: `<media_root>/<videoID>.mp4` (media_root is the folder of the released mp4s, the archive's `data/`);
where that file is absent, `<videoID>` with the first of `.MP4`, `.mkv`, `.webm`, `.avi`, `.mov` found there
(the extensions lmms-eval also looks for); an item with none of them stays `.mp4` and becomes an error item.

Official scoring: Video-MME's `extract_characters_regex` on the answer span: answer prefixes ("The best
answer is", ...) removed, "" for an answer of more than 10 words without a capital A-D, else the first
capital A-D anywhere (as officially, the "A" of "After" reads as A), against `answer`.
Aggregation: overall accuracy, and accuracy by duration (the official table), domain and task type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from videor1.evaluate.benchmarks.base import Benchmark, Item, Row, RowSource, lettered, require
from videor1.evaluate.scoring import accuracy_summary, answer_span, in_order, videomme_letter

DURATIONS = ("short", "medium", "long")
EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")


def find_video(media_root: Path, stem: str) -> str | None:
    """`<stem><ext>` for the first extension of EXTENSIONS present under media_root, or None."""
    for ext in EXTENSIONS:
        if (Path(media_root) / f"{stem}{ext}").is_file():
            return f"{stem}{ext}"
    return None


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

    def locate(self, item: Item, media_root: Path) -> Item:
        found = find_video(media_root, Path(item.record.path).stem)
        if found is None or found == item.record.path:
            return item
        return replace(item, record=replace(item.record, path=found))

    def official_score(self, row: Mapping[str, Any], output: str) -> float:
        return 1.0 if videomme_letter(answer_span(output)) == str(row["answer"]).strip() else 0.0

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out = accuracy_summary(rows, {"duration": "duration", "domain": "domain", "task type": "task_type"})
        out["breakdowns"]["duration"] = in_order(out["breakdowns"]["duration"], DURATIONS)
        return out
