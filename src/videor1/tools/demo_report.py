"""The demo's report: the results table (from the evaluation summaries), the plots and `report.md`.

Every number comes from files the run wrote: the evaluation summaries (`scores.json` of each model's
`run_eval`), the trainers' `metrics.jsonl` and the stage timer. Nothing here is a constant result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

from videor1.data.records import Record

ORDER_DEP, ORDER_INDEP = "order-dependent", "order-independent"
COLUMNS = ("overall", "overall (shuffled)", "order-dep.", "order-dep. (shuffled)", "order-indep.",
           "order-indep. (shuffled)", "format reward", "completion tokens")


# ------------------------------------------------------------------------------------------ numbers
def _block(summary: Mapping[str, Any], group: str | None) -> Mapping[str, Any] | None:
    reliance = summary.get("temporal_reliance") or {}
    if group is None:
        return reliance.get("overall")
    return (reliance.get("by_temporal") or {}).get(group)


def model_row(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """One table row from an evaluation summary: accuracy ordered / shuffled overall and by order-dependence,
    the format reward and the mean completion length (tokens), all over the ordered pass."""
    row: dict[str, float | None] = {}
    for label, group in (("overall", None), ("order-dep.", ORDER_DEP), ("order-indep.", ORDER_INDEP)):
        block = _block(summary, group)
        if block is None and group is None:   # no shuffled pass: the ordered headline only
            row[label] = (summary.get("official") or {}).get("overall")
        else:
            row[label] = None if block is None else block.get("ordered")
        row[f"{label} (shuffled)"] = None if block is None else block.get("shuffled")
    row["format reward"] = summary.get("format_reward")
    row["completion tokens"] = summary.get("completion_tokens")
    return row


def task_scores(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{task: {"score", "n"}} of the ordered pass, from the `source` breakdown (`synth/<task>`)."""
    by_source = ((summary.get("official") or {}).get("breakdowns") or {}).get("source") or {}
    return {str(k).split("/", 1)[-1]: v for k, v in by_source.items()}


def chance_by_task(records: Sequence[Record]) -> dict[str, float | None]:
    """Accuracy of uniform guessing per task: 1/#options for multiple choice, 1/#distinct answers for a
    numerical task with few answers (counting), None where guessing has no meaningful rate."""
    options: dict[str, list[int]] = {}
    answers: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    for rec in records:
        task = str(rec.data_source or "").split("/", 1)[-1]
        kinds[task] = rec.problem_type
        options.setdefault(task, []).append(len(rec.options))
        answers.setdefault(task, set()).add(rec.answer)
    out: dict[str, float | None] = {}
    for task, kind in kinds.items():
        if kind == "multiple choice":
            out[task] = sum(1.0 / k for k in options[task]) / len(options[task])
        elif kind == "numerical" and len(answers[task]) <= 10:
            out[task] = 1.0 / len(answers[task])
        else:
            out[task] = None
    return out


# ------------------------------------------------------------------------------------------ markdown
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The headline table: one row per model, the columns of :data:`COLUMNS`."""
    rows = []
    for name, summary in summaries.items():
        row = model_row(summary)
        rows.append([name] + [_fmt(row[c], 1 if c == "completion tokens" else 3) for c in COLUMNS])
    return markdown_table(["model", *COLUMNS], rows)


def task_table(summaries: Mapping[str, Mapping[str, Any]], chance: Mapping[str, float | None],
               temporal_tasks: set[str]) -> str:
    """Ordered-frames score per task and model, with the chance rate and the task's order-dependence."""
    per_model = {name: task_scores(s) for name, s in summaries.items()}
    tasks = sorted({t for scores in per_model.values() for t in scores},
                   key=lambda t: (t not in temporal_tasks, t))
    rows = []
    for task in tasks:
        n = next((scores[task]["n"] for scores in per_model.values() if task in scores), None)
        rows.append([task, "yes" if task in temporal_tasks else "no", str(n), _fmt(chance.get(task))]
                    + [_fmt((per_model[m].get(task) or {}).get("score")) for m in per_model])
    return markdown_table(["task", "order-dep.", "n", "chance", *per_model], rows)


def findings(summaries: Mapping[str, Mapping[str, Any]], chance_dep: float | None,
             chance_indep: float | None) -> list[str]:
    """Plain statements computed from the numbers (what the table shows, said in words)."""
    rows = {name: model_row(s) for name, s in summaries.items()}
    out = []
    if "base" in rows and "SFT" in rows:
        out.append(f"Format reward: base {_fmt(rows['base']['format reward'])} -> SFT "
                   f"{_fmt(rows['SFT']['format reward'])}.")
    for name, row in rows.items():
        parts = []
        for col, chance in (("order-dep.", chance_dep), ("order-indep.", chance_indep)):
            if row.get(col) is not None:
                parts.append(f"{col} {_fmt(row[col])} (shuffled {_fmt(row.get(col + ' (shuffled)'))}"
                             + (f", chance {_fmt(chance)}" if chance is not None else "") + ")")
        if parts:
            out.append(f"{name}: " + "; ".join(parts) + ".")
    for name in [n for n in rows if n.startswith("T-GRPO")]:
        a, b = rows.get("GRPO", {}).get("order-dep."), rows[name].get("order-dep.")
        if a is not None and b is not None:
            out.append(f"{name} minus GRPO on order-dependent questions: {b - a:+.3f} (one seed; differences of "
                       "a few items are noise, see perf/tgrpo_vs_grpo.py for several seeds).")
    sft = rows.get("SFT", {}).get("order-dep.")
    for name in [n for n in rows if "GRPO" in n]:
        value = rows[name].get("order-dep.")
        if sft is not None and value is not None:
            out.append(f"{name} minus SFT on order-dependent questions: {value - sft:+.3f}.")
    return out


def rollout_findings(rl_dirs: Mapping[str, Path], window: int = 20) -> list[str]:
    """Each RL run's accuracy on its own sampled rollouts (metrics.jsonl `accuracy`), first vs last `window`
    steps: what RL optimises, beside the greedy test accuracy the tables show; and, with dynamic sampling,
    the mean share of prompt groups its loss kept (`kept_group_rate`)."""
    out = []
    for name, folder in rl_dirs.items():
        rows = _read_jsonl(Path(folder) / "metrics.jsonl")
        values = [float(r["accuracy"]) for r in rows if "accuracy" in r]
        kept = [float(r["kept_group_rate"]) for r in rows if "kept_group_rate" in r]
        if len(values) >= 2 * window:
            first, last = sum(values[:window]) / window, sum(values[-window:]) / window
            out.append(f"{name}: accuracy of its own sampled rollouts (training prompts, temperature as set) "
                       f"{first:.3f} over the first {window} steps -> {last:.3f} over the last {window}"
                       + (f"; dynamic sampling kept {sum(kept) / len(kept):.0%} of the prompt groups for the loss "
                          "(the others were all right or all wrong)." if kept else "."))
    return out


def cold_start_finding(sft_dir: Path, validation_log: str, threshold: float | None,
                       max_steps: int) -> list[str]:
    """Where the SFT cold start stopped and why, from its validation checks (`validation_log` in `sft_dir`)
    and its last logged step; nothing when no check ran (no stop criterion)."""
    checks = _read_jsonl(Path(sft_dir) / validation_log)
    rows = _read_jsonl(Path(sft_dir) / "metrics.jsonl")
    if not checks or not rows or threshold is None:
        return []
    step = int(rows[-1]["step"])
    trail = ", ".join(f"{c['accuracy']:.2f}" for c in checks)
    how = (f"stopped at step {step} of at most {max_steps}: validation accuracy {checks[-1]['accuracy']:.3f} "
           f"reached {threshold}" if checks[-1]["accuracy"] >= threshold else
           f"ran all {step} steps without validation accuracy reaching {threshold}")
    return [f"SFT cold start {how} (checks at steps {checks[0]['step']}-{checks[-1]['step']}: {trail})."]


# ------------------------------------------------------------------------------------------- plots
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["step"]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def first_key(rows: Sequence[Mapping[str, Any]], candidates: Sequence[str]) -> str | None:
    """The first of `candidates` that some metrics row holds as a number."""
    for key in candidates:
        if any(isinstance(r.get(key), (int, float)) for r in rows):
            return key
    return None


def plot_training(sft_dir: Path, rl_dirs: Mapping[str, Path], out_png: Path,
                  keys: Mapping[str, Sequence[str]]) -> Path:
    """Five panels: SFT loss; RL reward; RL accuracy; T-GRPO accuracy on ordered vs shuffled frames; the
    temporal advantage shift (how much the bonus moved the advantages) of each T-GRPO run.

    `keys` maps "loss", "reward", "accuracy", "ordered", "shuffled", "shift" to candidate metric names."""
    fig = Figure(figsize=(22, 3.8))
    axes = fig.subplots(1, 5)
    sft = _read_jsonl(sft_dir / "metrics.jsonl")
    _plot_one(axes[0], {"SFT": sft}, keys["loss"], "SFT loss (response tokens)", window=5)
    runs = {name: _read_jsonl(d / "metrics.jsonl") for name, d in rl_dirs.items()}
    _plot_one(axes[1], runs, keys["reward"], "RL total reward (mean of the group)", window=10)
    _plot_one(axes[2], runs, keys["accuracy"], "RL accuracy reward (ordered frames)", window=10)
    tg = {name: rows for name, rows in runs.items() if name == "T-GRPO"}
    series = {}
    for label, cands in (("ordered", keys["ordered"]), ("shuffled", keys["shuffled"])):
        for rows in tg.values():
            series[f"T-GRPO {label}"] = [{**r, "_v": r.get(first_key(rows, cands) or "")} for r in rows]
    _plot_one(axes[3], series, ["_v"], "T-GRPO accuracy: ordered vs shuffled frames", window=10)
    temporal = {name: rows for name, rows in runs.items() if first_key(rows, keys.get("shift", ()))}
    _plot_one(axes[4], temporal, keys.get("shift", ()), "temporal_advantage_shift (mean |A - A w/o bonus|)",
              window=10)
    axes[4].set_yscale("symlog", linthresh=1e-4)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    return out_png


def _plot_one(ax: Axes, runs: Mapping[str, Sequence[Mapping[str, Any]]], candidates: Sequence[str], title: str,
              *, window: int) -> None:
    drawn = False
    for name, rows in runs.items():
        key = first_key(rows, candidates)
        if key is None:
            continue
        x, y = _series(rows, key)
        ax.plot(x, _smooth(y, window), label=name)
        drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def plot_accuracy_bars(summaries: Mapping[str, Mapping[str, Any]], out_png: Path,
                       chance: Mapping[str, float | None]) -> Path:
    """Grouped bars: per model, accuracy on order-dependent / -independent questions, ordered vs shuffled."""
    cols = ("order-dep.", "order-dep. (shuffled)", "order-indep.", "order-indep. (shuffled)")
    rows = {name: model_row(s) for name, s in summaries.items()}
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        shuffled = "shuffled" in col
        colour = "C0" if col.startswith("order-dep.") else "C2"
        ax.bar(xs, [rows[m][col] or 0.0 for m in rows], width, label=col, color=colour,
               alpha=0.45 if shuffled else 0.95, hatch="//" if shuffled else None, edgecolor="black",
               linewidth=0.5)
    for label, value, style in (("chance (order-dep.)", chance.get(ORDER_DEP), "--"),
                                ("chance (order-indep.)", chance.get(ORDER_INDEP), ":")):
        if value is not None:
            ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=label)
    ax.set_xticks(range(len(rows)), list(rows))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (synthetic test set)")
    ax.legend(fontsize=8, ncol=2, loc="upper left")  # over the base model, whose bars are lowest
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    return out_png
