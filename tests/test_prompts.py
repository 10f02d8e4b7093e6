"""Prompt snapshots: the exact rendered text for one record of each problem type.

The expected strings are written out here on purpose: a wording change in TEMPLATES must be made here too,
so evaluation numbers never shift by accident.
"""

from __future__ import annotations

import pytest

from videor1.data.prompts import TEMPLATES, build_messages, format_question, question_text
from videor1.data.records import PROBLEM_TYPES, parse_record

INSTRUCTION = (
    'Work this out the way a careful person would, talking it through in your head before you reply. '
    'Let your inner voice show: say things like "let me think", "hmm" or "wait, does that fit?", '
    'look back over each step, and change your mind when something does not add up. '
    'Write all of this reasoning between <think> and </think>, then give your final answer between '
    '<answer> and </answer>.'
)

CASES = {
    "multiple choice": (
        {"problem": "Which way does the red dot move?", "options": ["A. left", "B. right", "C. it stays"],
         "solution": "<answer>A</answer>", "data_type": "video"},
        "Which way does the red dot move?\nOptions:\nA. left\nB. right\nC. it stays\n" + INSTRUCTION
        + " Inside <answer></answer> write only the letter of the option you pick, such as B.",
    ),
    "numerical": (
        {"problem": "How many squares appear?", "solution": "<answer>3</answer>", "data_type": "video"},
        "How many squares appear?\n" + INSTRUCTION
        + " Inside <answer></answer> write only the number, for example 42 or 3.14.",
    ),
    "regression": (
        {"problem": "How fast is the dot, in pixels per frame?", "solution": "<answer>2.5</answer>",
         "data_type": "video"},
        "How fast is the dot, in pixels per frame?\n" + INSTRUCTION
        + " Inside <answer></answer> write only the number, for example 42 or 3.14.",
    ),
    "OCR": (
        {"problem": "What word is written on the sign?", "solution": "<answer>STOP</answer>",
         "data_type": "image"},
        "What word is written on the sign?\n" + INSTRUCTION
        + " Inside <answer></answer> write only the text you read, exactly as it appears.",
    ),
    "free-form": (
        {"problem": "Describe what happens to the blue ball.", "solution": "<answer>it bounces</answer>",
         "data_type": "video"},
        "Describe what happens to the blue ball.\n" + INSTRUCTION
        + " Inside <answer></answer> write only your answer, in words.",
    ),
}


def make(ptype: str):
    fields, _ = CASES[ptype]
    obj = {"problem_id": ptype, "problem_type": ptype, "path": "m/x.mp4", "options": [], **fields}
    return parse_record(obj, file="test", index=0)


def test_every_problem_type_has_a_snapshot_and_a_suffix():
    assert set(CASES) == set(PROBLEM_TYPES) == set(TEMPLATES["suffix"])


@pytest.mark.parametrize("ptype", PROBLEM_TYPES)
def test_rendered_question_snapshot(ptype):
    assert question_text(make(ptype)) == CASES[ptype][1]


def test_instruction_asks_for_tags_and_inner_monologue():
    text = TEMPLATES["instruction"]
    for needle in ("<think>", "</think>", "<answer>", "</answer>", "let me think", "hmm", "wait"):
        assert needle in text
    assert TEMPLATES["sft_system_prompt"] == "You are a helpful assistant."


def test_build_messages_media_first_then_text():
    video = make("multiple choice")
    msgs = build_messages(video)
    assert msgs == [{"role": "user", "content": [{"type": "video"},
                                                 {"type": "text", "text": CASES["multiple choice"][1]}]}]
    image = make("OCR")
    sft = build_messages(image, system_prompt=TEMPLATES["sft_system_prompt"])
    assert [m["role"] for m in sft] == ["system", "user"]
    assert sft[0]["content"] == [{"type": "text", "text": "You are a helpful assistant."}]
    assert sft[1]["content"][0] == {"type": "image"}


def test_unknown_problem_type_is_refused():
    with pytest.raises(ValueError, match="yes/no"):
        format_question("Is it red?", "yes/no")


def test_prompt_renders_through_a_real_chat_template(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    text = processor.apply_chat_template(build_messages(make("numerical")), tokenize=False,
                                         add_generation_prompt=True)
    assert CASES["numerical"][1] in text
    assert text.index("<|vision_start|>") < text.index("How many squares")
    assert text.rstrip().endswith("assistant")
