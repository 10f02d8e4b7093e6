"""Evaluation reports: a Markdown table and a PNG bar chart per run, and several runs side by side.

The official score is the headline; the reference protocol (SPEC §7) sits beside it in every table.
Scores are stored as fractions in scores.json and shown as percentages here. Error items (media that
failed to decode) are listed with their reasons and count as wrong in both protocols.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

from videor1.atomic import atomic_save_figure, atomic_write_json, atomic_write_text


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}"


def _settings_lines(settings: Mapping[str, Any]) -> list[str]:
    video, dec = settings.get("video") or {}, settings.get("decoding") or {}
    if not settings:
        return ["(no settings recorded: meta.json not found)"]
    return [
        f"- model: `{settings.get('model')}`; data: `{settings.get('data')}`",
        f"- frames: {video.get('min_frames')}–{video.get('max_frames')} at {video.get('fps')} fps; pixels per "
        f"frame: {video.get('min_pixels')}–{video.get('max_pixels')}",
        f"- decoding: {dec.get('name')} (do_sample={dec.get('do_sample')}, temperature={dec.get('temperature')}, "
        f"top_p={dec.get('top_p')}), max_new_tokens={settings.get('max_new_tokens')}",
        f"- engine: {settings.get('engine')}, batch size {settings.get('batch_size')}, seed {settings.get('seed')}, "
        f"shuffle frames: {settings.get('shuffle_frames')}",
        f"- videor1 {settings.get('version')}, commit {settings.get('git_commit')}, settings id "
        f"{settings.get('settings_id')}",
    ]


def _judge_lines(judge: Mapping[str, Any] | None) -> list[str]:
    """Who scored the judge-scored items (TempCompass captioning, MMVU open-ended), and how it went."""
    if not judge:
        return []
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted((judge.get("verdicts") or {}).items())) or "none"
    return [f"- LLM judge: `{judge.get('model')}` at {judge.get('url')}; {judge.get('items', 0)} judged answers "
            f"({verdicts}); verdicts cached in {judge.get('cache')}"]


def _breakdown_table(label: str, official: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    lines = [f"### by {label}", "", f"| {label} | items | official | reference |", "| --- | ---: | ---: | ---: |"]
    for name, cell in official.items():
        ref = reference.get(name, {}).get("score")
        lines.append(f"| {name} | {cell['n']} | {pct(cell['score'])} | {pct(ref)} |")
    return lines + [""]


def _temporal_lines(tr: Mapping[str, Any] | None) -> list[str]:
    if not tr:
        return []
    lines = ["## Temporal reliance (ordered vs shuffled frames, official score)", "",
             "| items | n | ordered | shuffled | gap |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, cell in [("all", tr["overall"]), *tr["by_temporal"].items()]:
        lines.append(f"| {name} | {cell['n']} | {pct(cell['ordered'])} | {pct(cell['shuffled'])} | "
                     f"{pct(cell['gap'])} |")
    return lines + [""]


def _tokens(x: float | None) -> str:
    return "n/a" if x is None else f"{float(x):.1f}"


def render_report(summary: Mapping[str, Any]) -> str:
    """The Markdown report of one run."""
    off, ref, counts = summary["official"], summary["reference"], summary["counts"]
    lines = [f"# {summary['bench']} evaluation", "", *_settings_lines(summary.get("settings") or {}),
             *_judge_lines(summary.get("judge")), "",
             "| protocol | score | items |", "| --- | ---: | ---: |",
             f"| **official** ({summary['headline']}) | **{pct(off['overall'])}** | {counts['items']} |",
             f"| reference (SPEC §7, item mean) | {pct(ref['overall'])} | {counts['items']} |", "",
             f"Items: {counts['items']} ({counts['answered']} answered, {counts['errors']} errors scored as wrong). "
             f"Mean format reward: {pct(summary.get('format_reward'))}. Mean completion length: "
             f"{_tokens(summary.get('completion_tokens'))} tokens.",
             ""]
    lines += _temporal_lines(summary.get("temporal_reliance"))
    lines += ["## Breakdowns", ""]
    for label, groups in off.get("breakdowns", {}).items():
        if groups:
            lines += _breakdown_table(label, groups, ref["breakdowns"].get(label, {}))
    if "problem type" not in off.get("breakdowns", {}):
        lines += _breakdown_table("problem type", ref["breakdowns"]["problem type"],
                                  ref["breakdowns"]["problem type"])
    if summary.get("errors"):
        lines += ["## Errors", "", "| reason | items |", "| --- | ---: |"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(summary["error_reasons"].items())] + [""]
    lines += _protocol_notes(ref)
    lines += _unusable_lines(summary.get("unusable") or [])
    return "\n".join(lines)


def _protocol_notes(ref: Mapping[str, Any]) -> list[str]:
    """What the reference column is, where it is not the reference's own `eval_bench.py` rule."""
    kinds = set((ref.get("breakdowns") or {}).get("problem type") or {})
    extra = sorted(kinds & {"OCR", "free-form"})
    if not extra:
        return []
    return ["## Protocol notes", "",
            f"- {', '.join(extra)} items: the reference column scores them by WER (OCR) / ROUGE (free-form), an "
            "extension of this project; the reference's `src/eval_bench.py` has no rule for them (they score 0 "
            "there).", ""]


def _unusable_lines(unusable: Sequence[str]) -> list[str]:
    """Every benchmark entry that was not evaluated, with its file, id and reason."""
    if not unusable:
        return []
    return ["## Not evaluated", "", f"{len(unusable)} entries of the benchmark files were not evaluated:", "",
            *[f"- {line}" for line in unusable], ""]


def plot_summary(summary: Mapping[str, Any], png: Path) -> Path:
    """Bar chart: overall and the first breakdown, official and reference side by side."""
    off, ref = summary["official"], summary["reference"]
    names, o_vals, r_vals = ["overall"], [off["overall"]], [ref["overall"]]
    breakdowns = [(k, v) for k, v in off.get("breakdowns", {}).items() if v]
    if breakdowns:
        label, groups = breakdowns[0]
        ref_groups = ref["breakdowns"].get(label, {})
        for name, cell in groups.items():
            names.append(name)
            o_vals.append(cell["score"])
            r_vals.append(ref_groups.get(name, {}).get("score"))
    fig = Figure(figsize=(max(5.0, 0.6 * len(names) + 2), 3.8))
    ax = fig.subplots()
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [100 * (v or 0) for v in o_vals], width=0.4, label="official")
    ax.bar([x + 0.2 for x in xs], [100 * (v or 0) for v in r_vals], width=0.4, label="reference")
    ax.set_xticks(list(xs), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summary['bench']}: {summary['counts']['items']} items, {summary['counts']['errors']} errors")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, png, dpi=110)
    return png


def write_outputs(out: Path, summary: Mapping[str, Any]) -> None:
    """scores.json, report.md and scores.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "scores.json", summary, indent=2, default=str)
    atomic_write_text(out / "report.md", render_report(summary))
    plot_summary(summary, out / "scores.png")


# ------------------------------------------------------------------------------------ several runs
def _load_summary(run: Path) -> dict[str, Any]:
    path = Path(run) / "scores.json" if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no scores.json (is it a `videor1 eval` output folder?)")
    return json.loads(path.read_text(encoding="utf-8"))


def _run_label(run: Path, summary: Mapping[str, Any]) -> str:
    frames = (summary.get("settings") or {}).get("video", {}).get("max_frames")
    return f"{Path(run).name} ({summary['bench']}{f', {frames}f' if frames else ''})"


def _comparison_rows(summaries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    def tr(s: Mapping[str, Any], key: str) -> str:
        t = s.get("temporal_reliance")
        return pct(t["overall"][key]) if t else "–"

    rows = [("official (headline)", [pct(s["official"]["overall"]) for s in summaries]),
            ("reference", [pct(s["reference"]["overall"]) for s in summaries]),
            ("items", [str(s["counts"]["items"]) for s in summaries]),
            ("errors", [str(s["counts"]["errors"]) for s in summaries]),
            ("format reward", [pct(s.get("format_reward")) for s in summaries]),
            ("shuffled accuracy", [tr(s, "shuffled") for s in summaries]),
            ("ordered - shuffled gap", [tr(s, "gap") for s in summaries])]
    labels: list[tuple[str, str]] = []
    for s in summaries:
        for label, groups in s["official"].get("breakdowns", {}).items():
            labels += [(label, g) for g in groups if (label, g) not in labels]
    for label, g in labels:
        cells = [pct(s["official"].get("breakdowns", {}).get(label, {}).get(g, {}).get("score"))
                 if g in s["official"].get("breakdowns", {}).get(label, {}) else "–" for s in summaries]
        rows.append((f"{label}: {g}", cells))
    return rows


def compare_runs(runs: Sequence[Path], out: Path | None = None) -> str:
    """A Markdown table with one column per run (official headline first); also a PNG with `out`."""
    summaries = [_load_summary(r) for r in runs]
    heads = [_run_label(r, s) for r, s in zip(runs, summaries)]
    lines = ["| | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in _comparison_rows(summaries)]
    text = "\n".join(lines) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", text)
        _plot_comparison(heads, summaries, out / "comparison.png")
    return text


def _plot_comparison(heads: Sequence[str], summaries: Sequence[Mapping[str, Any]], png: Path) -> None:
    fig = Figure(figsize=(max(5.0, 1.2 * len(heads) + 2), 3.8))
    ax = fig.subplots()
    xs = range(len(heads))
    ax.bar([x - 0.2 for x in xs], [100 * (s["official"]["overall"] or 0) for s in summaries], width=0.4,
           label="official")
    ax.bar([x + 0.2 for x in xs], [100 * (s["reference"]["overall"] or 0) for s in summaries], width=0.4,
           label="reference")
    ax.set_xticks(list(xs), heads, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, png, dpi=110)
