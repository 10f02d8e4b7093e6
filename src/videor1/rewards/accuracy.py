"""Accuracy by problem type: the training reward (`score`) and the evaluation metric (`eval_score`).

Both go through one scorer per type, so the RL reward and the benchmark metric cannot drift apart;
they differ only in answer extraction (evaluation falls back to the whole output) and in the
regression rule (training: 1 - relative error; evaluation: MRA).  The exact rules are listed in the
package docstring, ``videor1.rewards``.

Regression arithmetic, each matched to its source (Video-R1, github.com/tulerfeng/Video-R1):

* training reward, ``score(..., reference=True)``: the reference's GRPO reward
  (``src/r1-v/src/open_r1/grpo.py``, ``accuracy_reward``) is no MRA but 1 - relative error with an
  epsilon, ``1 - clamp((|pred - gt| + 1e-9) / (|gt| + 1e-9), 0, 1)`` in Python floats
  (`reference_relative_error_score`).  The default training reward is the plain 1 - min(1, rel).
* evaluation, ``eval_score(..., reference=True)`` (the reference protocol): the reference's
  ``src/eval_bench.py`` MRA, in float32 with an epsilon and a strict ``<``
  (`reference_mean_relative_accuracy`), which makes some boundaries inclusive (gt 5, pred 4.5: 0.9).
* ``eval_score(..., reference=False)`` and the benchmarks' exact options: the exact-fraction
  `mean_relative_accuracy`.
"""

from __future__ import annotations

import functools
import math
import numbers
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from videor1.data.records import PROBLEM_TYPES
from videor1.rewards.parsing import (
    extract_answer,
    has_decimal_marker,
    parse_choice,
    parse_number,
    parse_number_reference,
)

#: Accuracy above this counts as "correct": for T-GRPO's temporal bonus, the length bonus and the
#: all-correct / all-wrong statistics (the reference's ``> 0.1``).  The one definition; import it.
CORRECT_THRESHOLD = 0.1

#: θ ∈ {0.50, 0.55, ..., 0.95} for MRA, kept as exact integers in hundredths: θ = k / 100.
MRA_THRESHOLDS_PERCENT: tuple[int, ...] = tuple(range(50, 100, 5))

_CANONICAL = {name.lower(): name for name in PROBLEM_TYPES}


def canonical_problem_type(problem_type: Any) -> str:
    """The canonical spelling of a problem type (matched case-insensitively, whitespace stripped).

    Raises ValueError for an unknown type: that is a programming or data-validation error, not a bad
    completion, so it is not turned into a 0 reward.
    """
    key = problem_type.strip().lower() if isinstance(problem_type, str) else None
    if key not in _CANONICAL:
        raise ValueError(f"unknown problem_type {problem_type!r}; known: {', '.join(PROBLEM_TYPES)}")
    return _CANONICAL[key]


def _number_parser(reference: bool) -> Callable[[str], float | None]:
    return parse_number_reference if reference else parse_number


def choice_score(pred: str, gt: str, *, reference: bool = False) -> float:
    """Multiple choice: exact string equality (reference) or the same parsed option letter (lenient)."""
    if reference:
        return 1.0 if pred == gt else 0.0
    letter = parse_choice(pred)
    return 1.0 if letter is not None and letter == parse_choice(gt) else 0.0


def numerical_score(pred: str, gt: str, *, reference: bool = False) -> float:
    """Numerical: both parse and agree after Python's round(x, 2); the reference also requires both
    answers to agree on containing a decimal marker ('.' or ',')."""
    if reference and has_decimal_marker(pred) != has_decimal_marker(gt):
        return 0.0
    parse = _number_parser(reference)
    p, g = parse(pred), parse(gt)
    if p is None or g is None:
        return 0.0
    return 1.0 if round(p, 2) == round(g, 2) else 0.0


def word_edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over word lists (substitution, insertion, deletion all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = prev[j - 1] if r == h else 1 + min(prev[j], cur[j - 1], prev[j - 1])
        prev = cur
    return prev[-1]


def ocr_score(pred: str, gt: str) -> float:
    """OCR: max(0, 1 - WER), words = whitespace tokens, case- and punctuation-sensitive."""
    ref, hyp = gt.split(), pred.split()
    if not ref or not hyp:
        return 0.0
    if abs(len(hyp) - len(ref)) >= len(ref):  # the distance is at least the length difference: WER >= 1
        return 0.0
    return max(0.0, 1.0 - word_edit_distance(ref, hyp) / len(ref))


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # lazy: pulls in nltk's stemmer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def free_form_score(pred: str, gt: str) -> float:
    """Free-form: mean of ROUGE-1, ROUGE-2 and ROUGE-L F-measures (stemming on), clamped to [0, 1]."""
    scores = _rouge_scorer().score(gt, pred)
    mean = (scores["rouge1"].fmeasure + scores["rouge2"].fmeasure + scores["rougeL"].fmeasure) / 3.0
    return min(1.0, max(0.0, mean))


def relative_error_score(pred: float, gt: float) -> float:
    """Training regression reward: 1 - min(1, |pred - gt| / |gt|); gt == 0 scores 1 only for pred == 0."""
    if gt == 0:
        return 1.0 if pred == 0 else 0.0
    return 1.0 - min(1.0, abs(pred - gt) / abs(gt))


#: The reference GRPO reward's epsilon, in numerator and denominator alike.
REFERENCE_REWARD_EPSILON = 1e-9


def reference_relative_error_score(pred: float, gt: float) -> float:
    """The reference's training regression reward: 1 - clamp((|pred - gt| + ε) / (|gt| + ε), 0, 1), ε = 1e-9,
    in Python floats.  An exact answer scores just under 1 (1 - ε / (|gt| + ε)), and 0 == 0 scores 0.0."""
    rel = (abs(pred - gt) + REFERENCE_REWARD_EPSILON) / (abs(gt) + REFERENCE_REWARD_EPSILON)
    return 1.0 - min(1.0, max(0.0, rel))


def _exact(x: Any) -> Fraction | None:
    """An int or float as an exact fraction; None when it is not a finite number.

    A float is taken as its shortest round-tripping decimal (``repr``), which is the number as it was
    written in the text, so a 5 % error is exactly 5 % and a strict threshold test is decided exactly
    rather than by binary-float noise.
    """
    if isinstance(x, int):
        return Fraction(x)
    if not isinstance(x, numbers.Real):
        raise TypeError(f"expected a real number, got {type(x).__name__}: {x!r}")
    value = float(x)
    return Fraction(repr(value)) if math.isfinite(value) else None


def mean_relative_accuracy(pred: float, gt: float, *, inclusive: bool = False) -> float:
    """MRA: the fraction of θ in {0.50, 0.55, ..., 0.95} (ten values) whose tolerance 1 - θ the relative
    error |pred - gt| / |gt| is within, decided exactly.  The project's MRA wherever no source's float
    arithmetic is to be reproduced (the reference protocol's is `reference_mean_relative_accuracy`).

    ``inclusive=False`` (the default; SPEC §7, `eval_score` with ``reference=False``): strictly
    within, error < 1 - θ.  ``inclusive=True``: error <= 1 - θ, the comparison of VSI-Bench's official
    scorer (`videor1.evaluate.scoring.mra`).  They differ only when the error is exactly a multiple of
    5 % (pred 1.05 vs gt 1: strict 0.9, inclusive 1.0).

    Decided exactly: each value is taken as its shortest decimal form (what the text said; ``repr`` of
    the float) as a `fractions.Fraction`, and each tolerance is the exact fraction (100 - k) / 100, so
    binary-float noise cannot move a result that lies exactly on a threshold (in floats,
    |1.05 - 1| / 1 = 0.050000000000000044 > 0.05).

    gt == 0: the relative error is undefined; an exact answer (pred == 0) scores 1.0, anything else 0.0
    (as the training regression reward; the official scorers divide by zero there).  A non-finite input
    scores 0.0; a non-number raises TypeError.
    """
    p, g = _exact(pred), _exact(gt)
    if p is None or g is None:
        return 0.0
    if g == 0:
        return 1.0 if p == 0 else 0.0
    error = abs(p - g) / abs(g)
    tolerances = (Fraction(100 - k, 100) for k in MRA_THRESHOLDS_PERCENT)
    hits = sum(1 for tol in tolerances if (error <= tol if inclusive else error < tol))
    return hits / len(MRA_THRESHOLDS_PERCENT)


#: The reference evaluation's MRA thresholds θ as float32 (what ``torch.arange(0.5, 0.975, 0.05,
#: dtype=torch.float32)`` gives; tests check it), and the epsilon it adds to |gt|, as float32.
REFERENCE_MRA_THRESHOLDS = (np.array(MRA_THRESHOLDS_PERCENT, dtype=np.float64) / 100).astype(np.float32)
REFERENCE_MRA_EPSILON = np.float32(1e-8)


def reference_mean_relative_accuracy(pred: float, gt: float) -> float:
    """MRA as the reference evaluation (Video-R1 ``src/eval_bench.py``) computes it, item for item: both
    numbers rounded to float32, rel = |pred - gt| / (|gt| + 1e-8) in float32, and θ counted when
    rel < 1 - θ, also in float32 (`REFERENCE_MRA_THRESHOLDS`).  The float32 rounding makes some decimal
    boundaries inclusive: gt 5, pred 4.5 (10 %) passes θ = 0.90 and scores 0.9, where the exact strict
    MRA gives 0.8; gt 7.1, pred 6.745 (5 %) scores 1.0, not 0.9.

    Returns hits / 10 in float64 (0.9), where the reference's float32 ``.mean().item()`` returns
    0.8999999761581421: the same in float32, below any printed digit.  gt == 0: rel = |pred| / 1e-8, so
    pred == 0 scores 1.0 and anything else 0.0 (as the exact MRA); a non-finite number scores 0.0.
    """
    with np.errstate(over="ignore"):   # a number beyond float32 becomes inf, as in torch, and scores 0
        p, g = np.float32(pred), np.float32(gt)
    if not (np.isfinite(p) and np.isfinite(g)):
        return 0.0
    rel = np.abs(p - g) / (np.abs(g) + REFERENCE_MRA_EPSILON)
    hits = int(np.count_nonzero(rel < np.float32(1) - REFERENCE_MRA_THRESHOLDS))
    return hits / len(REFERENCE_MRA_THRESHOLDS)


def regression_score(pred: str, gt: str, *, reference: bool = False, metric: str = "relative") -> float:
    """Regression: parse both, then ``metric`` "relative" (training) or "mra" (evaluation), each in the
    reference's arithmetic with ``reference=True`` (see the module doc)."""
    parse = _number_parser(reference)
    p, g = parse(pred), parse(gt)
    if p is None or g is None:
        return 0.0
    if metric == "mra":
        return reference_mean_relative_accuracy(p, g) if reference else mean_relative_accuracy(p, g)
    return reference_relative_error_score(p, g) if reference else relative_error_score(p, g)


def _score_answers(problem_type: str, pred: str, gt: str, *, reference: bool, regression: str) -> float:
    kind = canonical_problem_type(problem_type)
    if not pred or not gt:
        return 0.0
    if kind == "multiple choice":
        return choice_score(pred, gt, reference=reference)
    if kind == "numerical":
        return numerical_score(pred, gt, reference=reference)
    if kind == "OCR":
        return ocr_score(pred, gt)
    if kind == "free-form":
        return free_form_score(pred, gt)
    return regression_score(pred, gt, reference=reference, metric=regression)


def score(problem_type: str, completion: Any, solution: Any, *, reference: bool = False) -> float:
    """The training accuracy reward of one completion against its ``solution`` ("<answer>X</answer>").

    The answer is the first ``<answer>`` span of the completion ("" -> 0.0); the ground truth is the
    first span of the solution, or the whole solution when it has no tags.  ``reference=True`` applies
    the reference's exact rules.  Never raises on any completion/solution; raises ValueError only for
    an unknown ``problem_type``.
    """
    pred = extract_answer(completion)
    gt = extract_answer(solution, fallback_to_text=True)
    return _score_answers(problem_type, pred, gt, reference=reference, regression="relative")


def eval_score(problem_type: str, completion: Any, solution: Any, *, reference: bool = True) -> float:
    """The evaluation metric: as `score`, but a completion without an ``<answer>`` span is scored as
    a whole (stripped), regression uses MRA, and the reference rules are the default."""
    pred = extract_answer(completion, fallback_to_text=True)
    gt = extract_answer(solution, fallback_to_text=True)
    return _score_answers(problem_type, pred, gt, reference=reference, regression="mra")
