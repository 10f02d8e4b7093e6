"""Turning model text into answers: the `<answer>` span, option letters and numbers.

Every parser here is total: it returns a value or ``None`` / ``""`` and never raises on any string,
however long or odd.  The rules (and where they depart from the Video-R1 reference) are listed in the
package docstring, ``videor1.rewards``.
"""

from __future__ import annotations

import math
import re
from typing import Any

_OPEN, _CLOSE = "<answer>", "</answer>"

# One number: optional sign, digits with correct thousands grouping or plain digits, optional
# fraction, optional exponent; or a bare fraction (".5").
_NUMBER = r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# Lenient: the number, then optionally a unit or trailing words that contain no digit ("42 meters").
_LENIENT_NUMBER = re.compile(rf"({_NUMBER})(?:\s*[^\d\s][^\d]*)?")
# Reference: after removing every comma, the whole answer is one number (no units).
_STRICT_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

_OPTION_PREFIX = re.compile(r"option\s+", re.IGNORECASE)
_CHOICE = re.compile(r"(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])([.):]?))(.*)", re.DOTALL)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-"})


def as_text(value: Any) -> str:
    """A completion or solution as a string: ``str`` as is, anything else (``None``, numbers) as ``""``."""
    return value if isinstance(value, str) else ""


def extract_answer(text: Any, *, fallback_to_text: bool = False) -> str:
    """The stripped content of the first ``<answer> ... </answer>`` span; ``""`` when there is none.

    Equivalent to the reference's ``re.search(r"<answer>\\s*(.*?)\\s*</answer>", text, re.DOTALL)``
    followed by ``strip()``, but done with two ``str.find`` calls so it stays linear on huge inputs.
    With ``fallback_to_text=True`` (the evaluation fallback) a text without a complete span yields the
    whole stripped text instead.  A non-string input yields ``""``.
    """
    text = as_text(text)
    start = text.find(_OPEN)
    if start >= 0:
        end = text.find(_CLOSE, start + len(_OPEN))
        if end >= 0:
            return text[start + len(_OPEN) : end].strip()
    return text.strip() if fallback_to_text else ""


def parse_choice(answer: str) -> str | None:
    """The option letter (upper case) an answer names, or ``None``.

    Accepted (after stripping, an optional leading ``Option `` in any case): ``A``, ``a``, ``A.``,
    ``A)``, ``A:``, ``(A)``, ``[A]``, and any of the delimited forms followed by whitespace and option
    text (``A. a red car``, ``(B) two``).  A bare letter followed by text without a delimiter is refused
    (``A dog``, ``I think A or B``), since it cannot be told from an English word.
    """
    s = answer.strip()
    prefix = _OPTION_PREFIX.match(s)
    if prefix is not None:
        s = s[prefix.end() :]
    m = _CHOICE.fullmatch(s)
    if m is None:
        return None
    paren, bracket, bare, delimiter, rest = m.groups()
    letter = paren or bracket or bare
    delimited = bool(paren or bracket or delimiter)
    if rest and not (delimited and rest[0].isspace()):
        return None
    return letter.upper()


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def parse_number(answer: str) -> float | None:
    """Lenient number parsing (training default): ``1,000``, ``3.0``, ``-2``, ``1e3``, ``.5``, ``42 meters``.

    The answer must start with the number; it may be followed by a unit or words that contain no
    digit.  Commas are accepted only as correct thousands separators (``1,000``, not ``1,00``).
    Refused: a second number (``3 or 4``, ``3-5``), leading words (``about 3``), non-finite values.
    The Unicode minus sign and en dash count as ``-``.
    """
    s = answer.strip().translate(_MINUS_SIGNS)
    m = _LENIENT_NUMBER.fullmatch(s)
    if m is None:
        return None
    return _finite(m.group(1).replace(",", ""))


def parse_number_reference(answer: str) -> float | None:
    """The reference's parsing: drop every comma, then the whole answer must be one number.

    The reference calls ``float()``, which would also take ``inf``, ``nan`` and ``1_000``; we refuse
    those (and any non-finite value).
    """
    s = answer.strip().replace(",", "")
    if _STRICT_NUMBER.fullmatch(s) is None:
        return None
    return _finite(s)


def has_decimal_marker(answer: str) -> bool:
    """The reference's "has a decimal point" test: a ``.`` *or* a ``,`` anywhere in the answer."""
    return "." in answer or "," in answer
