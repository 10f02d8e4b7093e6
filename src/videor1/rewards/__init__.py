"""Rule-based rewards (SPEC §5): answer extraction, accuracy by problem type, format, registry.

Answer extraction
  * The answer is the stripped content of the first ``<answer>`` ... ``</answer>`` span (newlines
    allowed); ``""`` when there is none.  With nested or repeated tags the first opening tag pairs with
    the first closing tag after it (``<answer><answer>A</answer></answer>`` -> ``"<answer>A"``), as in
    the reference regex.
  * The ground truth is extracted from ``solution`` the same way; a solution without tags is taken
    whole (benchmark files often store the bare answer).
  * An empty answer or an empty ground truth scores 0.0 for every type.  A non-string completion or
    solution (None, a number) counts as empty.  Nothing here raises on any text; only an unknown
    ``problem_type`` (a programming / validation error) raises ValueError.  Problem types are matched
    case-insensitively (``"ocr"`` = ``"OCR"``).

Accuracy, ``score(problem_type, completion, solution, *, reference=False)`` (training)
  * multiple choice -- lenient (default): both answers are parsed to an option letter and compared.
    Accepted forms, after an optional leading ``Option `` (any case): ``A``, ``a``, ``A.``, ``A)``,
    ``A:``, ``(A)``, ``[A]``, and a delimited form followed by whitespace and option text
    (``A. a red car``).  Refused: a bare letter followed by text without delimiter (``A dog``,
    ``I think A or B``), markdown (``**A**``), several letters.  The option text is not checked
    against the options.  ``reference=True``: exact string equality of the stripped answers (so
    ``a`` or ``A.`` score 0, as in the reference).
  * numerical -- both must parse to finite numbers that agree after Python's ``round(x, 2)`` (ties
    follow binary-float rounding, as in the reference: 2.675 -> 2.67).
    Lenient parsing (default): the answer starts with the number and may end with a unit or words
    without digits: ``1,000`` (commas only as correct thousands groups), ``3.0`` (= ``3``), ``-2``,
    ``.5``, ``1e3``, ``42 meters``, ``50%``; refused: ``about 3``, ``3 or 4``, ``3-5``, ``1,00``,
    ``$5``, ``inf``/``nan``.  No decimal-point agreement is required.
    ``reference=True``: every comma is removed and the whole answer must be one number (no units);
    both answers must also agree on containing a decimal marker, which the reference defines as
    ``.`` *or* ``,`` -- so ``3.0`` vs ``3`` and ``1,000`` vs ``1000`` both score 0 there.
  * OCR -- max(0, 1 - WER), WER = word-level Levenshtein distance / number of ground-truth words,
    words = whitespace tokens, case- and punctuation-sensitive in both modes (as the reference).
  * free-form -- mean of ROUGE-1, ROUGE-2, ROUGE-L F-measures (rouge-score, ``use_stemmer=True``; its
    tokenizer lower-cases and drops punctuation), clamped to [0, 1].  Same in both modes.
  * regression -- 1 - min(1, |pred - gt| / |gt|), numbers parsed as for numerical (no decimal
    agreement in either mode).  gt == 0: 1.0 if pred == 0 else 0.0.  ``reference=True``: the
    reference GRPO reward's epsilon form ``1 - clamp((|d| + 1e-9) / (|gt| + 1e-9), 0, 1)``, which
    gives 0.0 for an exact 0 == 0 answer and slightly below 1.0 for every other exact answer.

Evaluation metric, ``eval_score(problem_type, completion, solution, *, reference=True)``
  * As ``score`` with the reference rules by default, except that a completion without an
    ``<answer>`` span is scored as its whole stripped text, and regression uses MRA: with the
    reference rules the reference evaluation's own (``src/eval_bench.py``) float32 arithmetic,
    ``reference_mean_relative_accuracy`` (rel = |pred - gt| / (|gt| + 1e-8) and rel < 1 - θ, all in
    float32, so gt 5, pred 4.5 scores 0.9 there); with ``reference=False`` the exact MRA below.
  * ``mean_relative_accuracy(pred, gt, *, inclusive=False)``, the project's one MRA: the fraction of θ
    in {0.50, 0.55, ..., 0.95} (ten values, built from integer hundredths) with |pred - gt| / |gt|
    within 1 - θ: strictly (``<``, the default, SPEC §7, ``eval_score(reference=False)``) or, with
    ``inclusive=True``, ``<=`` (the official comparison, but exact; the official protocol's float
    reproduction is ``videor1.evaluate.scoring.vsi_official_mra``).  The
    test is done in exact rational arithmetic on the shortest decimal form of each float, so a
    relative error of exactly 5 % (pred 1.05, gt 1) fails θ = 0.95 when strict and passes it when
    inclusive, whatever binary floats say.  gt == 0: 1.0 if pred == 0 else 0.0; non-finite input:
    0.0.  Departure: reference implementations compute this in floats (VSI-Bench: numpy,
    ``linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))``, ten thresholds because that float is
    10.999...), so a result that lies exactly on a threshold can flip there; VSI-Bench divides by
    zero at gt == 0 (some ports score an exact 0 there as 1.0, as we do).

Format, ``format_reward(completion)``
  * 1.0 if the whole *stripped* completion fully matches ``<think>.*?</think>\\s*<answer>.*?</answer>``
    (DOTALL), else 0.0.  Departure: the reference does not strip, so leading/trailing whitespace
    fails there and passes here.

Correct, ``CORRECT_THRESHOLD`` = 0.1
  * An accuracy above it counts as "correct" for T-GRPO's temporal bonus, the length bonus and the
    training statistics (the reference's ``> 0.1``).  Defined once, in ``videor1.rewards.accuracy``.

Length bonus: not a reward here.  It needs token lengths and prompt groups, so the RL step computes
it when the RL config says ``length_bonus: true`` (``videor1.rl.algorithms.length_bonus``: +omega for
each correct completion whose token length is in [min_len, max_len], only in groups with more than
one correct completion; omega = 0.2 as in the reference code, the paper says 0.1).

Registry: ``REGISTRY``, ``register(name)``, ``get_reward(name)``
  * ``REGISTRY`` is a ``videor1.registry.Registry("reward")``; ``register``/``get_reward`` are thin
    names over its ``register``/``get``.  Each entry is ``fn(completions, **columns) -> list[float]``
    (TRL convention); columns are lists aligned with the completions, extra columns are ignored, a
    missing column raises KeyError naming it.  Built-ins: "accuracy" (problem_type, solution),
    "accuracy_reference" (same, reference rules), "format".  An unknown name raises KeyError listing
    the known ones.
"""

from videor1.rewards.accuracy import (
    CORRECT_THRESHOLD,
    MRA_THRESHOLDS_PERCENT,
    canonical_problem_type,
    eval_score,
    mean_relative_accuracy,
    reference_mean_relative_accuracy,
    score,
)
from videor1.rewards.parsing import extract_answer, parse_choice, parse_number, parse_number_reference
from videor1.rewards.registry import REGISTRY, completion_text, get_reward, register
from videor1.rewards.shaping import format_reward

__all__ = [
    "CORRECT_THRESHOLD",
    "MRA_THRESHOLDS_PERCENT",
    "REGISTRY",
    "canonical_problem_type",
    "completion_text",
    "eval_score",
    "extract_answer",
    "format_reward",
    "get_reward",
    "mean_relative_accuracy",
    "parse_choice",
    "parse_number",
    "parse_number_reference",
    "reference_mean_relative_accuracy",
    "register",
    "score",
]
