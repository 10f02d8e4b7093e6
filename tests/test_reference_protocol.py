"""The reference protocol (`protocol: reference`) against an independent transcription of Video-R1's own
evaluation, `src/eval_bench.py` and `reward_fn`: item for item, float32 boundaries included. The package never
imports the transcription.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

import numpy as np
import pytest
from test_official_scorers import boundary_pairs

from videor1.evaluate.benchmarks import get_benchmark
from videor1.evaluate.runner import score_row
from videor1.rewards import mean_relative_accuracy

# ------------------------------------------------------------------------------- the reference protocol
# Video-R1's own evaluation (`src/eval_bench.py`, `reward_fn`), transcribed here from reading it: the answer is the
# first <answer> span (whole output when none); multiple choice by exact stripped equality; numerical needs the
# same "has '.' or ','" on both sides, then float() of the comma-stripped text and round(x, 2) equality; regression
# is MRA in float32 torch, rel = |pred - gt| / (|gt| + 1e-8) < 1 - torch.arange(0.5, 0.975, 0.05); other types 0.
def oracle_eval_bench(problem_type: str, output: str, solution: str) -> float:
    import torch

    def extract(text: str) -> str:
        m = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
        return m.group(1).strip() if m else ""

    def number(text: str) -> float | None:
        try:
            return float(text.replace(",", ""))
        except ValueError:
            return None

    out = extract(output) or output
    gt = extract(solution)
    try:
        if problem_type == "multiple choice":
            return 1.0 if out.strip() == gt.strip() else 0.0
        if problem_type == "numerical":
            if ("." in gt or "," in gt) != ("." in out or "," in out):
                return 0.0
            g, o = number(gt), number(out)
            return 0.0 if g is None or o is None else float(round(g, 2) == round(o, 2))
        if problem_type == "regression":
            g, o = number(gt), number(out)
            if g is None or o is None:
                return 0.0
            p, t = torch.tensor(o, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)
            rel = torch.abs(p - t) / (torch.abs(t) + 1e-8)
            thresholds = torch.arange(0.5, 0.95 + 0.05 / 2, 0.05, dtype=torch.float32)
            return (rel < (1 - thresholds)).float().mean().item()
    except Exception:   # the reference's catch-all
        return 0.0
    return 0.0


def reference(problem_type: str, output: str, solution: str) -> float:
    r = {"id": "x", "problem_type": problem_type, "options": [], "solution": solution, "answer": "",
         "meta": {}, "output": output, "error": None}
    return score_row(get_benchmark("videor1"), r)["reference"]


def same_in_float32(ours: float, theirs: float) -> bool:
    """The reference returns float32 means (0.8999999761581421 for 9 of 10); ours are hits / 10 in float64."""
    return np.float32(ours) == np.float32(theirs)


def test_reference_thresholds_are_the_references_float32_arange():
    import torch

    from videor1.rewards.accuracy import REFERENCE_MRA_THRESHOLDS

    want = torch.arange(0.5, 0.95 + 0.05 / 2, 0.05, dtype=torch.float32).numpy()
    assert REFERENCE_MRA_THRESHOLDS.dtype == np.float32 and (REFERENCE_MRA_THRESHOLDS == want).all()


@pytest.mark.parametrize("pred, gt, want, exact", [
    ("4.5", "5", 0.9, 0.8),       # 10 % off: 0.1f < 1 - 0.9f, so θ = 0.90 passes (inclusive in effect)
    ("6.745", "7.1", 1.0, 0.9),   # 5 % off: θ = 0.95 passes in float32
    ("110", "100", 0.9, 0.8),
    ("0.9", "1", 0.8, 0.8),       # |0.9f - 1| equals 1 - 0.9f exactly: not below, as in decimals
    ("1.05", "1", 1.0, 0.9),      # 1.05f - 1 = 0.04999995 < 1 - 0.95f
    ("0", "0", 1.0, 1.0),         # 0 / 1e-8 = 0 < every tolerance
    ("0.001", "0", 0.0, 0.0),
])
def test_reference_mra_reproduces_eval_bench_on_boundary_pairs(pred, gt, want, exact):
    out, sol = f"<think>t</think><answer>{pred}</answer>", f"<answer>{gt}</answer>"
    assert reference("regression", out, sol) == want
    assert same_in_float32(want, oracle_eval_bench("regression", out, sol))
    assert mean_relative_accuracy(float(pred), float(gt)) == exact   # the exact strict MRA, kept for exact options


def test_reference_protocol_agrees_with_eval_bench_on_every_threshold_pair():
    pairs = boundary_pairs() + [(f"{float(Fraction(gt) * (1 - Fraction(k, 20)))!r}", gt)
                                for gt in ("5", "7.1", "0.05", "0.3", "9.99", "123.4", "3e-5", "65000")
                                for k in range(0, 21)]
    differ_from_exact = 0
    for pred, gt in pairs:
        out, sol = f"<answer>{pred}</answer>", f"<answer>{gt}</answer>"
        ours, theirs = reference("regression", out, sol), oracle_eval_bench("regression", out, sol)
        assert same_in_float32(ours, theirs), (pred, gt, ours, theirs)
        differ_from_exact += ours != mean_relative_accuracy(float(pred), float(gt))
    assert differ_from_exact > 20   # float32 and exact decimals really part on threshold pairs


def fixture_answers(problem_type: str, answer: str, rng: random.Random) -> list[str]:
    """Outputs to score against one fixture item: tagged and untagged, right, near and wrong."""
    texts = [answer, f" {answer} ", answer.lower(), f"({answer})", f"{answer}.", "", "none", "A", "B", "1,000"]
    value = parse_float_or_none(answer)
    if value is not None:
        scale = [1 + s * k / d for d in (20, 200) for k in range(0, 21) for s in (1, -1)]
        texts += [f"{value * f:g}" for f in scale] + [f"{value * rng.uniform(0.4, 1.6):.3f}" for _ in range(20)]
        texts += [f"{value:.1f}", f"{value:,.0f}", f"{int(value)}" if value == int(value) else f"{value}0"]
    return [t for x in texts for t in (f"<think>t</think><answer>{x}</answer>", x)]


def parse_float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@pytest.mark.parametrize("name", ["vsibench", "videomme", "mmvu", "mvbench", "tempcompass", "videommmu", "videor1"])
def test_reference_protocol_agrees_with_eval_bench_on_every_fixture(name, tmp_path):
    """Every item of the benchmarks' test fixtures (tests/test_eval_benchmarks.py, tests/test_prompt_snapshots.py)
    scored by the reference protocol against the transcription of eval_bench.py, item for item. eval_bench.py
    scores only multiple choice, numerical and regression; other types are left out here (module doc)."""
    from test_eval_benchmarks import FIXTURES
    from test_prompt_snapshots import EDGES

    rng = random.Random(name)
    bench, n = get_benchmark(name), 0
    for kind, write in (("fixture", FIXTURES[name]), ("edge", EDGES[name])):
        root = tmp_path / kind
        root.mkdir()
        for item in bench.load(write(root), root).items:
            ptype = item.record.problem_type
            if ptype not in ("multiple choice", "numerical", "regression"):
                continue
            for text in fixture_answers(ptype, item.answer, rng):
                ours = score_row(bench, {**item.row(), "output": text, "error": None})["reference"]
                theirs = oracle_eval_bench(ptype, text, item.record.solution)
                assert same_in_float32(ours, theirs), (item.id, ptype, text, item.record.solution, ours, theirs)
                n += 1
    assert n > 0


def oracle_grpo_regression(output: str, solution: str) -> float:
    """The reference's training reward for regression (`src/r1-v/src/open_r1/grpo.py`, `accuracy_reward`):
    1 - clamp((|out - gt| + 1e-9) / (|gt| + 1e-9), 0, 1) in Python floats; no MRA there."""
    def extract(text: str) -> str:
        m = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
        return m.group(1).strip() if m else ""

    try:
        o, g = float(extract(output).replace(",", "")), float(extract(solution).replace(",", ""))
        rel = (abs(o - g) + 1e-9) / (abs(g) + 1e-9)
        return 1 - min(1.0, max(0.0, rel))
    except ValueError:
        return 0.0


def test_reference_training_reward_is_the_grpo_relative_error_not_mra():
    from videor1.rewards import get_reward, score

    for pred, gt in [*boundary_pairs(), ("0", "0"), ("5", "5"), ("4.5", "5"), ("x", "3"), ("1,200", "1200")]:
        out, sol = f"<think>t</think><answer>{pred}</answer>", f"<answer>{gt}</answer>"
        assert score("regression", out, sol, reference=True) == oracle_grpo_regression(out, sol), (pred, gt)
        got = get_reward("accuracy_reference")([out], problem_type=["regression"], solution=[sol])
        assert got == [oracle_grpo_regression(out, sol)]
    sol = "<answer>0</answer>"
    assert score("regression", "<answer>0</answer>", sol, reference=True) == 0.0   # the reference's epsilon form
    assert score("regression", "<answer>0</answer>", sol) == 1.0                   # the default: exact is right
