"""Rewards by name: ``fn(completions: list[str], **columns) -> list[float]`` (the TRL convention).

Columns are lists aligned with ``completions`` (e.g. ``problem_type``, ``solution``); a reward takes
the columns it needs and ignores the rest.  Scalar options may be passed as keywords too.  A user adds
a reward with ``@register("name")`` and selects it by name in the config; trainers never need editing.
Completions may be plain strings or TRL conversational completions (a list of messages: the text of
their ``content`` is joined).

``REGISTRY`` is a `videor1.registry.Registry`; ``register`` and ``get_reward`` are its ``register`` and
``get`` (an unknown name raises KeyError listing the known ones).  The length bonus is not a reward
here: it needs the completions' token lengths and prompt groups, so the RL step computes it
(``length_bonus: true`` in the RL config, `videor1.rl.algorithms.length_bonus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from videor1.registry import Registry
from videor1.rewards.accuracy import score
from videor1.rewards.shaping import format_reward

RewardFn = Callable[..., list[float]]
REGISTRY: Registry[RewardFn] = Registry("reward")


def register(name: str, *, overwrite: bool = False) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a reward to REGISTRY under ``name``; re-using a name needs ``overwrite=True``."""
    add = REGISTRY.register(name, overwrite=overwrite)

    def checked(fn: RewardFn) -> RewardFn:
        if not callable(fn):
            raise TypeError(f"reward {name!r} must be callable, got {type(fn).__name__}")
        return add(fn)

    return checked


def get_reward(name: str) -> RewardFn:
    """The reward registered as ``name``; KeyError listing the known rewards otherwise."""
    return REGISTRY.get(name)


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
