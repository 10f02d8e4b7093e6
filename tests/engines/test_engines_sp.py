"""Sequence parallelism on DeepSpeed Ulysses (`videor1.parallel.sequence`), 2 processes on gloo against one process.

Five launches (each ~20-60 s here), every case parametrised inside them (`sp_probe.py`):
1. ZeRO-2, SP 2: per-token log-probs and gradients (summed over the SP group) of the tiny Qwen2.5-VL and Qwen3-VL
   in float64 against the same forward with SP off: video, image and mixed prompts (mixed: left-padded
   shared-prefix rows of different lengths), every loss_type, gradient checkpointing, the reference model in
   eval mode under no_grad, the unpadded one-row dummy batch; then the trainer's own `_setup` / `_optimise`
   (SGD lr 1e-2, sequence_parallel_size 2) on a fixed batch and on the dummy batch of a process without usable
   prompts, with every rank's sequence of collectives recorded.
2. ZeRO-3, SP 2: the same trainer step.  3. One process, SP off: the same trainer step (the baseline).
4./5. A 2-step T-GRPO run with HF rollouts, then a 2-step SFT run (a right-padded video + image micro-batch), in
   one launch: 2 processes, ZeRO-2, SP 2 against one process (SP 1) on the same data: the same logged rewards,
   losses, gradient norms and token counts.

Tolerances. The project's log-softmax runs in float32 whatever the logits' dtype (`videor1.train.logprobs`), so
in the float64 cases log-probs agree to fp32 rounding: |dlogp| <= 4e-6 (seen: <= 9.6e-7, one ulp at |logp| ~10;
0 in most cases), gradients within 1e-6 of each parameter's largest |entry| (seen: <= 3.6e-7; 1.2e-15 where no
fp32 log-softmax rounding enters). Trainer steps (fp32 weights): |update - one-process update| <= 1e-5 x the
largest update (seen: 6e-8 against 1e-2 under ZeRO-2 and ZeRO-3). Run metrics: relative 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines_common import launch, metrics_of

PROBE = Path(__file__).with_name("sp_probe.py")
LOGP_TOL, GRAD_TOL, STEP_TOL = 4e-6, 1e-6, 1e-5


def _step_overrides(model: Path, data: Path, tmp: Path, out: Path, sp: int) -> list[str]:
    return [f"model={model}", f"train_data={data}", f"media_root={tmp}", f"output_dir={out}", "algorithm=grpo",
            "num_generations=2", "max_completion_length=8", "beta=0.04", "max_grad_norm=1e9", "report_to=[]",
            "progress=false", "video.min_frames=4", "video.max_frames=4", "video.min_pixels=3136",
            "video.max_pixels=3136", "image.min_pixels=3136", "image.max_pixels=3136", "num_threads=1", "seed=5",
            f"sequence_parallel_size={sp}"]


def _probe(config: str, processes: int, sp: int, model: Path, data: Path, tmp: Path, exact_models: str = "-"
           ) -> Path:
    out = tmp / f"{config}-{processes}.pt"
    overrides = [exact_models, str(data) if exact_models != "-" else "-",
                 *_step_overrides(model, data, tmp, tmp / f"run-{config}-{processes}", sp)]
    launch(config, str(out), overrides, tmp, num_processes=processes, script=PROBE)
    return out


@pytest.fixture(scope="module")
def one_process(sp_data, tiny_model_dir) -> dict:
    tmp, data = sp_data
    return torch.load(_probe("multi_gpu", 1, 1, tiny_model_dir, data, tmp), weights_only=False)


@pytest.fixture(scope="module")
def zero2(sp_data, family_model_dirs) -> tuple[dict, dict]:
    tmp, data = sp_data
    models = ",".join(str(family_model_dirs[f]) for f in ("qwen2_5_vl", "qwen3_vl"))
    out = _probe("zero2", 2, 2, family_model_dirs["qwen2_5_vl"], data, tmp, exact_models=models)
    return torch.load(out, weights_only=False), torch.load(f"{out}.exact", weights_only=False)


def test_logps_and_gradients_equal_one_process(zero2):
    _, exact = zero2
    families = {"qwen2_5_vl", "qwen3_vl"}
    expected = {(f, kind, "grpo") for f in families for kind in ("video", "image", "mixed", "dummy-unpadded")} | \
        {(f, "mixed", x) for f in families for x in ("bnpo", "dr_grpo", "dapo", "reference-eval", "checkpointing")} | \
        {(f, "sft", "right-padded") for f in families}
    assert set(exact) == expected
    for case, (dlogp, dgrad) in exact.items():
        print(f"{case}: max |dlogp| {dlogp:.3g}, max relative grad error {dgrad:.3g}")
        assert dlogp <= LOGP_TOL and dgrad <= GRAD_TOL, case


def _assert_same_step(got: dict, ref: dict) -> None:
    for name in ("real", "dummy"):
        delta = ref[name]["delta"]
        scale = max(float(d.abs().max()) for d in delta.values())
        err = max(float((got[name]["delta"][k] - d).abs().max()) for k, d in delta.items())
        print(f"{name}: max |update diff| {err:.3g}, largest update {scale:.3g}")
        assert err <= STEP_TOL * max(scale, 1e-30), name
        assert (scale > 0) == (name == "real")   # the dummy batch of a process without prompts moves nothing
        assert got[name]["loss"] == pytest.approx(ref[name]["loss"], rel=1e-5, abs=1e-8)
    ranks = got["collectives"]
    assert len(ranks) == 2 and ranks[0] == ranks[1] and ranks[0], "collective sequences differ across ranks"
    assert any("all_to_all_single" in c for c in ranks[0])   # Ulysses ran


def test_zero2_step_equals_one_process(zero2, one_process):
    _assert_same_step(zero2[0], one_process)


def test_zero3_step_equals_one_process(sp_data, tiny_model_dir, one_process):
    tmp, data = sp_data
    got = torch.load(_probe("zero3", 2, 2, tiny_model_dir, data, tmp), weights_only=False)
    _assert_same_step(got, one_process)
    assert any("allgather_fn" in c or "all_gather_into_tensor" in c for c in got["collectives"][0])   # ZeRO-3 ran


RL_THEN_SFT = """
import sys
from videor1.rewards import register

@register("engine_test_variety", overwrite=True)
def variety(completions, **columns):
    return [len(set(c)) / (1.0 + len(c)) for c in completions]

from videor1.rl.trainer import run_training
from videor1.sft.trainer import run_sft
split = sys.argv.index("--sft")
run_training(None, sys.argv[2:split])
run_sft(None, sys.argv[split + 1:])
print("FINAL", flush=True)
"""


def sft_overrides(model: Path, tmp: Path, out: Path, sp: int, *, cot: str = "cot.jsonl", steps: int = 2,
                  save_steps: int = 0) -> list[str]:
    """An SFT run of `steps` steps on `tmp / cot`, micro-batches of 2 (a right-padded video + image)."""
    return [f"model={model}", f"train_data={tmp / cot}", f"media_root={tmp}", f"output_dir={out}",
            "per_device_batch_size=2", f"max_steps={steps}", "learning_rate=1e-3", "lr_scheduler=constant",
            f"save_steps={save_steps}", "report_to=[]", "progress=false", "video.min_frames=4", "video.max_frames=4",
            "video.min_pixels=3136", "video.max_pixels=3136", "image.min_pixels=3136", "image.max_pixels=3136",
            "num_threads=1", "bf16=false", f"sequence_parallel_size={sp}"]


def _runs(config: str, processes: int, sp: int, model: Path, data: Path, tmp: Path, cot: str = "cot.jsonl"
          ) -> tuple[list, list]:
    """A 2-step T-GRPO run, then a 2-step SFT run (a right-padded video + image micro-batch), in one launch."""
    rl, sft = tmp / f"rl-{config}-{processes}", tmp / f"sft-{config}-{processes}"
    rl_overrides = [o for o in _step_overrides(model, data, tmp, rl, sp)
                    if not o.startswith(("algorithm=", "max_grad_norm="))]
    launch(config, "rl+sft", [*rl_overrides, "algorithm=tgrpo", "num_generations=4", "prompts_per_step=2",
                              "max_steps=2", "save_steps=0", "rewards=[engine_test_variety]", "--sft",
                              *sft_overrides(model, tmp, sft, sp, cot=cot)], tmp, num_processes=processes,
           script_text=RL_THEN_SFT)
    return metrics_of(rl), metrics_of(sft)


def test_sp_runs_equal_one_process_on_the_same_prompts(sp_data, tiny_model_dir):
    tmp, data = sp_data
    rl_one, sft_one = _runs("multi_gpu", 1, 1, tiny_model_dir, data, tmp)
    rl_two, sft_two = _runs("zero2", 2, 2, tiny_model_dir, data, tmp)
    assert len(rl_one) == len(rl_two) == len(sft_one) == len(sft_two) == 2
    for a, b in zip(rl_one, rl_two):
        assert b["engine"] == "zero2" and b["num_processes"] == 1   # one data-parallel rank
        for key in ("reward", "loss", "kl", "grad_norm", "completion_length"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), ("rl", key, a[key], b[key])
    for a, b in zip(sft_one, sft_two):
        assert b["engine"] == "zero2"
        for key in ("loss", "grad_norm", "target_tokens", "tokens", "samples"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), ("sft", key, a[key], b[key])
