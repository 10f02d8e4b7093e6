"""A chat template whose generation prompt already opens `<think>` (Qwen3.5's, reported; the tiny Qwen3.5's):
the prompt, the completion text the rewards read, answer extraction and SFT targets."""

from __future__ import annotations

import pytest
import torch

from videor1.generation.engines import HFEngine, SamplingParams
from videor1.model.families import get_family
from videor1.model.families.common import chat_template
from videor1.model.inputs import IGNORE_INDEX, Sample, after_opening, encode, think_opening
from videor1.model.load import load_model, load_processor
from videor1.rewards.parsing import extract_answer
from videor1.rewards.registry import format_reward_fn

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]}]
IMAGE = torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()


@pytest.fixture(scope="module")
def thinking(family_model_dirs):
    path = family_model_dirs["qwen3_5"]
    return load_processor(path), load_model(path, device="cpu").eval()


def test_the_generation_prompt_opening_is_found(thinking, family_model_dirs):
    processor, _ = thinking
    assert think_opening(processor) == "<think>\n"
    prompt = processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    off = processor.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert think_opening(load_processor(family_model_dirs["qwen3_vl"])) == ""
    processor_off = load_processor(family_model_dirs["qwen3_5"])
    processor_off.chat_template = chat_template(None, opens_think=True).replace(
        "enable_thinking is defined and enable_thinking is false", "true")   # always the closed, empty block
    assert think_opening(processor_off) == ""
    assert get_family("qwen3_5").CHAT_TEMPLATE != get_family("qwen3_vl").CHAT_TEMPLATE


def test_after_opening():
    assert after_opening("<think>\nwhy</think>\n<answer>B</answer>", "<think>\n") == "why</think>\n<answer>B</answer>"
    assert after_opening("  <think>why</think><answer>B</answer>", "<think>\n") == "why</think><answer>B</answer>"
    assert after_opening("<answer>B</answer>", "<think>\n") == "<answer>B</answer>"
    assert after_opening("<think>why</think><answer>B</answer>", "") == "<think>why</think><answer>B</answer>"


def test_completion_text_holds_the_opened_tag_for_the_rewards(thinking):
    """The generated ids lack `<think>`; the engine's text starts with the opening, so the format reward and
    answer extraction see the whole response."""
    processor, model = thinking
    engine = HFEngine(model, processor)
    tokenizer = processor.tokenizer
    ids = tokenizer("Let me think.</think><answer>B</answer>", add_special_tokens=False)["input_ids"]
    completion = engine._completion(ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")])
    assert completion.token_ids[0] != tokenizer.convert_tokens_to_ids("<think>")
    assert completion.text == "<think>\nLet me think.</think><answer>B</answer>" and completion.finished
    assert format_reward_fn([completion.text]) == [1.0] and extract_answer(completion.text) == "B"
    assert format_reward_fn([tokenizer.decode(ids)]) == [0.0]   # what the rewards would see without it
    out = engine.generate([Sample(record=None, media=IMAGE, messages=QUESTION)],
                          SamplingParams(n=2, max_new_tokens=3, seed=0))
    assert all(c.text.startswith("<think>\n") for c in out[0])


def test_sft_target_follows_the_opened_prompt(thinking):
    """The SFT response `<think>why</think>\\n<answer>B</answer>` is trained as the continuation of the prompt's
    `<think>\\n`: one `<think>` in the row, labels from the reasoning on."""
    processor, _ = thinking
    sample = Sample(record=None, media=IMAGE, messages=QUESTION)
    batch = encode(processor, [sample], responses=["<think>Let me see.</think>\n<answer>B</answer>"])
    tokenizer = processor.tokenizer
    row = tokenizer.decode(batch["input_ids"][0])
    assert row.count("<think>") == 1 and "<|im_start|>assistant\n<think>\nLet me see.</think>\n<answer>B</answer>" in row
    labels = batch["labels"][0]
    target = tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert target == "Let me see.</think>\n<answer>B</answer><|im_end|>"
