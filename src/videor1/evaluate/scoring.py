"""Scoring: the reference protocol (shared with the RL rewards) and the parsers official protocols use.

Reference protocol (SPEC §7), `reference_score`: `videor1.rewards.eval_score`, the module that also holds
the RL accuracy reward (so reward and metric cannot drift apart): the answer is the first
`<answer>...</answer>` span, or the whole output when there is none; exact letter for multiple choice,
the reference numerical rule, WER for OCR, ROUGE for free-form, mean relative accuracy for regression.

Official protocols parse answers with each benchmark's own rule. Where we depart from them:

* Every official parser is applied to the answer span (`answer_span`), not the whole output: Video-R1
  models reason inside `<think>` first, and the official parsers were written for direct answers, so on
  the whole output they would pick letters out of the reasoning.
* Where an official parser falls back to a random guess (MMMU) or an LLM judge (TempCompass), an
  unparsable answer scores 0 here: deterministic, no network.
* VSI-Bench's MRA is the one exact function of the project (`videor1.rewards.mean_relative_accuracy`,
  thresholds k/20 as exact decimals) with the official `<=`; the training reward uses the reference's `<`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from videor1.rewards import eval_score, extract_answer, mean_relative_accuracy

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------------------------- answer extraction
def answer_span(output: str) -> str:
    """The first <answer> span, or the whole (stripped) output when the model wrote none."""
    return extract_answer(output) or (output or "").strip()


def parse_float(text: object) -> float | None:
    """`text` as a number ("1,234.5" included), or None; never raises."""
    if text is None:
        return None
    s = str(text).strip().replace(",", "")
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------- reference protocol
def reference_score(problem_type: str, output: str, solution: str) -> float:
    """SPEC §7 reference score of one output, in [0, 1]; never raises (`videor1.rewards.eval_score`)."""
    return float(eval_score(problem_type, output, solution))


# --------------------------------------------------------------------------------------------- MRA
def mra(pred: float | None, gt: float | None, *, inclusive: bool = True) -> float:
    """Mean relative accuracy over θ ∈ {0.50, 0.55, ..., 0.95}: `videor1.rewards.mean_relative_accuracy`
    (exact decimal arithmetic), with VSI-Bench's official `<=` by default.

    `inclusive=True` counts an error of exactly 1-θ as within (VSI-Bench's official `<=`); False is the
    strict `<` of the reference. A missing number scores 0; gt = 0 scores 1 only for pred = 0.
    """
    if pred is None or gt is None:
        return 0.0
    return mean_relative_accuracy(pred, gt, inclusive=inclusive)


# ------------------------------------------------------------------------------------ choice parsers
def leading_token(text: str) -> str:
    """The first whitespace token with trailing periods removed (VSI-Bench's `fuzzy_matching`)."""
    parts = (text or "").strip().split()
    return parts[0].rstrip(".").strip() if parts else ""


def leading_letter(text: str, letters: str = LETTERS[:4]) -> str:
    """The option letter an answer starts with: "B", "B.", "(B)", "B) cat", "B: cat"; "" if none."""
    m = re.match(r"\s*[\(\[]?([A-Za-z])(?:[\)\]\.:,]|\s|$)", text or "")
    if not m:
        return ""
    letter = m.group(1).upper()
    return letter if letter in letters and (m.group(1).isupper() or len((text or "").strip()) <= 3) else ""


def standalone_letter(text: str, letters: str = LETTERS[:4]) -> str:
    """The first capital option letter standing alone as a word (after answer prefixes); "" if none."""
    s = re.sub(r"(?i)^\s*(the\s+)?(best\s+|correct\s+|final\s+)?(answer|option)\s*(is|:)?\s*", "", text or "")
    m = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", s)
    return m.group(1) if m else ""


def option_text(option: str) -> str:
    """The text of an "A. text" option."""
    return re.sub(r"^\s*[A-Z][\.\):]\s*", "", option).strip()


def choose_option(text: str, options: Sequence[str]) -> str:
    """MMMU-style choice parsing: a marked letter ("(B)", "B.", " B "), else the option text; the last wins.

    Returns the letter, or "" when nothing is recognised (MMMU guesses at random there; we do not).
    """
    letters = LETTERS[: len(options)]
    s = f" {(text or '').strip()} "
    found: dict[str, int] = {}
    passes = ([r"\({L}\)", r"(?<![A-Za-z]){L}[\.\):]"], [r"(?<![A-Za-z]){L}(?![A-Za-z])"])
    for patterns in passes:                      # marked letters first, bare letters only if none
        for letter in letters:
            for pat in patterns:
                for m in re.finditer(pat.format(L=letter), s):
                    found[letter] = max(found.get(letter, -1), m.start())
        if found:
            break
    if not found:
        low = s.lower()
        for letter, opt in zip(letters, options):
            body = option_text(opt).lower()
            if body and body in low:
                found[letter] = low.rfind(body)
    if not found:
        return ""
    return max(found.items(), key=lambda kv: kv[1])[0]


# -------------------------------------------------------------------------------------- aggregation
def mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def group_scores(rows: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any],
                 score_key: str = "official") -> dict[str, dict[str, Any]]:
    """{group: {"score": mean score, "n": items}} over rows, groups sorted by name; None keys skipped."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        k = key(row)
        if k is None:
            continue
        groups[str(k)].append(float(row.get(score_key) or 0.0))
    return {k: {"score": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}


def meta_key(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A grouping key reading `row["meta"][name]`."""
    return lambda row: (row.get("meta") or {}).get(name)


def in_order(breakdown: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """A breakdown with the groups named in `order` first, in that order, then the others as they were."""
    return {k: breakdown[k] for k in order if k in breakdown} | {k: v for k, v in breakdown.items() if k not in order}


def accuracy_summary(rows: Sequence[Mapping[str, Any]], breakdowns: Mapping[str, str],
                     score_key: str = "official") -> dict[str, Any]:
    """Item-level mean as the overall number, plus one breakdown per named meta field."""
    return {
        "overall": mean(float(r.get(score_key) or 0.0) for r in rows),
        "n": len(rows),
        "breakdowns": {label: group_scores(rows, meta_key(field), score_key)
                       for label, field in breakdowns.items()},
    }


def reference_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The reference protocol's numbers: item-level mean overall and by problem type."""
    return {
        "overall": mean(float(r.get("reference") or 0.0) for r in rows),
        "n": len(rows),
        "breakdowns": {"problem type": group_scores(rows, lambda r: r.get("problem_type"), "reference")},
    }
