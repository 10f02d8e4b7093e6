"""Launched by test_engines_sp.py (`accelerate launch ... sp_probe.py OUT EXACT_MODELS|- EXACT_DATA|- key=value...`),
2 processes on gloo (or 1 for the baseline). Two parts, in this order:

- exact (when EXACT_MODELS are given; ZeRO-2 launch, 2 processes): for the tiny Qwen2.5-VL and Qwen3-VL in float64,
  plain models (no engine), every case's per-token log-probs and gradients (summed over the SP group) against the
  same forward with SP off on the same process: video / image / mixed prompts (mixed: left-padded shared-prefix
  rows), every loss_type, gradient checkpointing, the reference model in eval mode under no_grad, the unpadded one-
  row dummy batch (a rank whose prompt is unusable), SFT's right-padded NLL. Saves {case: (max |dlogp|, max
  relative grad error)}.
- step (2 processes, ZeRO-2 or ZeRO-3, sequence_parallel_size=2; or 1 process, SP off): the trainer's own
  `_setup` / `_optimise` on a fixed batch (both ranks of the SP group hold the same groups), SGD lr 1e-2,
  twice: a real batch, then the zero-weighted dummy batch. Saves the weight updates and the logged loss; every
  rank records the torch.distributed / deepspeed.comm collectives it calls (compared across ranks).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import videor1.rl.trainer as trainer
from videor1.config import load_config
from videor1.data.media import ImageSpec, VideoSpec
from videor1.data.records import read_records
from videor1.model.inputs import make_sample, pad_token_id
from videor1.model.load import load_model, load_processor
from videor1.parallel import sequence
from videor1.rl.algorithms import loss_count, policy_loss
from videor1.rl.config import RLConfig
from videor1.sft.data import collate, first_target, response_text, token_nll
from videor1.rl.step import LossBatch, completion_logps, dummy_part, load_prompts, loss_inputs, loss_parts
from videor1.train.common import enable_gradient_checkpointing, process_sum

VIDEO = VideoSpec(fps=2.0, min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)
IMAGE = ImageSpec(min_pixels=56 * 56, max_pixels=56 * 56)
G = 2
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
COMPLETIONS = [[11, 12, 13], [21, 22], [31], [41, 42, 43, 44], [51, 52], [61, 62, 63, 64, 65]]
ADVANTAGES = torch.tensor([1.0, -0.5, 0.5, 0.25, 2.0, -1.0])   # not zero-sum: a non-zero loss
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "all_to_all_single",
               "all_to_all", "broadcast", "scatter", "broadcast_object_list", "all_gather_object", "barrier")
DS_COLLECTIVES = ("allgather_fn", "reduce_scatter_fn", "inference_all_reduce")


@contextlib.contextmanager
def sp_off():
    """SP switched off on this process (the one-process forward, for comparison); the model keeps SP_SDPA,
    which without the SP keyword is the plain attention."""
    saved, sequence._GROUP = sequence._GROUP, None
    try:
        yield
    finally:
        sequence._GROUP = saved


@contextlib.contextmanager
def recorded(log: list):
    """Append the name of every collective called meanwhile through torch.distributed or deepspeed.comm (what
    ZeRO-3's partitioning and Ulysses call) to `log`."""
    from deepspeed import comm as ds_comm

    saved = [(module, name, getattr(module, name)) for module in (dist, ds_comm)
             for name in COLLECTIVES + DS_COLLECTIVES if hasattr(module, name)]

    def wrap(label, fn):
        def call(*args, **kwargs):
            log.append(label)
            return fn(*args, **kwargs)
        return call

    for module, name, fn in saved:
        setattr(module, name, wrap(f"{module.__name__}.{name}", fn))
    try:
        yield log
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


# ------------------------------------------------------------------------------------------- exact
def _prompts(processor, records, root, picks):
    chosen = [records[i] for i in picks]
    return load_prompts(chosen, list(range(len(chosen))), list(range(len(chosen))), processor, media_root=root,
                        video=VIDEO, image=IMAGE, max_prompt_length=4096).batch


def _forward(model, inputs, ids, mask, adv, loss_type, grad: bool):
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad):
        logp = completion_logps(model, inputs, ids, 0.7)
    if not grad:
        return logp.detach(), {}
    gen = torch.Generator().manual_seed(3)
    old = logp.detach() + 0.3 * torch.randn(logp.shape, generator=gen, dtype=logp.dtype)
    ref = logp.detach() + 0.2 * torch.randn(logp.shape, generator=gen, dtype=logp.dtype)
    out = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.04, epsilon=0.2, loss_type=loss_type,
                      max_completion_length=ids.shape[1], normaliser=loss_count(loss_type, mask, ids.shape[1]))
    out.loss.backward()
    return logp.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare(model, inputs, ids, mask, adv, loss_type="grpo", grad=True) -> tuple[float, float]:
    with sp_off():
        lp0, g0 = _forward(model, inputs, ids, mask, adv, loss_type, grad)
    lp1, g1 = _forward(model, inputs, ids, mask, adv, loss_type, grad)
    dlogp = float((lp0 - lp1).abs()[mask.bool()].max())
    worst = 0.0
    for name, g in g0.items():
        mine = g1.get(name, torch.zeros_like(g))
        dist.all_reduce(mine, group=sequence._GROUP.group)   # the SP ranks' parts add up to the gradient
        worst = max(worst, float((mine - g).abs().max()) / max(float(g.abs().max()), 1e-30))
    if grad:
        assert g0, "no gradient"
    return dlogp, worst


def _sft_forward(model, inputs, labels, keep):
    model.zero_grad(set_to_none=True)
    if sequence.active():
        nll, count = sequence.token_nll(model, inputs, labels, keep)
    else:
        nll, count = token_nll(model(**inputs, logits_to_keep=keep, use_cache=False).logits, labels[:, -keep:])
    nll.backward()
    return nll.detach(), int(count), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                                      if p.grad is not None}


def _compare_sft(model, processor, root) -> tuple[float, float]:
    """SFT's summed NLL and gradients over a right-padded micro-batch of a video and an image sample (different
    lengths), SP against SP off."""
    records, _ = read_records(Path(root) / "cot.jsonl", root)
    picks = [next(r for r in records if r.data_type == kind) for kind in ("video", "image")]
    pairs = [(make_sample(r, root, VIDEO, IMAGE), response_text(r)) for r in picks]
    inputs = dict(collate(pairs, processor=processor, max_length=4096).inputs)
    labels = inputs.pop("labels")
    keep = labels.shape[1] - first_target(labels) + 1
    with sp_off():
        nll0, n0, g0 = _sft_forward(model, inputs, labels, keep)
    nll1, n1, g1 = _sft_forward(model, inputs, labels, keep)
    assert n0 == n1 > 0 and bool(inputs["attention_mask"].bool().all()) is False   # padding present
    worst = 0.0
    for name, g in g0.items():
        mine = g1.get(name, torch.zeros_like(g))
        dist.all_reduce(mine, group=sequence._GROUP.group)
        worst = max(worst, float((mine - g).abs().max()) / max(float(g.abs().max()), 1e-30))
    return float((nll0 - nll1).abs()) / n0, worst


def exact(out: str, model_dirs: list[str], data: str, root: str) -> None:
    from videor1.train.engine import make_accelerator

    make_accelerator()   # the launcher's gloo process group
    sequence.start(2)
    results = {}
    for model_dir in model_dirs:
        processor = load_processor(model_dir)
        pad = pad_token_id(processor)
        records, _ = read_records(data, root)
        videos = [i for i, r in enumerate(records) if r.data_type == "video"]
        images = [i for i, r in enumerate(records) if r.data_type == "image"]
        picks = {"video": [videos[0]], "image": [images[0]], "mixed": [videos[0], videos[1], images[0]]}
        model = load_model(model_dir, device="cpu", dtype=torch.float64).train()
        sequence.check_model(model, 2)
        sequence.install(model)
        family = model.config.model_type
        for kind, pick in picks.items():
            batch = _prompts(processor, records, root, pick)
            n_rows = len(pick) * G
            inputs, ids, mask = loss_inputs(batch, COMPLETIONS[:n_rows], G, pad, shared=True)
            adv = ADVANTAGES[:n_rows].double()
            types = LOSS_TYPES if kind == "mixed" else ("grpo",)
            for loss_type in types:
                results[(family, kind, loss_type)] = _compare(model, inputs, ids, mask, adv, loss_type)
        batch = _prompts(processor, records, root, picks["mixed"])
        inputs, ids, mask = loss_inputs(batch, COMPLETIONS, G, pad, shared=True)
        model.eval()
        results[(family, "mixed", "reference-eval")] = _compare(model, inputs, ids, mask, None, grad=False)
        model.train()
        dummy = dummy_part(processor, pad)
        results[(family, "dummy-unpadded", "grpo")] = _compare(model, dummy.inputs, dummy.ids, dummy.mask,
                                                                dummy.advantages.double() + 1.0)
        results[(family, "sft", "right-padded")] = _compare_sft(model, processor, root)
        enable_gradient_checkpointing(model)
        results[(family, "mixed", "checkpointing")] = _compare(model, inputs, ids, mask, ADVANTAGES.double())
    if dist.get_rank() == 0:
        torch.save(results, out)


# -------------------------------------------------------------------------------------------- step
def sgd(cfg, model):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fill_allowing_sgd(accelerator, **kwargs):
    real_fill(accelerator, **kwargs)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config["zero_allow_untested_optimizer"] = True


real_fill = trainer.fill_deepspeed_auto


def step(out: str, overrides: list[str]) -> None:
    trainer.fill_deepspeed_auto = fill_allowing_sgd
    trainer._build_optimizer = sgd
    cfg = load_config(RLConfig, None, overrides)
    run = trainer._setup(cfg)
    accelerator = run.accelerator
    records, _ = read_records(cfg.train_data, cfg.media_root)
    groups = [0, 1, 2]   # every rank of the SP group: the same prompts
    prompts = load_prompts([records[g] for g in groups], groups, groups, run.processor, media_root=cfg.media_root,
                           video=cfg.video, image=cfg.image, max_prompt_length=4096)
    rows = [g * G + j for g in groups for j in range(G)]
    parts = loss_parts(prompts.batch, [COMPLETIONS[r] for r in rows], ADVANTAGES[rows], G, run.pad_id, shared=True,
                       per_part=3)
    results, log = {}, []
    for name, batch in (("real", LossBatch(parts, 1.0, None, 0.0, 3)),
                        ("dummy", LossBatch([dummy_part(run.processor, run.pad_id)], 0.0, None))):
        before = weights(run)
        with recorded(log):
            stats = trainer._optimise(run, batch)
        after = weights(run)
        loss = process_sum(accelerator, stats["loss"]) / max(process_sum(accelerator, float(batch.weight > 0)), 1)
        results[name] = {"delta": {k: before[k] - after[k] for k in before}, "loss": loss}
    every = [None] * accelerator.num_processes
    dist.all_gather_object(every, log) if accelerator.num_processes > 1 else every.__setitem__(0, log)
    results["collectives"] = every
    if accelerator.process_index == 0:
        torch.save(results, out)
    accelerator.wait_for_everyone()
    print("PROBE-DONE", flush=True)


def weights(run) -> dict[str, torch.Tensor]:
    state = run.accelerator.get_state_dict(run.model) or {}
    return {k: v.detach().double().clone() for k, v in state.items()}


if __name__ == "__main__":   # argv: OUT EXACT_MODELS|- EXACT_DATA|- STEP_OVERRIDES...
    if sys.argv[2] != "-":
        exact(sys.argv[1] + ".exact", sys.argv[2].split(","), sys.argv[3], str(Path(sys.argv[3]).parent))
    step(sys.argv[1], sys.argv[4:])
