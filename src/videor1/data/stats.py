"""`videor1 data stats`: what a dataset holds — counts by type, source and order-dependence, media summaries.

Counts are over the valid records (bad ones are counted, not described; `videor1 data check` lists them).
``temporal`` is counted only over the records that carry the field. With a media root, video durations,
frame rates and resolutions come from container headers only (:func:`videor1.data.media.probe_video`) and
image sizes from the image header (PIL opens lazily), so this is fast even on large sets; a file that cannot
be probed is counted under ``media.errors`` and named on the console. With ``out``, the summary is written as
``stats.json``, a Markdown table ``stats.md`` and a bar chart of the mix ``stats.png``.

This has no counterpart in the reference (which described its mix only in the paper).
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from videor1.data.media import MediaError, probe_video
from videor1.data.records import Record, RecordError, read_records, resolve_media_path

COUNTED_FIELDS = ("data_type", "problem_type", "data_source", "temporal")
NO_SOURCE = "(none)"


def count_fields(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """Counts by data_type, problem_type, data_source (``(none)`` when absent) and temporal (where present)."""
    records = list(records)
    out: dict[str, dict[str, int]] = {}
    for name in COUNTED_FIELDS:
        counter: Counter[str] = Counter()
        for record in records:
            value = getattr(record, name)
            if name == "temporal":
                if value is None:
                    continue
                value = str(value).lower()
            elif value is None:
                value = NO_SOURCE
            counter[value] += 1
        out[name] = dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def summarize(values: list[float]) -> dict[str, float] | None:
    """min / median / mean / max of a list (None when empty)."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "max": max(values)}


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise RecordError(f"cannot read the image header: {exc}", field="path") from None


def _probe(record: Record, media_root: str | os.PathLike) -> dict[str, Any]:
    path = resolve_media_path(media_root, record.path, record_id=record.problem_id)
    if record.data_type == "video":
        return probe_video(path)
    if not path.is_file():
        raise RecordError(f"media file not found: {path}", record_id=record.problem_id, field="path")
    width, height = _image_size(path)
    return {"width": width, "height": height}


def media_summary(records: Iterable[Record], media_root: str | os.PathLike,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Header-only media facts: video duration / fps / frames / resolution, image resolution, error count."""
    facts: dict[str, list[dict[str, Any]]] = {"video": [], "image": []}
    errors = 0
    for record in records:
        try:
            facts[record.data_type].append(_probe(record, media_root))
        except (MediaError, RecordError) as exc:
            errors += 1
            echo(f"{record.problem_id}\tmedia: {getattr(exc, 'reason', exc)}")
    out: dict[str, Any] = {"errors": errors}
    for kind, rows in facts.items():
        entry: dict[str, Any] = {"count": len(rows),
                                 "resolution": dict(Counter(f"{r['width']}x{r['height']}" for r in rows)
                                                    .most_common(10))}
        if kind == "video":
            for key, name in (("duration", "duration_s"), ("fps", "fps"), ("frames", "frames")):
                entry[name] = summarize([float(r[key]) for r in rows])
        entry["pixels"] = summarize([float(r["width"] * r["height"]) for r in rows])
        out[kind] = entry
    return out


def _table(title: str, counts: dict[str, int], total: int) -> list[str]:
    lines = [f"| {title} | count | share |", "| --- | ---: | ---: |"]
    for key, n in counts.items():
        lines.append(f"| {key} | {n} | {100.0 * n / max(total, 1):.1f}% |")
    return lines + [""]


def _fmt(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "-"
    return " / ".join(f"{summary[k]:.4g}" for k in ("min", "median", "mean", "max"))


def render_markdown(stats: dict[str, Any]) -> str:
    """The summary as Markdown tables."""
    n = stats["records"]
    lines = [f"# Dataset statistics: {stats['file']}", "",
             f"{n} valid records, {stats['bad_records']} bad records.", ""]
    for name in COUNTED_FIELDS:
        if stats["counts"][name]:
            total = sum(stats["counts"][name].values())
            lines += _table(name, stats["counts"][name], total)
    media = stats.get("media")
    if media:
        lines += ["| media (min / median / mean / max) | value |", "| --- | --- |"]
        video, image = media["video"], media["image"]
        lines.append(f"| videos probed | {video['count']} |")
        lines.append(f"| video duration (s) | {_fmt(video['duration_s'])} |")
        lines.append(f"| video fps | {_fmt(video['fps'])} |")
        lines.append(f"| video frames | {_fmt(video['frames'])} |")
        lines.append(f"| video pixels per frame | {_fmt(video['pixels'])} |")
        lines.append(f"| images probed | {image['count']} |")
        lines.append(f"| image pixels | {_fmt(image['pixels'])} |")
        lines.append(f"| unreadable media | {media['errors']} |")
        lines.append("")
        for kind in ("video", "image"):
            if media[kind]["resolution"]:
                lines += _table(f"{kind} resolution", media[kind]["resolution"], media[kind]["count"])
    return "\n".join(lines)


def plot_mix(stats: dict[str, Any], out_png: Path) -> Path:
    """Horizontal bar charts of the counts (one panel per counted field that has values)."""
    # matplotlib's object API (no pyplot): no global backend or figure registry, nothing to close
    panels = [(name, stats["counts"][name]) for name in COUNTED_FIELDS if stats["counts"][name]]
    fig = Figure(figsize=(7, 1.2 + 0.9 * sum(len(c) for _, c in panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (name, counts) in zip(axes[:, 0], panels):
        keys = list(counts)[::-1]
        ax.barh(keys, [counts[k] for k in keys], color="#4c72b0")
        ax.set_title(name, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{stats['records']} records", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    return out_png


def dataset_stats(file: str | os.PathLike, *, media_root: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, echo: Callable[[str], None] = print) -> dict:
    """Describe a dataset: counts (and media facts with ``media_root``); print Markdown; write files to ``out``."""
    records, errors = read_records(file)
    stats: dict[str, Any] = {"file": str(file), "records": len(records), "bad_records": len(errors),
                             "counts": count_fields(records)}
    if media_root is not None:
        stats["media"] = media_summary(records, media_root, echo=echo)
    markdown = render_markdown(stats)
    echo(markdown)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (out / "stats.md").write_text(markdown + "\n")
        plot_mix(stats, out / "stats.png")
        echo(f"wrote {out / 'stats.md'}, {out / 'stats.png'} and {out / 'stats.json'}")
    return stats
