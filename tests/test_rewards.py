"""videor1.rewards: every rule, its edge cases, and the registry (expected values computed by hand)."""

from __future__ import annotations

import time

import pytest

from videor1.rewards import (
    REGISTRY,
    eval_score,
    extract_answer,
    format_reward,
    get_reward,
    length_bonus,
    mean_relative_accuracy,
    parse_choice,
    parse_number,
    register,
    score,
)


def ans(x: str) -> str:
    return f"<think>reasoning</think>\n<answer>{x}</answer>"


# --- extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>A</answer>", "A"),
        ("<answer>  \n B \n</answer>", "B"),
        ("x <answer>first</answer> y <answer>second</answer>", "first"),
        ("<answer><answer>A</answer></answer>", "<answer>A"),  # nested: first open pairs with first close
        ("<answer>multi\nline</answer>", "multi\nline"),
        ("<answer></answer>", ""),
        ("no tags at all", ""),
        ("<answer>never closed", ""),
        ("</answer>A<answer>", ""),
        ("", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_fallback_and_non_strings():
    assert extract_answer("  just B \n", fallback_to_text=True) == "just B"
    assert extract_answer("pre <answer> C </answer>", fallback_to_text=True) == "C"
    assert extract_answer(None) == "" and extract_answer(42) == ""
    assert extract_answer(None, fallback_to_text=True) == ""


# --- multiple choice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred", ["A", "a", "A.", "A)", "A:", "(A)", "[A]", "[a]", "A. a red car", "(a) red car",
             "Option A", "option (A)", " A \n"],
)
def test_choice_lenient_accepts(pred):
    assert score("multiple choice", ans(pred), "<answer>A</answer>") == 1.0


@pytest.mark.parametrize(
    "pred", ["B", "A dog", "I think A or B", "A or B", "AB", "**A**", "The answer is A", "A.B", "", "1"],
)
def test_choice_lenient_refuses(pred):
    assert score("multiple choice", ans(pred), "<answer>A</answer>") == 0.0


def test_choice_reference_is_exact_equality():
    assert score("multiple choice", ans("A"), "<answer>A</answer>", reference=True) == 1.0
    for pred in ["a", "A.", "(A)", "A. a red car"]:
        assert score("multiple choice", ans(pred), "<answer>A</answer>", reference=True) == 0.0


def test_parse_choice_letters():
    assert parse_choice("b)") == "B"
    assert parse_choice("I") == "I"  # a lone letter is a letter, even "I"
    assert parse_choice("I am") is None
    assert parse_choice("Option") is None


def test_ground_truth_without_tags_is_taken_whole():
    assert score("multiple choice", ans("C"), "C") == 1.0
    assert score("numerical", ans("7"), " 7 ") == 1.0


# --- numerical ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gt, lenient, reference",
    [
        ("1,000", "1000", 1.0, 0.0),  # the reference treats ',' as a decimal marker
        ("1,000", "1,000", 1.0, 1.0),
        ("3.0", "3", 1.0, 0.0),  # decimal-point agreement only in reference mode
        ("3.0", "3.00", 1.0, 1.0),
        ("-2", "-2", 1.0, 1.0),
        ("-2", "2", 0.0, 0.0),
        ("\u22122", "-2", 1.0, 0.0),  # Unicode minus: lenient only
        ("1e3", "1000", 1.0, 1.0),
        ("42 meters", "42", 1.0, 0.0),  # units: lenient only
        ("3.141", "3.14", 1.0, 1.0),  # equal after rounding to 2 decimals
        ("3.146", "3.14", 0.0, 0.0),
        ("about 3", "3", 0.0, 0.0),
        ("3 or 4", "3", 0.0, 0.0),
        ("1,00", "100", 0.0, 0.0),  # bad grouping refused by the lenient parser; reference: 100 vs 100 but ',' vs none
        ("nan", "nan", 0.0, 0.0),
        ("inf", "inf", 0.0, 0.0),
        ("garbage", "5", 0.0, 0.0),
        ("", "5", 0.0, 0.0),
    ],
)
def test_numerical(pred, gt, lenient, reference):
    assert score("numerical", ans(pred), f"<answer>{gt}</answer>") == lenient
    assert score("numerical", ans(pred), f"<answer>{gt}</answer>", reference=True) == reference


def test_parse_number_forms():
    assert parse_number("12,345.5 km") == 12345.5
    assert parse_number(".5") == 0.5
    assert parse_number("50%") == 50.0
    assert parse_number("3-5") is None
    assert parse_number("9" * 5000) is None  # overflows to inf: refused


# --- OCR ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("the quick brown fox", 1.0),
        ("the quick brown dog", 0.75),  # 1 substitution / 4 words
        ("the quick fox", 0.75),  # 1 deletion
        ("The quick brown fox", 0.75),  # case-sensitive
        ("the quick brown fox.", 0.75),  # punctuation-sensitive
        ("quick brown fox jumps", 0.5),  # 1 deletion + 1 insertion
        ("a b c d e f g h", 0.0),  # WER >= 1 clamps at 0
        ("", 0.0),
    ],
)
def test_ocr(pred, expected):
    got = score("OCR", ans(pred), "<answer>the quick brown fox</answer>")
    assert got == pytest.approx(expected)


# --- free-form ------------------------------------------------------------------------------------


def test_free_form_rouge():
    gt = "<answer>the cat sat</answer>"
    assert score("free-form", ans("the cat sat"), gt) == pytest.approx(1.0)
    assert score("free-form", ans("dogs run fast"), gt) == 0.0
    # R1 F = 0.8 (P 1, R 2/3), R2 F = 2/3 (P 1, R 1/2), RL F = 0.8 -> mean 34/45
    assert score("free-form", ans("the cat"), gt) == pytest.approx((0.8 + 2 / 3 + 0.8) / 3)
    assert score("free-form", ans("The cats sat!"), gt) == pytest.approx(1.0)  # stemming + tokenizer
    assert score("free-form", ans(""), gt) == 0.0
    assert score("free-form", ans("!!!"), gt) == 0.0


# --- regression -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gt, expected",
    [("12", "10", 0.8), ("10", "10", 1.0), ("8.5", "10", 0.85), ("25", "10", 0.0), ("-3", "-4", 0.75),
     ("0", "0", 1.0), ("0.1", "0", 0.0), ("x", "10", 0.0)],
)
def test_regression_training(pred, gt, expected):
    assert score("regression", ans(pred), f"<answer>{gt}</answer>") == pytest.approx(expected)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (1.0, 1.0, 1.0),
        (1.0499, 1.0, 1.0),  # 4.99 % < 5 %: every threshold
        (1.05, 1.0, 0.9),  # exactly 5 %: fails θ = 0.95 (strict <)
        (0.9, 1.0, 0.8),  # exactly 10 %: fails θ = 0.90, 0.95 (naive floats give 0.9 here)
        (0.75, 1.0, 0.5),  # 25 %: passes θ = 0.50 .. 0.70
        (1.4999, 1.0, 0.1),  # only θ = 0.50
        (1.5, 1.0, 0.0),  # exactly 50 %
        (-110.0, -100.0, 0.8),  # 10 %, negative values
        (3, 4, 0.5),  # ints
        (0.0, 0.0, 1.0),
        (1e-9, 0.0, 0.0),
        (float("nan"), 1.0, 0.0),
        (1.0, float("inf"), 0.0),
    ],
)
def test_mean_relative_accuracy_edges(pred, gt, expected):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected)


def test_mra_rejects_non_numbers():
    with pytest.raises(TypeError):
        mean_relative_accuracy("1", 1.0)


def test_eval_score_uses_fallback_mra_and_reference_rules():
    assert eval_score("regression", "<answer>0.9</answer>", "<answer>1</answer>") == pytest.approx(0.8)
    assert eval_score("regression", "0.9", "<answer>1</answer>") == pytest.approx(0.8)  # no tags: whole text
    assert score("regression", "0.9", "<answer>1</answer>") == 0.0  # training needs the tags
    assert eval_score("multiple choice", "  B \n", "<answer>B</answer>") == 1.0
    assert eval_score("multiple choice", "(B)", "<answer>B</answer>") == 0.0  # reference: exact
    assert eval_score("multiple choice", "(B)", "<answer>B</answer>", reference=False) == 1.0
    assert eval_score("numerical", "3.0", "<answer>3</answer>") == 0.0


# --- format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>B</answer>", 1.0),
        ("\n  <think>a\nb</think>\n\n<answer>\nB\n</answer>  \n", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ("<answer>B</answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<think>a</think> text <answer>B</answer>", 0.0),
        ("<think>a</think><answer>B</answer> trailing", 0.0),
        ("prefix <think>a</think><answer>B</answer>", 0.0),
        ("<answer>B</answer><think>a</think>", 0.0),
        ("<think>a<answer>B</answer>", 0.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward(text) == expected


def test_format_reward_equals_the_reference_regex():
    # format_reward avoids the regex's quadratic backtracking; it must decide the same thing.
    import random
    import re

    regex = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", "<", "/"]
    rng = random.Random(0)

    def noise() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 2)))

    n_pass = 0
    for _ in range(5000):
        skeleton = ["<think>", noise(), "</think>", rng.choice(["", " ", "\n"]), "<answer>", noise(), "</answer>"]
        parts = [noise()] + [p if rng.random() < 0.9 else noise() for p in skeleton] + [noise()]
        text = "".join(parts)
        expected = 1.0 if regex.fullmatch(text.strip()) else 0.0
        assert format_reward(text) == expected, repr(text)
        n_pass += expected == 1.0
    assert 500 < n_pass < 4500  # the sample exercises both outcomes


# --- length bonus ---------------------------------------------------------------------------------


def test_length_bonus_group_rules():
    correct = [True, True, False, True, True, False]
    lengths = [400, 100, 400, 400, 400, 400]
    groups = ["p0", "p0", "p0", "p1", "p2", "p2"]
    # p0: 2 correct -> only the in-range correct one; p1 and p2: a single correct -> nothing
    assert length_bonus(correct, lengths, groups) == [0.2, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_length_bonus_bounds_inclusive_and_omega():
    lengths = [319, 320, 512, 513]
    out = length_bonus([True] * 4, lengths, [7] * 4, omega=0.1)
    assert out == [0.0, 0.1, 0.1, 0.0]
    assert length_bonus([True] * 4, lengths, [7] * 4, min_len=0, max_len=1000) == [0.2] * 4


def test_length_bonus_validates():
    with pytest.raises(ValueError, match="same length"):
        length_bonus([True], [1, 2], [0])
    with pytest.raises(ValueError, match="min_len"):
        length_bonus([True], [1], [0], min_len=10, max_len=5)
    assert length_bonus([], [], []) == []


# --- registry -------------------------------------------------------------------------------------


def test_registry_builtins():
    completions = [ans("A"), ans("B"), "no tags"]
    cols = {"problem_type": ["multiple choice"] * 3, "solution": ["<answer>A</answer>"] * 3, "extra": [1, 2, 3]}
    assert get_reward("accuracy")(completions, **cols) == [1.0, 0.0, 0.0]
    assert get_reward("format")(completions, **cols) == [1.0, 1.0, 0.0]
    assert get_reward("accuracy_reference")([ans("a")], problem_type=["multiple choice"], solution=["A"]) == [0.0]
    assert {"accuracy", "format", "length"} <= set(REGISTRY)


def test_registry_length_reward():
    completions = [ans("A"), ans("A"), ans("B"), ans("A")]
    out = get_reward("length")(
        completions,
        problem_type=["multiple choice"] * 4,
        solution=["A"] * 4,
        completion_lengths=[400, 600, 400, 400],
        group_ids=[0, 0, 0, 1],
        omega=0.5,
    )
    assert out == [0.5, 0.0, 0.0, 0.0]


def test_registry_conversational_completions():
    completions = [[{"role": "assistant", "content": ans("A")}], [{"role": "assistant", "content": ans("C")}]]
    out = get_reward("accuracy")(completions, problem_type=["multiple choice"] * 2, solution=["A", "A"])
    assert out == [1.0, 0.0]


def test_registry_errors():
    with pytest.raises(KeyError, match="accuracy"):
        get_reward("no-such-reward")
    with pytest.raises(KeyError, match="solution"):
        get_reward("accuracy")([ans("A")], problem_type=["multiple choice"])
    with pytest.raises(ValueError, match="problem_type"):
        get_reward("accuracy")([ans("A")], problem_type=["multiple choice"] * 2, solution=["A"])
    with pytest.raises(ValueError, match="already registered"):
        register("format")(lambda completions, **_: [0.0] * len(completions))


def test_register_user_reward():
    name = "test_rewards_short_answer"

    @register(name)
    def short_answer(completions, **_):
        return [1.0 if len(extract_answer(c)) <= 3 else 0.0 for c in completions]

    try:
        assert get_reward(name)([ans("ok"), ans("too long")], solution=["x", "y"]) == [1.0, 0.0]
        replacement = register(name, overwrite=True)(lambda completions, **_: [0.5] * len(completions))
        assert get_reward(name) is replacement
    finally:
        REGISTRY.pop(name, None)


# --- never raises ---------------------------------------------------------------------------------

WEIRD = [None, 42, 3.5, b"<answer>A</answer>", "", "   ", "<answer>", "</answer>", "\x00\ufffd\u202e",
         "<answer>" + " " * 200_000, "<answer>" + "9" * 100_000 + "</answer>", "A" * 1_000_000,
         "<think>" + "</think><answer>" * 20_000, "<answer>😀 𝔸</answer>"]


@pytest.mark.parametrize("ptype", ["multiple choice", "numerical", "OCR", "free-form", "regression"])
def test_never_raises_on_weird_input(ptype):
    start = time.perf_counter()
    for weird in WEIRD:
        for ref in (False, True):
            assert score(ptype, weird, "<answer>A</answer>", reference=ref) == 0.0
            assert 0.0 <= eval_score(ptype, "<answer>1</answer>", weird, reference=ref) <= 1.0
            assert 0.0 <= eval_score(ptype, weird, "<answer>A</answer>", reference=ref) <= 1.0
        assert format_reward(weird) == 0.0
    assert time.perf_counter() - start < 5.0


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="multiple choice"):
        score("essay", ans("A"), "A")
    with pytest.raises(ValueError):
        score(None, ans("A"), "A")
    assert score("ocr", ans("hello"), "hello") == 1.0  # case-insensitive type names
