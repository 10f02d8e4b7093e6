"""Input limits: how big, deep or extreme an input may be before anything heavy (decoding, tokenising,
allocating) is done with it.

The limits are configuration, nothing else (no environment variables): the `limits:` section of the SFT,
RL and eval configs (`SFTConfig.limits`, `RLConfig.limits`, `EvalConfig.limits`, key=value overrides such as
`limits.max_prompt_chars=200000`), and for `annotate`, `infer` and `data check` the `limits:` section of the
file given with `--config`. Each command puts its limits *in force* at start (`use_limits`); the readers and
decoders (`read_records`, `parse_record`, the benchmark load loop, `load_image` / `load_video`) check against
the limits in force (`current_limits()`) unless given others. The limits in force are recorded in the
outputs: the trainers' `config.yaml` (the whole config) and eval's `meta.json` / `scores.json`.

Passing a limit gives a one-line error (or a named skip) naming the file, the record and field, and the
limit's key, so the user knows which setting to raise.

* ``max_record_bytes``: one record (a JSONL line; a JSON-list file may hold at most ``max_record_bytes``
  per record it holds) -- a 50 MB line is refused before it is parsed;
* ``max_records``: records of one dataset file;
* ``max_depth``: JSON nesting depth of a record (a 200,000-deep list would otherwise overflow the stack);
* ``max_options``: options of a multiple-choice record;
* ``max_aspect_ratio``: long side / short side of an image or video frame (Qwen2.5-VL's resize needs
  at most 200);
* ``max_decoded_pixels``: pixels of one decoded image or frame before resizing (a 225-megapixel PNG);
* ``max_prompt_chars``: characters of a record's question text (problem + options), checked before the
  prompt is tokenised; token limits (`max_prompt_length` of RL, `max_length` of SFT) come after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from videor1.config import ConfigError


@dataclass(frozen=True)
class InputLimits:
    """The `limits:` section of a config; validated on construction (every limit > 0)."""

    max_record_bytes: int = 1_000_000          # bytes of one record (a JSONL line), refused before parsing
    max_records: int = 10_000_000              # records of one dataset file
    max_depth: int = 32                        # JSON nesting depth of a record / benchmark row
    max_options: int = 26                      # options of a multiple-choice record (letters A-Z)
    max_aspect_ratio: float = 200.0            # long / short side of an image or frame (Qwen2.5-VL: <= 200)
    max_decoded_pixels: int = 64_000_000       # pixels of one decoded image / frame, before resizing
    max_prompt_chars: int = 100_000            # characters of a question (problem + options), pre-tokenising

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the first bad field: every limit > 0, max_aspect_ratio <= 200."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"must be a number > 0, got {value!r}", key=f.name)
        if self.max_aspect_ratio > 200:
            raise ConfigError(f"must be <= 200 (Qwen2.5-VL's resize), got {self.max_aspect_ratio}",
                              key="max_aspect_ratio")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_LIMITS = InputLimits()
_in_force: InputLimits = DEFAULT_LIMITS


def current_limits() -> InputLimits:
    """The limits in force in this process (the defaults until a command calls `use_limits`)."""
    return _in_force


def use_limits(limits: InputLimits) -> InputLimits:
    """Put `limits` in force for this process (DataLoader workers forked later inherit them); returns the
    limits that were in force before."""
    global _in_force
    previous, _in_force = _in_force, limits
    return previous


@contextmanager
def limits_in_force(limits: InputLimits) -> Iterator[InputLimits]:
    """`use_limits(limits)` for the duration of a `with` block (tests, in-process callers)."""
    previous = use_limits(limits)
    try:
        yield limits
    finally:
        use_limits(previous)


def question_chars(problem: str, options: Sequence[str] = ()) -> int:
    """Characters of a question as `max_prompt_chars` counts them: the problem plus its options."""
    return len(problem) + sum(len(o) for o in options if isinstance(o, str))


def prompt_chars_problem(problem: str, options: Sequence[str] = (),
                         limits: InputLimits | None = None) -> str | None:
    """Why a question is too long to tokenise (naming `max_prompt_chars`), or None when it is not."""
    limits = limits or current_limits()
    chars = question_chars(problem, options)
    if chars > limits.max_prompt_chars:
        return f"the question is {chars} characters, more than max_prompt_chars={limits.max_prompt_chars}"
    return None


def json_depth(obj: Any, limit: int) -> int:
    """Container nesting depth of decoded JSON `obj` (a scalar is 0, ``[1]`` is 1), counted iteratively and
    no further than `limit + 1`."""
    depth, level = 0, [obj]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth
