"""Scoring the rows of a run and summarising them (scores.json): `score_row` fills both protocols' scores of one
prediction line, `summarize` computes the run's numbers from all lines (so `videor1 score` on a predictions
file reproduces `videor1 eval`'s numbers exactly)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from videor1.evaluate.benchmarks import Benchmark
from videor1.evaluate.scoring import mean, reference_score, reference_summary
from videor1.rewards import format_reward


def score_row(adapter: Benchmark, row: dict[str, Any]) -> dict[str, Any]:
    """Fill `reference`, `official` and `format` from `row["output"]`; error items score 0."""
    if row.get("error"):
        row.update(reference=0.0, official=0.0, format=0.0)
        return row
    output = row.get("output") or ""
    row["reference"] = reference_score(row["problem_type"], output, row["solution"])
    row["official"] = float(adapter.official_score(row, output))
    row["format"] = float(format_reward(output))
    return row


def temporal_of(row: Mapping[str, Any]) -> str | None:
    label = (row.get("meta") or {}).get("temporal")
    if label is None and row.get("temporal") is not None:
        label = "order-dependent" if row["temporal"] else "order-independent"
    return label


def temporal_reliance(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Ordered vs shuffled official accuracy over items answered in both passes (errors left out)."""
    ordered = {r["id"]: r for r in rows if not r.get("shuffled") and not r.get("error")}
    shuffled = {r["id"]: r for r in rows if r.get("shuffled") and not r.get("error")}
    ids = [i for i in ordered if i in shuffled]
    if not ids:
        return None

    def block(sel: list[str]) -> dict[str, Any]:
        o = mean(float(ordered[i]["official"]) for i in sel)
        s = mean(float(shuffled[i]["official"]) for i in sel)
        return {"ordered": o, "shuffled": s, "gap": o - s, "n": len(sel)}

    groups: dict[str, list[str]] = {}
    for i in ids:
        label = temporal_of(ordered[i])
        if label is not None:
            groups.setdefault(label, []).append(i)
    return {"overall": block(ids), "by_temporal": {k: block(v) for k, v in sorted(groups.items())}}


def reference_with_breakdowns(adapter: Benchmark, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Reference-protocol numbers: the item mean overall, by problem type, and in the official breakdowns."""
    ref = reference_summary(rows)
    swapped = adapter.aggregate([{**r, "official": r.get("reference")} for r in rows]) if rows else {}
    for label, groups in (swapped.get("breakdowns") or {}).items():
        ref["breakdowns"].setdefault(label, groups)
    return ref


def summarize(adapter: Benchmark, rows: Sequence[Mapping[str, Any]],
              settings: Mapping[str, Any] | None = None, unusable: Sequence[str] = (),
              judge: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary (scores.json): official headline + breakdowns, reference protocol, counts, and
    the LLM judge that scored the judge-scored items (None: no judge)."""
    ordered = [r for r in rows if not r.get("shuffled")]
    answered = [r for r in ordered if not r.get("error")]
    reasons: dict[str, int] = {}
    for r in ordered:
        if r.get("error"):
            reasons[r["error"]] = reasons.get(r["error"], 0) + 1
    return {
        "bench": adapter.name,
        "headline": adapter.headline,
        "official": adapter.aggregate(ordered),
        "reference": reference_with_breakdowns(adapter, ordered),
        "counts": {"items": len(ordered), "answered": len(answered), "errors": len(ordered) - len(answered),
                   "shuffled_items": len(rows) - len(ordered)},
        "errors": [{"id": r["id"], "reason": r["error"]} for r in ordered if r.get("error")],
        "error_reasons": reasons,
        "format_reward": mean(float(r.get("format") or 0.0) for r in answered),
        "completion_tokens": mean(float(r.get("n_tokens") or 0) for r in answered),
        "temporal_reliance": temporal_reliance(rows),
        "unusable": list(unusable),   # benchmark entries not evaluated, each with its file, id and reason
        "judge": dict(judge) if judge else None,
        "settings": dict(settings or {}),
    }
