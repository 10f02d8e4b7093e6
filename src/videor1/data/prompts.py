"""Prompt templates (as data, in one place) and the chat messages built from a record.

The shape follows the reference (SPEC §3): the question (for multiple choice followed by ``Options:`` and one
option a line), a newline, one fixed instruction asking for human-like inner reasoning inside
``<think></think>`` and the final answer inside ``<answer></answer>``, then a short suffix that says what the
answer looks like for the problem type. The user message holds the media first, then this text.

Where we depart from the reference: the wording is this project's own (the reference's text is not copied), so
absolute scores of a model trained with the reference's exact prompt may shift slightly. Every string lives in
:data:`TEMPLATES`; changing it changes every rendered prompt, which the snapshot test in
``tests/test_prompts.py`` makes deliberate.
"""

from __future__ import annotations

from typing import Any, Sequence

from videor1.data.records import PROBLEM_TYPES, Record

_NUMBER_SUFFIX = " Inside <answer></answer> write only the number, for example 42 or 3.14."

TEMPLATES: dict[str, Any] = {
    "options_header": "Options:",
    "instruction": (
        "Work this out the way a careful person would, talking it through in your head before you reply. "
        "Let your inner voice show: say things like \"let me think\", \"hmm\" or \"wait, does that fit?\", "
        "look back over each step, and change your mind when something does not add up. "
        "Write all of this reasoning between <think> and </think>, then give your final answer between "
        "<answer> and </answer>."
    ),
    "suffix": {
        "multiple choice": " Inside <answer></answer> write only the letter of the option you pick, such as B.",
        "numerical": _NUMBER_SUFFIX,
        "regression": _NUMBER_SUFFIX,
        "OCR": " Inside <answer></answer> write only the text you read, exactly as it appears.",
        "free-form": " Inside <answer></answer> write only your answer, in words.",
    },
    "sft_system_prompt": "You are a helpful assistant.",
}


def format_question(problem: str, problem_type: str, options: Sequence[str] = ()) -> str:
    """The full user text for a question: problem (+ options) + newline + instruction + type suffix."""
    suffixes = TEMPLATES["suffix"]
    if problem_type not in suffixes:
        raise ValueError(f"unknown problem_type {problem_type!r}; known: {list(PROBLEM_TYPES)}")
    text = problem
    if problem_type == "multiple choice":
        text += "\n" + TEMPLATES["options_header"] + "\n" + "\n".join(options)
    return text + "\n" + TEMPLATES["instruction"] + suffixes[problem_type]


def question_text(record: Record) -> str:
    """The user text for a :class:`~videor1.data.records.Record` (see :func:`format_question`)."""
    return format_question(record.problem, record.problem_type, record.options)


def build_messages(record: Record, *, system_prompt: str | None = None) -> list[dict]:
    """Chat messages for one record: an optional system message, then the user turn (media first, then text).

    SFT passes ``system_prompt=TEMPLATES["sft_system_prompt"]``; RL and evaluation pass nothing, so the chat
    template's default system prompt applies (as in the reference).
    """
    if record.data_type not in ("video", "image"):
        raise ValueError(f"record {record.problem_id!r}: unknown data_type {record.data_type!r}")
    messages: list[dict] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({
        "role": "user",
        "content": [{"type": record.data_type}, {"type": "text", "text": question_text(record)}],
    })
    return messages
