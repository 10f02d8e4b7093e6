"""The shaping reward that does not judge the answer itself: the format reward.

Pure Python over strings.  Rules and departures are listed in the package docstring, ``videor1.rewards``.
(The length bonus needs token lengths and prompt groups, so it lives with the RL math:
`videor1.rl.algorithms.length_bonus`, switched on by ``length_bonus: true`` in the RL config.)
"""

from __future__ import annotations

import re
from typing import Any

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
