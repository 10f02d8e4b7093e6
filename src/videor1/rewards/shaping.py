"""Shaping rewards that do not judge the answer itself: the format reward and the length bonus.

Pure Python over strings and lists (the RL trainer converts to tensors itself).  Rules and
departures are listed in the package docstring, ``videor1.rewards``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Hashable, Sequence

from videor1.rewards.parsing import as_text

_THINK, _ANSWER_END = "<think>", "</answer>"
_JOIN = re.compile(r"</think>\s*<answer>")


def format_reward(completion: Any) -> float:
    r"""1.0 if the whole stripped completion is ``<think>...</think>`` then ``<answer>...</answer>``
    (only whitespace between them, nothing before or after), else 0.0.  Non-strings score 0.0.

    Decides exactly ``re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL)``,
    but in linear time: that regex backtracks quadratically on texts with many ``</think><answer>``
    pairs.  The text must start with ``<think>`` and end with ``</answer>``, and the first
    ``</think>`` + whitespace + ``<answer>`` after the opening tag must end before the closing tag
    (a later one would end later still).
    """
    text = as_text(completion).strip()
    if not (text.startswith(_THINK) and text.endswith(_ANSWER_END)):
        return 0.0
    join = _JOIN.search(text, len(_THINK))
    return 1.0 if join is not None and join.end() <= len(text) - len(_ANSWER_END) else 0.0


def length_bonus(
    correct: Sequence[bool],
    lengths: Sequence[int],
    group_ids: Sequence[Hashable],
    *,
    omega: float = 0.2,
    min_len: int = 320,
    max_len: int = 512,
) -> list[float]:
    """+omega for each correct completion whose token length is in [min_len, max_len] (inclusive),
    but only inside groups (same group id, i.e. the same prompt) with more than one correct completion.

    Raises ValueError when the three sequences differ in length or min_len > max_len.
    """
    if not len(correct) == len(lengths) == len(group_ids):
        raise ValueError(
            f"length_bonus: correct ({len(correct)}), lengths ({len(lengths)}) and group_ids "
            f"({len(group_ids)}) must have the same length"
        )
    if min_len > max_len:
        raise ValueError(f"length_bonus: min_len ({min_len}) > max_len ({max_len})")
    n_correct = Counter(g for g, ok in zip(group_ids, correct) if ok)
    return [
        float(omega) if ok and n_correct[g] > 1 and min_len <= n <= max_len else 0.0
        for ok, n, g in zip(correct, lengths, group_ids)
    ]
