"""The demo: the report's table is built from the evaluation summaries, and `videor1 demo --quick` runs."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from videor1.tools.demo import HELD_OUT, MODEL_NAMES, QUICK, RL_RUNS, DemoSettings
from videor1.tools.demo_report import chance_by_task, findings, model_row, plot_training, results_table


def _summary(ordered: float, shuffled: float, dep: tuple[float, float], indep: tuple[float, float],
             fmt: float, tokens: float) -> dict:
    return {
        "official": {"overall": ordered, "breakdowns": {"source": {"synth/direction": {"score": dep[0], "n": 4}}}},
        "temporal_reliance": {
            "overall": {"ordered": ordered, "shuffled": shuffled},
            "by_temporal": {"order-dependent": {"ordered": dep[0], "shuffled": dep[1]},
                            "order-independent": {"ordered": indep[0], "shuffled": indep[1]}},
        },
        "format_reward": fmt, "completion_tokens": tokens,
    }


def test_results_table_puts_each_number_in_its_column():
    summaries = {"base": _summary(0.1, 0.2, (0.25, 0.125), (0.5, 0.375), 0.0, 30.0),
                 "SFT": _summary(0.9, 0.6, (0.875, 0.3), (0.95, 0.9), 1.0, 21.5)}
    row = model_row(summaries["SFT"])
    assert row["order-dep."] == 0.875 and row["order-dep. (shuffled)"] == 0.3
    assert row["order-indep. (shuffled)"] == 0.9 and row["format reward"] == 1.0
    lines = results_table(summaries).splitlines()
    assert lines[0].split("|")[1].strip() == "model" and len(lines) == 4
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells == ["SFT", "0.900", "0.600", "0.875", "0.300", "0.950", "0.900", "1.000", "21.5"]


def test_chance_by_task(synth_dir):
    from videor1.data.records import load_records

    chance = chance_by_task(load_records(synth_dir / "rl.jsonl"))
    assert chance["direction"] == pytest.approx(0.25)
    assert chance["ocr"] is None and chance["distance"] is None


def test_findings_compare_each_rl_run_with_grpo_and_sft():
    summaries = {"SFT": _summary(0.5, 0.3, (0.5, 0.25), (0.5, 0.5), 1.0, 20.0),
                 "GRPO": _summary(0.6, 0.3, (0.625, 0.25), (0.5, 0.5), 1.0, 20.0),
                 "T-GRPO-adv": _summary(0.7, 0.3, (0.75, 0.25), (0.5, 0.5), 1.0, 20.0)}
    lines = findings(summaries, 0.25, 0.125)
    assert "T-GRPO-adv minus GRPO on order-dependent questions: +0.125" in " ".join(lines)
    assert "GRPO minus SFT on order-dependent questions: +0.125." in lines
    assert "T-GRPO-adv minus SFT on order-dependent questions: +0.250." in lines


def test_training_plot_has_the_advantage_shift_panel(tmp_path):
    for name in ("sft", *(folder for _, _, folder in RL_RUNS.values())):
        (tmp_path / name).mkdir()
        rows = [{"step": i, "loss": 1.0 / i, "reward": 0.1 * i, "accuracy": 0.1 * i,
                 **({"ordered_accuracy": 0.5, "shuffled_accuracy": 0.25,
                     "temporal_advantage_shift": 1e-5 if name == "rl_tgrpo" else 0.1} if "tgrpo" in name else {})}
                for i in range(1, 6)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    png = plot_training(tmp_path / "sft", {n: tmp_path / f for n, (_, _, f) in RL_RUNS.items()},
                        tmp_path / "curves.png", {"loss": ["loss"], "reward": ["reward"], "accuracy": ["accuracy"],
                                                  "ordered": ["ordered_accuracy"], "shuffled": ["shuffled_accuracy"],
                                                  "shift": ["temporal_advantage_shift"]})
    assert png.stat().st_size > 1000


def test_demo_runs_both_bonus_modes_and_holds_tasks_out_of_the_cot_set():
    assert [mode for algo, mode, _ in RL_RUNS.values() if algo == "tgrpo"] == ["reward", "advantage"]
    assert set(MODEL_NAMES) == {"base", "SFT", *RL_RUNS}
    s = DemoSettings()
    assert all(task in s.tasks and task not in s.cot_tasks for task in HELD_OUT)


def test_rollout_findings_compare_first_and_last_steps(tmp_path):
    from videor1.tools.demo_report import rollout_findings

    run = tmp_path / "rl"
    run.mkdir()
    rows = [{"step": i, "accuracy": 0.2 if i < 20 else 0.6} for i in range(50)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "metrics.jsonl").write_text(json.dumps({"accuracy": 1.0}), encoding="utf-8")
    lines = rollout_findings({"GRPO": run, "T-GRPO": tmp_path / "short", "none": tmp_path / "missing"})
    assert len(lines) == 1 and lines[0].startswith("GRPO:") and "0.200" in lines[0] and "0.600" in lines[0]
    assert "dynamic sampling" not in lines[0]
    rows = [dict(r, kept_group_rate=0.25 if r["step"] % 2 else 0.5) for r in rows]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert "dynamic sampling kept 38% of the prompt groups" in rollout_findings({"GRPO": run})[0]


def test_quick_settings_are_smaller():
    default = DemoSettings()
    assert QUICK.sft_steps < default.sft_steps and QUICK.rl_steps < default.rl_steps
    assert QUICK.n_test <= default.n_test


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    from videor1.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--seed", "0"])
    assert result.exit_code == 0, result.output[-3000:]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert str(out / "report.md") in result.output
    number = r"\s*(?:\d+\.\d+|—)\s*"
    for name in MODEL_NAMES:
        match = re.search(rf"^\|\s*{re.escape(name)}\s*\|((?:{number}\|){{8}})\s*$", report, re.MULTILINE)
        assert match, f"no results row for {name}"
        cells = [c.strip() for c in match.group(1).split("|")[:-1]]
        assert re.fullmatch(r"\d+\.\d+", cells[0]), cells        # overall accuracy is a number
        assert 0.0 <= float(cells[0]) <= 1.0
    assert (out / "training_curves.png").stat().st_size > 1000
    assert (out / "accuracy_bars.png").stat().st_size > 1000
    for name in ("sft", "rl_grpo", "rl_tgrpo", "rl_tgrpo_adv"):
        assert (out / name / "metrics.jsonl").is_file()


def test_rl_runs_side_by_side_match_one_after_another(tiny_model_dir, synth_dir, tmp_path):
    """The three RL runs in their own processes (spawned, one torch thread each) end with the same weights,
    byte for byte, as when they run one after another in this process."""
    from dataclasses import replace

    from videor1.tools.demo import run_rl_runs

    s = replace(QUICK, rl_steps=2, rl_prompts=2, rl_generations=2, rl_max_tokens=6, num_workers=0)
    data = {"rl": synth_dir / "rl.jsonl", "media_root": synth_dir}
    got = {}
    for parallel in (1, 3):
        models, seconds = run_rl_runs(tmp_path / f"p{parallel}", replace(s, rl_parallel=parallel), 0, tiny_model_dir,
                                      data, echo=lambda *_: None)
        assert list(models) == list(RL_RUNS) and all(sec > 0 for sec in seconds.values())
        got[parallel] = {name: (path / "model.safetensors").read_bytes() for name, path in models.items()}
        for name, (_, _, folder) in RL_RUNS.items():
            assert len((tmp_path / f"p{parallel}" / folder / "metrics.jsonl").read_text().splitlines()) == 2
    assert got[1] == got[3]


def test_cold_start_finding_says_where_sft_stopped_and_why(tmp_path):
    from videor1.tools.demo_report import cold_start_finding

    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("metrics.jsonl", [{"step": s, "loss": 1.0} for s in range(1, 51)])
    write("val.jsonl", [{"step": 25, "accuracy": 0.5}, {"step": 50, "accuracy": 0.95}])
    (line,) = cold_start_finding(tmp_path, "val.jsonl", 0.9, 400)
    assert "stopped at step 50 of at most 400" in line and "0.950" in line and "0.50, 0.95" in line
    write("val.jsonl", [{"step": 25, "accuracy": 0.5}, {"step": 50, "accuracy": 0.6}])
    (line,) = cold_start_finding(tmp_path, "val.jsonl", 0.9, 50)
    assert "ran all 50 steps without validation accuracy reaching 0.9" in line
    assert cold_start_finding(tmp_path, "val.jsonl", None, 50) == []
    assert cold_start_finding(tmp_path, "missing.jsonl", 0.9, 50) == []


def test_cold_start_checks_do_not_change_the_training(tiny_model_dir, tmp_path):
    """The validation checks (greedy generation mid-run) leave SFT's weights as a run without them has them,
    and write one line per check to the log; a threshold of 0 stops at the first check."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from videor1.data.synth.build import make_dataset
    from videor1.tools.demo import VAL_LOG, run_sft_stage

    s = replace(QUICK, sft_steps=4, sft_batch=2, eval_max_tokens=6, eval_batch=8, n_val=3, sft_min_steps=2,
                sft_check_every=2, num_workers=0)
    data = make_dataset(tmp_path / "data", n_train=2, n_test=2, n_cot=8, n_val=3, seed=0,
                        cot_tasks={"direction": 1.0, "colour": 1.0}, val_tasks={"direction": 1.0})
    never = run_sft_stage(tmp_path / "a", replace(s, sft_stop_at=2.0), 0, tiny_model_dir, data)
    plain = run_sft_stage(tmp_path / "b", replace(s, sft_stop_at=None), 0, tiny_model_dir, data)
    a, b = load_file(never / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    checks = [json.loads(line) for line in (tmp_path / "a" / "sft" / VAL_LOG).read_text().splitlines()]
    assert [c["step"] for c in checks] == [2, 4] and all(0.0 <= c["accuracy"] <= 1.0 for c in checks)
    assert not (tmp_path / "b" / "sft" / VAL_LOG).exists()
    run_sft_stage(tmp_path / "c", replace(s, sft_stop_at=0.0), 0, tiny_model_dir, data)
    steps = [json.loads(line)["step"] for line in (tmp_path / "c" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
