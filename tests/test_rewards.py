"""videor1.rewards: every rule, its edge cases, and the registry (expected values computed by hand)."""

from __future__ import annotations

import pytest

from videor1.rewards import (
    REGISTRY,
    eval_score,
    extract_answer,
    format_reward,
    get_reward,
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


# (pred, gt, strict, inclusive): small ground truths, where a relative error of exactly 1 - θ is the rule,
# not the exception. θ ∈ {.50, ..., .95}: tolerances .50 .45 .40 .35 .30 .25 .20 .15 .10 .05.
MRA_SMALL_GT = [
    (1.05, 1, 0.9, 1.0),   # |1.05 - 1| / 1 = 5 % exactly (in floats 0.050000000000000044)
    (0.95, 1, 0.9, 1.0),   # 5 % below (floats: 0.050000000000000044 as well)
    (1.1, 1, 0.8, 0.9),    # 10 % (floats: 0.10000000000000009, which would fail θ = 0.90 even with <=)
    (1.5, 1, 0.0, 0.1),    # 50 %: only θ = 0.50, only with <=
    (0.5, 1, 0.0, 0.1),
    (1.51, 1, 0.0, 0.0),
    (2.1, 2, 0.9, 1.0),    # 5 %
    (2.3, 2, 0.7, 0.8),    # 15 %: strict passes .50 .. .80 (7); <= adds θ = .85
    (1, 2, 0.0, 0.1),      # 50 %, ints
    (3, 2, 0.0, 0.1),
    (3.01, 2, 0.0, 0.0),
    (3.15, 3, 0.9, 1.0),   # 0.15 / 3 = 5 % exactly
    (2.4, 3, 0.6, 0.7),    # 20 %
    (4, 3, 0.4, 0.4),      # 33.3 %: never on a boundary, both agree
    (4.5, 3, 0.0, 0.1),
    (0.525, 0.5, 0.9, 1.0),  # 5 %
    (0.45, 0.5, 0.8, 0.9),   # 10 %
    (0.6, 0.5, 0.6, 0.7),    # 20 %
    (0.75, 0.5, 0.0, 0.1),   # 50 %
    (-1.05, -1, 0.9, 1.0),   # negative values: |gt| in the denominator
    (0, 0, 1.0, 1.0),        # gt = 0: an exact answer is right ...
    (0.001, 0, 0.0, 0.0),    # ... anything else is not (the relative error is undefined)
    (-0.0, 0.0, 1.0, 1.0),
]


@pytest.mark.parametrize("pred, gt, strict, inclusive", MRA_SMALL_GT)
def test_mra_small_ground_truths_and_boundaries(pred, gt, strict, inclusive):
    from videor1.evaluate.scoring import mra

    assert mean_relative_accuracy(pred, gt) == pytest.approx(strict)  # strict is the default
    assert mean_relative_accuracy(pred, gt, inclusive=False) == pytest.approx(strict)
    assert mean_relative_accuracy(pred, gt, inclusive=True) == pytest.approx(inclusive)
    # the benchmarks' MRA is this one function (VSI-Bench's official `<=` by default)
    assert mra(pred, gt) == mra(pred, gt, inclusive=True) == mean_relative_accuracy(pred, gt, inclusive=True)
    assert mra(pred, gt, inclusive=False) == mean_relative_accuracy(pred, gt)


def test_mra_matches_the_official_float_formula_off_the_boundaries():
    # VSI-Bench's scorer: (|pred - gt| / gt <= 1 - linspace(.5, .95, int((.95 - .5) / .05 + 2))).mean().
    # Away from exact boundaries floats decide the same thing as our exact arithmetic.
    import random

    import numpy as np

    thetas = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))
    assert len(thetas) == 10
    rng = random.Random(0)
    for _ in range(2000):
        gt = rng.choice([1, 2, 3, 0.5, 7, 12.5, 100]) * rng.choice([1, 1, 10])
        pred = round(gt * rng.uniform(0.3, 1.7), 6)
        err = abs(pred - gt) / gt
        if min(abs(err - (1 - t)) for t in thetas) < 1e-9:
            continue
        official = float((err <= 1 - thetas).mean())
        assert mean_relative_accuracy(pred, gt, inclusive=True) == pytest.approx(official), (pred, gt)


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


# --- registry -------------------------------------------------------------------------------------


def test_registry_builtins():
    completions = [ans("A"), ans("B"), "no tags"]
    cols = {"problem_type": ["multiple choice"] * 3, "solution": ["<answer>A</answer>"] * 3, "extra": [1, 2, 3]}
    assert get_reward("accuracy")(completions, **cols) == [1.0, 0.0, 0.0]
    assert get_reward("format")(completions, **cols) == [1.0, 1.0, 0.0]
    assert get_reward("accuracy_reference")([ans("a")], problem_type=["multiple choice"], solution=["A"]) == [0.0]
    assert {"accuracy", "accuracy_reference", "format"} <= set(REGISTRY)
    assert "length" not in REGISTRY  # the length bonus is the RL config's length_bonus, not a reward


def test_registry_conversational_completions():
    completions = [[{"role": "assistant", "content": ans("A")}], [{"role": "assistant", "content": ans("C")}]]
    out = get_reward("accuracy")(completions, problem_type=["multiple choice"] * 2, solution=["A", "A"])
    assert out == [1.0, 0.0]


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown reward 'no-such-reward'; known: accuracy, accuracy_reference"):
        get_reward("no-such-reward")
    with pytest.raises(TypeError, match="callable"):
        register("test_rewards_not_callable")(42)
    assert "test_rewards_not_callable" not in REGISTRY
    with pytest.raises(KeyError, match="solution"):
        get_reward("accuracy")([ans("A")], problem_type=["multiple choice"])
    with pytest.raises(ValueError, match="problem_type"):
        get_reward("accuracy")([ans("A")], problem_type=["multiple choice"] * 2, solution=["A"])
    with pytest.raises(ValueError, match="already registered"):
        register("format")(lambda completions, **_: [0.0] * len(completions))


@pytest.fixture
def restore_registry(monkeypatch):
    """Rewards registered by a test are dropped afterwards (the registry is global)."""
    monkeypatch.setattr(REGISTRY, "_items", dict(REGISTRY._items))


def test_register_user_reward(restore_registry):
    name = "test_rewards_short_answer"

    @register(name)
    def short_answer(completions, **_):
        return [1.0 if len(extract_answer(c)) <= 3 else 0.0 for c in completions]

    assert REGISTRY[name] is short_answer and get_reward(name) is short_answer
    assert get_reward(name)([ans("ok"), ans("too long")], solution=["x", "y"]) == [1.0, 0.0]
    register(name)(short_answer)  # the same function again: harmless (a re-imported module)
    with pytest.raises(ValueError, match="already registered"):
        register(name)(lambda completions, **_: [0.0] * len(completions))
    replacement = register(name, overwrite=True)(lambda completions, **_: [0.5] * len(completions))
    assert get_reward(name) is replacement


# --- never raises ---------------------------------------------------------------------------------

WEIRD = [None, 42, 3.5, b"<answer>A</answer>", "", "   ", "<answer>", "</answer>", "\x00\ufffd\u202e",
         "<answer>" + " " * 200_000, "<answer>" + "9" * 100_000 + "</answer>", "A" * 1_000_000,
         "<think>" + "</think><answer>" * 20_000, "<answer>😀 𝔸</answer>"]


@pytest.mark.parametrize("ptype", ["multiple choice", "numerical", "OCR", "free-form", "regression"])
def test_never_raises_on_weird_input(ptype):
    # No wall-clock bound here (it flaked on a loaded machine); linear time on huge inputs is checked by
    # counting work in test_parsers_stay_linear_on_huge_inputs below.
    for weird in WEIRD:
        for ref in (False, True):
            assert score(ptype, weird, "<answer>A</answer>", reference=ref) == 0.0
            assert 0.0 <= eval_score(ptype, "<answer>1</answer>", weird, reference=ref) <= 1.0
            assert 0.0 <= eval_score(ptype, weird, "<answer>A</answer>", reference=ref) <= 1.0
        assert format_reward(weird) == 0.0


def _best_time(fn, arg, repeats: int = 3) -> float:
    """The fastest of a few runs: a loaded machine slows some runs, rarely all of them."""
    import time

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("fn, make", [
    (format_reward, lambda n: "<think>" + "</think><answer>" * n),          # the regex form backtracks
    (extract_answer, lambda n: "<answer>" + " " * (10 * n)),                # \s*(.*?)\s* would too
    (lambda t: score("numerical", t, "<answer>9</answer>"), lambda n: "<answer>" + "9" * (5 * n) + "</answer>"),
    (lambda t: score("multiple choice", t, "<answer>A</answer>"), lambda n: "A" * (50 * n)),
], ids=["format", "extract", "number", "choice"])
def test_parsers_stay_linear_on_huge_inputs(fn, make):
    # Linear: 16x the input costs ~16x the time (about 1 ms here); quadratic ~256x (the regex forms take
    # minutes at this size). The bound is relative to a timing taken in the same test, best of three, with
    # 0.5 s of slack for scheduler noise, so a slow or loaded machine does not fail it.
    small, big = make(2_000), make(32_000)
    assert _best_time(fn, big) < 64 * _best_time(fn, small) + 0.5


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="multiple choice"):
        score("essay", ans("A"), "A")
    with pytest.raises(ValueError):
        score(None, ans("A"), "A")
    assert score("ocr", ans("hello"), "hello") == 1.0  # case-insensitive type names
