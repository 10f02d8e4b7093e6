"""Scoring rules and official aggregations, checked against hand-computed numbers (no model)."""

from __future__ import annotations

import pytest

from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.scoring import (
    answer_span,
    choose_option,
    leading_letter,
    mra,
    reference_score,
    standalone_letter,
)


def ans(x: str) -> str:
    return f"<think>hmm, let me think</think><answer>{x}</answer>"


# --------------------------------------------------------------------------------------------- MRA
@pytest.mark.parametrize("pred, inclusive, expected", [
    (100.0, True, 1.0),
    (110.0, True, 0.9),    # error exactly 10 %: within 1-θ for θ <= 0.90 (9 of 10) with <=
    (110.0, False, 0.8),   # strict: θ = 0.90 fails too
    (150.0, True, 0.1),    # exactly 50 %: only θ = 0.50, and only with <=
    (150.0, False, 0.0),
    (105.0, True, 1.0),    # exactly 5 %: every θ with <=
    (105.0, False, 0.9),
    (96.0, True, 1.0),     # 4 %: within every tolerance
    (49.0, True, 0.0),     # 51 % off
    (125.0, True, 0.6),    # 25 %: θ in .50 .55 .60 .65 .70 .75 -> 6
])
def test_mra_threshold_edges(pred, inclusive, expected):
    assert mra(pred, 100.0, inclusive=inclusive) == pytest.approx(expected)


def test_mra_missing_truth_scores_zero_and_zero_truth_needs_an_exact_zero():
    assert mra(None, 3.0) == 0.0
    assert mra(3.0, None) == 0.0
    assert mra(0.0, 0.0) == 1.0
    assert mra(0.5, 0.0) == 0.0


# ------------------------------------------------------------------------------------------ parsers
def test_answer_span_falls_back_to_whole_output():
    assert answer_span(ans(" B ")) == "B"
    assert answer_span("  the answer is B ") == "the answer is B"


def test_reference_score_is_strict_letter_and_mra_for_regression():
    assert reference_score("multiple choice", ans("B"), "<answer>B</answer>") == 1.0
    assert reference_score("multiple choice", ans("C"), "<answer>B</answer>") == 0.0
    assert reference_score("multiple choice", "B", "<answer>B</answer>") == 1.0   # no tags: whole output
    # the reference's float32 MRA: 10 % off passes θ = 0.90 (0.1f < 1 - 0.9f); the exact strict MRA gives 0.8
    assert reference_score("regression", ans("110"), "<answer>100</answer>") == 0.9
    assert reference_score("regression", ans("4.5"), "<answer>5</answer>") == 0.9
    assert reference_score("regression", ans("6.745"), "<answer>7.1</answer>") == 1.0
    assert reference_score("regression", ans("0.9"), "<answer>1</answer>") == 0.8   # 1 - 0.9f: not below
    assert reference_score("numerical", ans("garbage"), "<answer>3</answer>") == 0.0


def test_leading_and_standalone_letters():
    assert leading_letter("(B) a cat") == "B"
    assert leading_letter("B. a cat") == "B"
    assert leading_letter("b") == "B"
    assert leading_letter("A dog runs") == "A"         # MVBench reads the first token
    assert leading_letter("Because it is") == ""
    assert standalone_letter("The best answer is C.") == "C"
    assert standalone_letter("After thinking: D") == "D"   # the A of After is not an answer
    assert standalone_letter("none of them") == ""


def test_choose_option_mmmu_style():
    options = ["A. red", "B. green", "C. blue"]
    assert choose_option("(B)", options) == "B"
    assert choose_option("I first thought A. but it is C.", options) == "C"   # last mention wins
    assert choose_option("it is clearly blue", options) == "C"                 # option text
    assert choose_option("no idea", options) == ""                             # no random guess


# ------------------------------------------------------------------------------------- aggregation
def row(score, ref=None, **meta):
    return {"official": score, "reference": score if ref is None else ref, "meta": meta,
            "problem_type": "multiple choice"}


def test_vsibench_eight_task_unweighted_mean_with_direction_levels():
    rows = [
        row(1.0, task="object_counting"), row(0.5, task="object_counting"),          # 0.75
        row(0.2, task="object_abs_distance"),                                          # 0.2
        row(0.4, task="object_size_estimation"),                                       # 0.4
        row(0.6, task="room_size_estimation"),                                         # 0.6
        row(1.0, task="object_rel_distance"), row(0.0, task="object_rel_distance"),  # 0.5
        row(1.0, task="route_planning"),                                               # 1.0
        row(0.0, task="obj_appearance_order"),                                         # 0.0
        # relative direction: easy 1/1 = 1.0, medium 0/2 = 0.0, hard 1/4 = 0.25 -> mean of levels 0.41667
        row(1.0, task="object_rel_direction", level="easy"),
        row(0.0, task="object_rel_direction", level="medium"), row(0.0, task="object_rel_direction", level="medium"),
        row(1.0, task="object_rel_direction", level="hard"), *[row(0.0, task="object_rel_direction", level="hard")] * 3,
    ]
    out = get_benchmark("vsibench").aggregate(rows)
    direction = (1.0 + 0.0 + 0.25) / 3
    assert out["breakdowns"]["task"]["object_rel_direction"]["score"] == pytest.approx(direction)
    assert out["breakdowns"]["task"]["object_rel_direction"]["n"] == 7
    expected = (0.75 + 0.2 + 0.4 + 0.6 + 0.5 + 1.0 + 0.0 + direction) / 8
    assert out["overall"] == pytest.approx(expected)
    # not the item mean (which weights tasks by their item counts)
    assert out["overall"] != pytest.approx(sum(r["official"] for r in rows) / len(rows))


def test_mvbench_mean_of_task_accuracies():
    rows = [row(1.0, task="Action Sequence")] * 3 + [row(0.0, task="Action Sequence")] + [row(0.0, task="State Change")]
    out = get_benchmark("mvbench").aggregate(rows)
    assert out["overall"] == pytest.approx((0.75 + 0.0) / 2)
    assert out["breakdowns"]["task"]["Action Sequence"] == {"score": 0.75, "n": 4}


def test_videomme_overall_and_by_duration():
    rows = [row(1.0, duration="short"), row(0.0, duration="short"), row(1.0, duration="long"),
            row(1.0, duration="medium"), row(0.0, duration="medium"), row(0.0, duration="medium")]
    out = get_benchmark("videomme").aggregate(rows)
    assert out["overall"] == pytest.approx(3 / 6)
    assert list(out["breakdowns"]["duration"]) == ["short", "medium", "long"]
    assert out["breakdowns"]["duration"]["medium"]["score"] == pytest.approx(1 / 3)


def test_tempcompass_by_format_and_dimension():
    rows = [row(1.0, format="multi-choice", dimension="speed"), row(0.0, format="yes_no", dimension="speed"),
            row(1.0, format="yes_no", dimension="order"), row(1.0, format="yes_no", dimension="order")]
    out = get_benchmark("tempcompass").aggregate(rows)
    assert out["overall"] == pytest.approx(0.75)
    assert out["breakdowns"]["format"]["yes_no"]["score"] == pytest.approx(2 / 3)
    assert out["breakdowns"]["dimension"]["speed"]["score"] == pytest.approx(0.5)
    assert out["breakdowns"]["format x dimension"]["yes_no / order"]["score"] == 1.0


def test_videommmu_by_track():
    rows = [row(1.0, track="Perception"), row(1.0, track="Adaptation"), row(0.0, track="Adaptation"),
            row(0.0, track="Comprehension")]
    out = get_benchmark("videommmu").aggregate(rows)
    assert out["overall"] == pytest.approx(0.5)
    assert list(out["breakdowns"]["track"]) == ["Perception", "Comprehension", "Adaptation"]
    assert out["breakdowns"]["track"]["Adaptation"]["score"] == pytest.approx(0.5)


def test_unknown_benchmark_lists_known_names():
    with pytest.raises(ValueError, match="known: .*vsibench"):
        get_benchmark("nope")
