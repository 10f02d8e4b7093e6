"""SFT cold start: labels, loss, batching of mixed media, LoRA merge, exact resume, and format learning.

All runs use the tiny model and the synthetic CoT set with 4 frames of 56x56 per video.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videor1.config import config_to_dict, load_config
from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import load_records, write_records
from videor1.sft.config import SFTConfig
from videor1.sft.lora import LORA_DEFAULT_TARGETS
from videor1.sft.trainer import train_sft
from videor1.sft.data import DataPlan, SFTDataset, make_collate, response_text, token_nll

SMALL_VIDEO = VideoSpec(max_frames=4, max_pixels=56 * 56)
SMALL_IMAGE = ImageSpec(max_pixels=56 * 56)


def _cfg(model: Path, data: Path, out: Path, **kw) -> SFTConfig:
    base = dict(model=str(model), train_data=str(data), output_dir=str(out), video=SMALL_VIDEO, image=SMALL_IMAGE,
                learning_rate=5e-4, lr_scheduler="constant", max_grad_norm=1.0, report_to=(), save_steps=1000)
    base.update(kw)
    return SFTConfig(**base)


def _subset(synth_dir: Path, out: Path, kinds: list[str]) -> Path:
    """A CoT file with the first records of the given data types, in that order (paths stay relative)."""
    records = load_records(synth_dir / "cot.jsonl")
    chosen, used = [], set()
    for kind in kinds:
        rec = next(r for r in records if r.data_type == kind and r.problem_id not in used)
        used.add(rec.problem_id)
        chosen.append(rec)
    return write_records(out, chosen)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _mean_loss(model_dir: Path, data: Path, media_root: Path) -> float:
    """Token-mean response NLL of a saved model over every record of `data` (no training)."""
    from videor1.model.load import load_model, load_processor

    processor = load_processor(model_dir)
    model = load_model(model_dir, device="cpu", dtype=torch.float32).eval()
    ds = SFTDataset(load_records(data), str(media_root), SMALL_VIDEO, SMALL_IMAGE,
                    "You are a helpful assistant.")
    mb = make_collate(processor, 4096)([ds[i] for i in range(len(ds))])
    assert not mb.skipped
    inputs = dict(mb.inputs)
    labels = inputs.pop("labels")
    with torch.no_grad():
        nll, n = token_nll(model(**inputs).logits, labels)
    return float(nll / n)


# ------------------------------------------------------------------------------------------- data
def test_data_plan_same_records_for_any_split():
    """A step holds the same records whether split as 4x1, 1x4 or 2 processes x 2; epochs reshuffle."""
    a = DataPlan(10, seed=3, micro_batch=4, accumulation=1)
    b = DataPlan(10, seed=3, micro_batch=1, accumulation=4)
    ranks = [DataPlan(10, seed=3, micro_batch=1, accumulation=2, world=2, rank=r) for r in (0, 1)]
    for step in range(5):
        want = sorted(a.step_micro_batches(step)[0])
        assert sorted(sum(b.step_micro_batches(step), [])) == want
        assert sorted(sum((sum(p.step_micro_batches(step), []) for p in ranks), [])) == want
    assert a.steps_per_epoch == 2  # 10 // 4, the last incomplete batch is dropped
    assert not (a.epoch_order(0) == a.epoch_order(1)).all()


def test_labels_cover_response_only_in_a_mixed_batch(tiny_model_dir, synth_dir, tmp_path):
    """One image and one video in one batch: labels are -100 on every prompt and vision token, and the
    labelled tokens are exactly process + newline + solution + <|im_end|>."""
    from videor1.model.load import load_processor
    from videor1.model.inputs import vision_token_ids

    processor = load_processor(tiny_model_dir)
    data = _subset(synth_dir, tmp_path / "mixed.jsonl", ["image", "video"])
    records = load_records(data)
    ds = SFTDataset(records, str(synth_dir), SMALL_VIDEO, SMALL_IMAGE,
                    "You are a helpful assistant.")
    mb = make_collate(processor, 4096)([ds[0], ds[1]])
    batch = mb.inputs
    assert mb.n_samples == 2 and not mb.skipped
    assert "pixel_values" in batch and "pixel_values_videos" in batch
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    vision = torch.isin(ids, torch.tensor(vision_token_ids(processor)))
    assert vision.sum(dim=1).min() > 4  # both rows really hold vision tokens
    assert (labels[vision] == -100).all()
    assert (labels[mask == 0] == -100).all()
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, record in enumerate(records):
        labelled = (labels[row] != -100).nonzero().flatten()
        first = int(labelled[0])
        assert (labelled == torch.arange(first, first + len(labelled))).all()  # one contiguous span
        assert not vision[row, first:].any()
        # the prompt ends with the generation prompt "<|im_start|>assistant\n" just before the response
        prompt = processor.tokenizer.decode(ids[row, :first])
        assert prompt.endswith("<|im_start|>assistant\n") and prompt.count("<|im_start|>assistant") == 1
        want = processor.tokenizer(response_text(record), add_special_tokens=False)["input_ids"] + [im_end]
        assert labels[row, labelled].tolist() == want


def test_bad_samples_are_logged_and_skipped(tiny_model_dir, synth_dir, tmp_path):
    """A record without `process` and one whose media is broken are reported and left out, not replaced."""
    records = [r.to_dict() for r in load_records(synth_dir / "cot.jsonl")[:6]]
    broken = tmp_path / "media" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(b"not a video at all")
    records[1].pop("process")
    records[2]["path"] = "media/broken.mp4"
    records[2]["data_type"] = "video"
    import shutil

    shutil.copytree(synth_dir / "media", tmp_path / "media", dirs_exist_ok=True)
    data = write_records(tmp_path / "cot.jsonl", records)
    out = tmp_path / "run"
    cfg = _cfg(tiny_model_dir, data, out, per_device_batch_size=5, max_steps=1, seed=0)
    train_sft(cfg)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert {str(s["id"]) for s in skipped} == {str(records[1]["problem_id"]), str(records[2]["problem_id"])}
    row = _metrics(out)[0]
    assert row["samples"] + row["samples_skipped"] == 5  # 5 usable records loaded, one fails to decode
    assert row["samples_skipped"] == 1 and row["samples_skipped_total"] == 2


# ------------------------------------------------------------------------------------------ training
def test_few_steps_lower_the_loss_with_mixed_batches_of_two(tiny_model_dir, synth_dir, tmp_path):
    """Batches of 2 holding one image and one video train, and lower the loss on those samples."""
    data = _subset(synth_dir, tmp_path / "mixed.jsonl", ["image", "video"])
    out = tmp_path / "run"
    final = train_sft(_cfg(tiny_model_dir, data, out, per_device_batch_size=2, max_steps=6,
                           media_root=str(synth_dir)))
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["samples"] == 2 and r["samples_skipped"] == 0 for r in rows)
    before = _mean_loss(tiny_model_dir, data, synth_dir)
    after = _mean_loss(final, data, synth_dir)
    assert rows[0]["loss"] == pytest.approx(before, rel=1e-4)  # the logged loss is the loss on the batch
    assert after < 0.6 * before, (before, after)
    assert (out / "curves.png").stat().st_size > 0


def test_should_stop_ends_the_run_at_that_step_and_saves_the_model_there(tiny_model_dir, synth_dir, tmp_path):
    """The stop check sees every step with the model; a True ends the run after that step, and the final
    model is that step's: the same weights as a run configured for that many steps."""
    data = _subset(synth_dir, tmp_path / "mixed.jsonl", ["image", "video"])
    seen: list[tuple[int, bool]] = []

    def stop(step, model, processor):
        seen.append((step, model.training))
        model.eval()   # the trainer puts it back in train mode
        return step == 3

    stopped = train_sft(_cfg(tiny_model_dir, data, tmp_path / "stopped", per_device_batch_size=2, max_steps=8,
                             media_root=str(synth_dir), seed=0), should_stop=stop)
    assert seen == [(1, True), (2, True), (3, True)]
    assert [r["step"] for r in _metrics(tmp_path / "stopped")] == [1, 2, 3]
    short = train_sft(_cfg(tiny_model_dir, data, tmp_path / "short", per_device_batch_size=2, max_steps=3,
                           media_root=str(synth_dir), seed=0))
    from safetensors.torch import load_file

    a, b = load_file(stopped / "model.safetensors"), load_file(short / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_accumulation_matches_one_big_batch(tiny_model_dir, synth_dir, tmp_path):
    """Batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same losses and weights (token mean
    over the whole step, not a mean of micro-batch means)."""
    data = _subset(synth_dir, tmp_path / "four.jsonl", ["video", "image", "video", "video"])
    a = train_sft(_cfg(tiny_model_dir, data, tmp_path / "a", per_device_batch_size=4, max_steps=2,
                       media_root=str(synth_dir)))
    b = train_sft(_cfg(tiny_model_dir, data, tmp_path / "b", per_device_batch_size=1,
                       gradient_accumulation_steps=4, max_steps=2, media_root=str(synth_dir)))
    ra, rb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    # same gradient at step 1 (a mean of per-micro-batch means would differ: response lengths differ)
    assert ra[0]["grad_norm"] == pytest.approx(rb[0]["grad_norm"], rel=1e-5)
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], rel=1e-5)
    assert ra[1]["loss"] < ra[0]["loss"]
    from safetensors.torch import load_file

    # Adam divides by sqrt(v): float noise in near-zero gradients moves weights by up to ~lr / 10
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_lora_trains_only_adapters_and_merges(tiny_model_dir, synth_dir, tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    import videor1.sft.trainer as sft

    captured = {}
    real_save_final = sft.save_final

    def spy(model, processor, accelerator, final, *, lora):
        captured.update({k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()})
        captured["trainable"] = [n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]
        return real_save_final(model, processor, accelerator, final, lora=lora)

    monkeypatch.setattr(sft, "save_final", spy)
    data = _subset(synth_dir, tmp_path / "mixed.jsonl", ["image", "video"])
    final = train_sft(_cfg(tiny_model_dir, data, tmp_path / "run", per_device_batch_size=2, max_steps=4,
                           media_root=str(synth_dir), lora=True, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                           learning_rate=1e-2))
    trainable = captured.pop("trainable")
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # the vision tower gets no adapter by default
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).state_dict()
    # every base weight is untouched during training; the adapters moved (lora_B starts at zero)
    for name, value in captured.items():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, base[key]), name
    assert any(v.abs().sum() > 0 for n, v in captured.items() if "lora_B" in n)
    merged = Qwen2_5_VLForConditionalGeneration.from_pretrained(final)
    sd = merged.state_dict()
    assert not any("lora" in k for k in sd)
    changed = [k for k in base if not torch.equal(sd[k], base[k])]
    assert changed and all(k.split(".")[-2] in LORA_DEFAULT_TARGETS for k in changed)
    assert not any("visual" in k for k in changed)


@pytest.mark.parametrize("lora", [False, True])
def test_resume_after_kill_matches_uninterrupted(tiny_model_dir, synth_dir, tmp_path, monkeypatch, lora):
    """Kill during step 4 (checkpoint at 2), run again: metrics and final weights equal an uninterrupted run."""
    import videor1.sft.trainer as sft
    from safetensors.torch import load_file

    data = synth_dir / "cot.jsonl"
    kw = dict(per_device_batch_size=1, gradient_accumulation_steps=2, max_steps=5, save_steps=2, lr_scheduler="cosine",
              warmup_ratio=0.2, lora=lora, lora_rank=4, lora_dropout=0.2, seed=1)
    full = train_sft(_cfg(tiny_model_dir, data, tmp_path / "full", **kw))

    real_step, calls = sft.train_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated kill during step 4")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(sft, "train_step", dying_step)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_sft(_cfg(tiny_model_dir, data, out, **kw))
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    monkeypatch.setattr(sft, "train_step", real_step)
    with pytest.raises(ValueError, match="resume=true"):  # a fresh run never mixes with an old one
        train_sft(_cfg(tiny_model_dir, data, out, **kw))
    resumed = train_sft(_cfg(tiny_model_dir, data, out, resume=True, **kw))

    want, got = _metrics(tmp_path / "full"), _metrics(out)
    keys = ("step", "loss", "lr", "grad_norm", "target_tokens", "samples")
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want]
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_config_file_and_overrides(tmp_path):
    """The shipped configs load; overrides reach nested keys; unknown keys are refused by name."""
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("sft_demo_cpu.yaml", "sft_qwen25vl7b.yaml"):
        cfg = load_config(SFTConfig, root / name, [])
        assert cfg.system_prompt == "You are a helpful assistant."
    cfg = load_config(SFTConfig, root / "sft_qwen25vl7b.yaml", ["video.max_frames=8", "lora=true"])
    assert cfg.video.max_frames == 8 and cfg.lora and cfg.learning_rate == 1e-6
    assert config_to_dict(cfg)["lora_target_modules"][0] == "q_proj"
    with pytest.raises(ValueError, match="lora_rnak"):
        load_config(SFTConfig, root / "sft_demo_cpu.yaml", ["lora_rnak=4"])
    with pytest.raises(ValueError, match="warmup_ratio"):
        load_config(SFTConfig, root / "sft_demo_cpu.yaml", ["warmup_ratio=1.5"])


@pytest.mark.slow
def test_sft_teaches_the_format(tiny_model_dir, tmp_path):
    """SFT on the synthetic CoT set (100 steps of 8, well under a minute on 2 idle cores), then greedy
    decoding on the held-out test set: most outputs follow <think>...</think><answer>...</answer>."""
    from videor1.data.synth.build import make_dataset
    from videor1.model.load import load_model, load_processor
    from videor1.rewards import format_reward
    from videor1.generation.engines import HFEngine, SamplingParams
    from videor1.model.inputs import make_sample

    paths = make_dataset(tmp_path / "synth", n_train=96, n_test=48, seed=0)
    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(SFTConfig, root / "sft_demo_cpu.yaml", [
        f"model={tiny_model_dir}", f"train_data={paths['cot']}", f"media_root={paths['media_root']}",
        f"output_dir={tmp_path / 'run'}", "max_steps=100", "save_steps=0", "report_to=[]"])
    final = train_sft(cfg)
    records = load_records(paths["test"])
    samples = [make_sample(r, paths["media_root"], cfg.video, cfg.image,
                           system_prompt=cfg.system_prompt) for r in records]

    def format_rate(model_dir: Path) -> float:
        model = load_model(model_dir, device="cpu", dtype=torch.float32).eval()
        engine = HFEngine(model, load_processor(model_dir), batch_size=16)
        outs = engine.generate(samples, SamplingParams(n=1, max_new_tokens=64, do_sample=False))
        return sum(format_reward(o[0].text) for o in outs) / len(outs)

    before, after = format_rate(tiny_model_dir), format_rate(final)
    print(f"\nformat reward, greedy, {len(samples)} synthetic test prompts: "
          f"before SFT {before:.3f}, after SFT {after:.3f}")
    assert before < 0.1
    assert after >= 0.8


@pytest.mark.slow
def test_two_processes_match_one_with_a_skipped_step(tiny_model_dir, synth_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on the CPU (gloo): batch 1 per process equals batch 2
    in one process, also at a step where one process's only sample fails to decode (it runs a weight-0
    micro-batch so the gradient all-reduce still happens)."""
    import shutil
    import subprocess
    import sys

    good = [r.to_dict() for r in load_records(synth_dir / "cot.jsonl")[:3]]
    shutil.copytree(synth_dir / "media", tmp_path / "media")
    (tmp_path / "media" / "broken.mp4").write_bytes(b"garbage" * 40)
    bad = dict(good[0], problem_id="broken", path="media/broken.mp4", data_type="video")
    order = DataPlan(4, seed=7, micro_batch=1, accumulation=1, world=2).epoch_order(0)
    rows = [None] * 4
    for slot, record in zip(order, [good[0], good[1], good[2], bad]):  # step 2, rank 1: the broken one
        rows[slot] = record
    data = write_records(tmp_path / "cot.jsonl", rows)
    common = [f"model={tiny_model_dir}", f"train_data={data}", f"media_root={tmp_path}", "max_steps=2", "seed=7",
              "learning_rate=5e-4", "lr_scheduler=constant", "save_steps=0", "report_to=[]", "progress=false",
              "num_threads=1", "video.max_frames=4", "video.max_pixels=3136", "image.max_pixels=3136"]
    script = tmp_path / "launch.py"
    script.write_text("import sys\nfrom videor1.sft.trainer import run_sft\nrun_sft(None, sys.argv[1:])\n")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *common,
           f"output_dir={tmp_path / 'ddp'}", "per_device_batch_size=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    one = train_sft(load_config(SFTConfig, None, common + [f"output_dir={tmp_path / 'one'}",
                                                           "per_device_batch_size=2"]))
    ddp, ref = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert [r["samples"] for r in ddp] == [2, 1] and [r["samples_skipped"] for r in ddp] == [0, 1]
    assert [r["loss"] for r in ddp] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
    assert [r["grad_norm"] for r in ddp] == pytest.approx([r["grad_norm"] for r in ref], rel=1e-4)
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "ddp" / "final" / "model.safetensors"), load_file(one / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
