"""`videor1 data check`: validate every record of a dataset and decode its media; list the bad ones.

Output: one line per bad record, ``<id>\\t<reason>``, then one summary line (total, good, bad, and the bad ones
counted by reason). Records are validated by :mod:`videor1.data.records` (fields, safe paths, existence); with
``decode`` every media file is also decoded with :func:`videor1.data.media.load_media` at the default
:class:`~videor1.data.media.VideoSpec` / :class:`~videor1.data.media.ImageSpec`, so a truncated or
undecodable file is found before training rather than during it.

Where we depart from the reference: the reference never checked its data and replaced an unreadable video
with a fixed fallback clip at training time; here every problem is reported with the record's id. Duplicate
``problem_id`` values are reported as a warning (resumable annotation and evaluation key on the id) but do not
make a record bad.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from videor1.data.media import ImageSpec, MediaError, VideoSpec, load_media
from videor1.data.records import Record, RecordError, read_records


def reason_key(error: Exception) -> str:
    """A short category for the summary: the bad field, 'missing media', 'media path', 'undecodable media'."""
    if isinstance(error, RecordError):
        if error.field == "path":
            return "missing media" if "not found" in error.reason else "media path"
        if error.field is None:
            return "invalid JSON" if "invalid JSON" in error.reason else "record"
        return error.field
    return "undecodable media"


def _error_line(error: RecordError) -> str:
    label = error.record_id if error.record_id is not None else "?"
    where = f" (line {error.line})" if error.line is not None else ""
    field = f"{error.field}: " if error.field else ""
    return f"{label}\t{field}{error.reason}{where}"


def _decode_all(records: list[Record], media_root: str | os.PathLike) -> list[tuple[Record, Exception]]:
    """Decode every record's media; return the records whose media failed, with the error."""
    video, image = VideoSpec(), ImageSpec()
    failures: list[tuple[Record, Exception]] = []
    for record in tqdm(records, desc="decoding media", unit="file", disable=None):
        try:
            load_media(record, media_root, video, image)
        except (MediaError, RecordError) as exc:
            failures.append((record, exc))
    return failures


def _duplicate_ids(records: list[Record]) -> list:
    counts = Counter(r.problem_id for r in records)
    return [pid for pid, n in counts.items() if n > 1]


def missing_by_source(file: Path, errors: list[RecordError]) -> dict[str, int]:
    """{data_source: records whose media file is missing} (records with no source under "(no source)")."""
    ids = [e.record_id for e in errors if reason_key(e) == "missing media"]
    if not ids:
        return {}
    source_of = {r.problem_id: r.data_source for r in read_records(file)[0]}
    return dict(Counter(str(source_of.get(i) or "(no source)") for i in ids))


def check_dataset(file: str | os.PathLike, media_root: str | os.PathLike, *, decode: bool = True,
                  echo: Callable[[str], None] = print) -> int:
    """Check ``file`` against ``media_root``; print bad records and a summary; return the number of bad records.

    Raises :class:`~videor1.data.records.DatasetFileError` when the file as a whole cannot be read.
    """
    file = Path(file)
    good, errors = read_records(file, media_root)
    reasons: Counter[str] = Counter()
    for error in errors:
        echo(_error_line(error))
        reasons[reason_key(error)] += 1
    n_bad_media = 0
    if decode:
        for record, exc in _decode_all(good, media_root):
            reason = exc.reason if hasattr(exc, "reason") else str(exc)
            echo(f"{record.problem_id}\tmedia: {reason}")
            reasons[reason_key(exc)] += 1
            n_bad_media += 1
    missing = missing_by_source(file, errors)
    if missing:
        echo("missing media by source: " + ", ".join(f"{k}: {v}" for k, v in sorted(missing.items())))
    n_bad = len(errors) + n_bad_media
    total = len(good) + len(errors)
    dupes = _duplicate_ids(good)
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:5]) + (" ..." if len(dupes) > 5 else "")
        echo(f"warning: {len(dupes)} problem_id values occur more than once: {shown}")
    by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    decoded = "fields, paths and media decoded" if decode else "fields and paths only, media not decoded"
    if total == 0:  # an empty dataset is not a good one: exit 1, never 0
        echo(f"{file}: no records")
        return 1
    echo(f"{file}: {total} records, {total - n_bad} good, {n_bad} bad"
         + (f" ({by_reason})" if by_reason else "") + f" [{decoded}]")
    return n_bad
