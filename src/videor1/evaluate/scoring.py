"""Scoring: the reference protocol (shared with the RL rewards) and the parsers official protocols use.

Reference protocol (SPEC §7), `reference_score`: `videor1.rewards.eval_score`, the module that also holds
the RL accuracy reward (so reward and metric cannot drift apart): the answer is the first
`<answer>...</answer>` span, or the whole output when there is none; exact letter for multiple choice,
the reference numerical rule, WER for OCR, ROUGE for free-form, mean relative accuracy for regression in
the reference evaluation's own float32 arithmetic (Video-R1 `src/eval_bench.py`:
`videor1.rewards.reference_mean_relative_accuracy`; gt 5, answer 4.5 scores 0.9 there, 0.8 exactly).
`src/eval_bench.py` scores only multiple choice, numerical and regression (any other type 0); OCR and
free-form items are scored by the training reward's rules here.

Official protocols parse answers with each benchmark's own rule. Where we depart from them:

* Every official parser is applied to the answer span (`answer_span`), not the whole output: Video-R1
  models reason inside `<think>` first, and the official parsers were written for direct answers, so on
  the whole output they would pick letters out of the reasoning.
* Where an official parser falls back to a random guess (MMMU), an LLM judge (TempCompass; MMVU's own
  GPT-4o scorer) or leaves the item out (Video-MMMU drops an empty response as "API Error"), the answer
  scores 0 here: deterministic, no network, every item in the denominator.
* VSI-Bench's official MRA is computed as the official scorer computes it, in binary floating point
  (`vsi_official_mra`); the project's exact MRA (`videor1.rewards.mean_relative_accuracy`, thresholds k/20 as
  exact decimals) is `mra`, VSI-Bench's named `exact_score` / `lenient_score` options. They differ only where a relative error lies on a threshold in decimal but not in
  float (pred 1.595, gt 1.1: official 0.1, exact 0.2).
"""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from videor1.rewards import eval_score, extract_answer, mean_relative_accuracy

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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


#: VSI-Bench's confidence thresholds as its scorer builds them: `np.linspace(start=.5, end=.95, num)` with
#: num = int((.95 - .5) / .05 + 2) = 10 in float arithmetic (0.5, 0.55, ..., 0.95 as binary floats).
VSI_THRESHOLDS = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))


def vsi_official_mra(pred: float | None, gt: float | None) -> float:
    """VSI-Bench's official MRA in float64, item for item: the mean over θ of `abs(pred - gt) / gt <= 1 - θ`
    (θ in `VSI_THRESHOLDS`; division by gt itself, not |gt|, as officially). A missing number scores 0 (the
    official TypeError path); gt = 0 scores 1 only for pred = 0 (officially a ZeroDivisionError)."""
    if pred is None or gt is None:
        return 0.0
    if gt == 0:
        return 1.0 if pred == 0 else 0.0
    rel = abs(float(pred) - float(gt)) / float(gt)
    return float(np.mean(rel <= 1 - VSI_THRESHOLDS))


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


# ------------------------------------------------------------------- the benchmarks' own answer rules
# Each function states one official scorer's rule (read from the benchmark's released evaluation code) as
# a small pure function; tests/test_official_scorers.py checks each against an independent transcription.
def vsi_token(text: str) -> str:
    """VSI-Bench's `fuzzy_matching`: the text up to the first *space* (not any whitespace), trailing dots
    removed. "3\nchairs" stays one token, so it is not a number; "1,200" keeps its comma."""
    return (text or "").split(" ")[0].rstrip(".").strip()


def vsi_float(token: str) -> float | None:
    """VSI-Bench's `to_float`: Python's float() of the token, or None (no comma stripping)."""
    try:
        return float(token)
    except (TypeError, ValueError):
        return None


def mvbench_correct(pred: str, letter: str) -> bool:
    """MVBench's `check_ans` against the truth "(X) text": the lower-cased first space-separated token of
    the prediction must contain a letter a-g, and with its dots dropped be part of "(x)" (or contain it)."""
    first = (pred or "").lower().split(" ")[0]
    truth = f"({letter.lower()})"
    if not any(c in first for c in "abcdefg"):
        return False
    return first.replace(".", "") in truth or truth in first


VIDEOMME_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                     "The best option isThe correct option is", "Best answer:Best option:", "Answer:", "Option:",
                     "The correct answer", "The correct option")   # two pairs joined as in the official list


def videomme_letter(text: str) -> str:
    """Video-MME's `extract_characters_regex`: drop the answer prefixes, give up on a long answer with no
    capital A-D, else the first capital A-D anywhere (so "After" reads as A)."""
    s = (text or "").strip()
    for prefix in VIDEOMME_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return ""
    m = re.search("[ABCD]", s)
    return m.group(0) if m else ""


def tempcompass_multi_choice(pred: str, answer: str) -> float | None:
    """TempCompass's multi-choice rule against the answer line ("B. fast"); None = no rule matched (the
    official script asks an LLM judge there)."""
    if pred == answer:
        return 1.0
    if pred in ("A", "B", "C", "D"):
        return float(pred == answer[:1])
    for close in (".", ")"):
        if any(pred.startswith(f"{c}{close}") for c in "ABCD"):
            return float(pred.split(close)[0] == answer[:1])
    return None


def tempcompass_yes_no(pred: str, answer: str) -> float | None:
    """TempCompass's yes/no rule: the lower-cased prediction starts with "yes" or "no"; None otherwise."""
    low = (pred or "").lower()
    said = "yes" if low.startswith("yes") else "no" if low.startswith("no") else None
    return None if said is None else float(said == answer)


def tempcompass_caption_matching(pred: str, question: str, answer: str) -> float | None:
    """TempCompass's caption-matching `eval_rule`: the prediction must equal an option line, an option's
    sentence (also after ") "), or an option's label ("Caption A", "A", "Option 1", "1"; dots ignored);
    the last kind that matches wins. None when nothing matches."""
    lines = question.split("\n")[1:]
    sentences = [line.split(": ")[1] if ": " in line else None for line in lines]
    labels = [line.split(": ")[0] for line in lines]
    labels += [re.sub(r"^(Sentence|Option|Caption) ", "", label) for label in labels]
    said = None
    for line in lines:
        if line == pred:
            said = line
    for sentence in sentences:
        if sentence is not None and (sentence == pred or (") " in pred and sentence == pred.split(") ")[1])):
            said = sentence
    for label in labels:
        if label == pred or label == pred.replace(".", ""):
            said = label
    if said is None:
        return None
    head = answer.split(": ")
    ok = said in (answer, answer.split(":")[0]) or (len(head) > 1 and said == head[1]) or \
        (len(head[0].split()) > 1 and said == head[0].split()[1])
    return float(ok)


_MMVU_FIRST_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def mmvu_choice_correct(pred: str, answer: str, choice: str | None) -> bool:
    """MMVU's rule-based multiple-choice check (the lmms-eval `mmvu_val` task; no LLM judge for multiple
    choice there). Correct when, case-insensitively, the first standalone letter A-E is the answer, or the
    answer letter stands alone anywhere, or the answer's choice text appears in the prediction, or the answer
    letter appears anywhere (even inside a word) together with a word of 3+ letters of that choice."""
    p, a = (pred or "").strip(), (answer or "").strip()
    first = _MMVU_FIRST_LETTER.search(p)
    if first and first.group(1).upper() == a.upper():
        return True
    if a.upper() in p.upper() and re.search(rf"\b{re.escape(a)}\b", p, re.IGNORECASE):
        return True
    if choice is None:
        return False
    text, low = choice.strip().lower(), p.lower()
    if text in low:
        return True
    if a.upper() not in p.upper():
        return False
    words = [w.strip(string.punctuation) for w in text.split() if len(w.strip(string.punctuation)) > 2]
    return any(w in low for w in words)


def _last_of(candidates: Sequence[str], text: str, marker: str) -> str:
    """The candidate whose `marker` (a format with one {}) occurs last in text; the first one on ties."""
    return max(candidates, key=lambda c: text.rfind(marker.format(c)))


def mmmu_choice(response: str, options: Sequence[str]) -> str:
    """MMMU's `parse_multi_choice_response` as Video-MMMU runs it: `options` as the release states them
    (letters A, B, ... by position). Edge punctuation , . ! ? ; : ' stripped (one character kind after the
    other), then the letters marked "X." or "X:", else "(X)", else "X " (space after), else, for a response of
    more than 5 words, the options whose text it contains; several found: the one occurring last. "" when
    nothing is found or the response is empty (Video-MMMU: "No Answer Found" / "API Error")."""
    if not response:
        return ""
    for ch in ",.!?;:'":
        response = response.strip(ch)
    text = f" {response} "
    letters = LETTERS[: len(options)]
    period = [c for c in letters if f"{c}." in text]
    colon = [c for c in letters if f"{c}:" in text]
    if period or colon:
        return _last_of(period + colon, text, "{}." if period else "{}:")
    for found_as, last_as in (("({})", "({})"), ("{} ", " {} ")):
        found = [c for c in letters if found_as.format(c) in text]
        if found:
            return _last_of(found, text, last_as)
    if len(text.split()) <= 5:
        return ""
    low = text.lower()
    found = [c for c, opt in zip(letters, options) if str(opt).lower() in low]
    return max(found, key=lambda c: low.rfind(str(options[LETTERS.index(c)]).lower())) if found else ""


_MMMU_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ", "are ",
                        "in total ", "total ", "identify ", "recognize ", "calculated as ", "counted as ",
                        "measured as ", "observed as ", "concluded as ", "found to be ", "equals ",
                        "determined to be ", "number of ", "value is ", "adds up to ", "have ", "has ")
_MMMU_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}
_MMMU_NUMBERS = (re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),                    # 1,234,567
                 re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),                    # 1.5e3
                 re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"))   # 12, 1.5, .5


def mmmu_normalize(text: str) -> list[float | str]:
    """MMMU's `normalize_str`: a number (commas dropped, Python float) rounded to 2 decimals, else the
    lower-cased text; a single character becomes " x" and "x " (no match inside words)."""
    s = text.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        pass
    s = s.lower()
    return [f" {s}", f"{s} "] if len(s) == 1 else [s]


def mmmu_key_parts(response: str) -> list[str]:
    """MMMU's key sub-responses: per line of the lower-cased response, the shortest tail after an indicator
    word ("is ", "so ", ..., and "=" on the last line); the whole lower-cased response when none. (The
    official split also cuts at ". " before a capital, which never occurs after lower-casing.)"""
    text = response.strip().strip(".").lower()
    lines = text.split("\n")
    keys: list[str] = []
    for i, line in enumerate(lines):
        indicators = _MMMU_KEY_INDICATORS + (("=",) if i == len(lines) - 1 else ())
        best: str | None = None
        for indicator in indicators:
            if indicator in line:
                tail = line.split(indicator)[-1].strip()
                if not best or len(tail) < len(best):
                    best = tail
        if best and best.strip() not in _MMMU_TRIVIAL:
            keys.append(best)
    return keys or [text]


def mmmu_open_predictions(response: str) -> list[float | str]:
    """MMMU's `parse_open_response`: the key parts and every number in them, normalized, deduplicated."""
    keys = mmmu_key_parts(response)
    found = keys + [m for key in keys for pattern in _MMMU_NUMBERS for m in pattern.findall(key)]
    return list(dict.fromkeys(v for f in found for v in mmmu_normalize(f)))


def mmmu_open_correct(answer: str, response: str) -> bool:
    """MMMU's `eval_open`: a predicted number equal to the normalized answer, or the normalized answer text
    inside a predicted text. An empty response is False (Video-MMMU leaves it out as "API Error")."""
    if not response:
        return False
    golds = mmmu_normalize(str(answer))
    for pred in mmmu_open_predictions(response):
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


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
