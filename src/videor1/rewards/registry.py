"""Rewards by name: ``fn(completions: list[str], **columns) -> list[float]`` (the TRL convention).

Columns are lists aligned with ``completions`` (e.g. ``problem_type``, ``solution``); a reward takes
the columns it needs and ignores the rest.  Scalar options (``omega`` ...) may be passed as keywords
too.  A user adds a reward with ``@register("name")`` and selects it by name in the config; trainers
never need editing.  Completions may be plain strings or TRL conversational completions (a list of
messages: the text of their ``content`` is joined).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from videor1.rewards.accuracy import score
from videor1.rewards.shaping import format_reward, length_bonus

RewardFn = Callable[..., list[float]]
REGISTRY: dict[str, RewardFn] = {}

#: accuracy above this counts as "correct" for the length bonus (and T-GRPO's temporal bonus).
CORRECT_THRESHOLD = 0.1


def register(name: str, *, overwrite: bool = False) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding ``fn`` to REGISTRY under ``name``; re-using a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def add(fn: RewardFn) -> RewardFn:
        if not callable(fn):
            raise TypeError(f"reward {name!r} must be callable, got {type(fn).__name__}")
        if name in REGISTRY and not overwrite and REGISTRY[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered (pass overwrite=True to replace it)")
        REGISTRY[name] = fn
        return fn

    return add


def get_reward(name: str) -> RewardFn:
    """The reward registered as ``name``; KeyError naming the known rewards otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REGISTRY))}") from None


def completion_text(completion: Any) -> str:
    """A completion as text: a string as is; a list of messages -> their string contents joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "".join(parts)
    return ""


def column(reward: str, columns: dict[str, Any], name: str, n: int) -> Sequence[Any]:
    """The column ``name``, checked to be a sequence aligned with the ``n`` completions."""
    if name not in columns:
        raise KeyError(f"reward {reward!r} needs the column {name!r}; got columns: {sorted(columns)}")
    values = columns[name]
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != n:
        size = len(values) if hasattr(values, "__len__") else "no"
        raise ValueError(f"reward {reward!r}: column {name!r} has {size} entries for {n} completions")
    return values


def _accuracy(reward: str, completions: list[Any], columns: dict[str, Any], reference: bool) -> list[float]:
    n = len(completions)
    types = column(reward, columns, "problem_type", n)
    solutions = column(reward, columns, "solution", n)
    return [
        score(t, completion_text(c), s, reference=reference) for c, t, s in zip(completions, types, solutions)
    ]


@register("accuracy")
def accuracy_reward(completions: list[Any], **columns: Any) -> list[float]:
    """The training accuracy reward (lenient parsing); columns ``problem_type``, ``solution``."""
    return _accuracy("accuracy", completions, columns, reference=False)


@register("accuracy_reference")
def accuracy_reference_reward(completions: list[Any], **columns: Any) -> list[float]:
    """The accuracy reward with the reference's exact rules; columns ``problem_type``, ``solution``."""
    return _accuracy("accuracy_reference", completions, columns, reference=True)


@register("format")
def format_reward_fn(completions: list[Any], **columns: Any) -> list[float]:
    """1 for ``<think>...</think><answer>...</answer>``, else 0; needs no column."""
    return [format_reward(completion_text(c)) for c in completions]


@register("length")
def length_reward(
    completions: list[Any],
    *,
    omega: float = 0.2,
    min_len: int = 320,
    max_len: int = 512,
    reference: bool = False,
    **columns: Any,
) -> list[float]:
    """The length bonus; columns ``completion_lengths`` (tokens), ``group_ids``, ``problem_type``,
    ``solution``.  Correct means accuracy > CORRECT_THRESHOLD (0.1), scored leniently unless
    ``reference=True``."""
    n = len(completions)
    lengths = column("length", columns, "completion_lengths", n)
    groups = column("length", columns, "group_ids", n)
    accuracy = _accuracy("length", completions, columns, reference=reference)
    correct = [a > CORRECT_THRESHOLD for a in accuracy]
    return length_bonus(correct, lengths, groups, omega=omega, min_len=min_len, max_len=max_len)
