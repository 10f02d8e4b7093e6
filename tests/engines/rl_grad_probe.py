"""Launched by test_engines_global_norm.py (`accelerate launch ... rl_grad_probe.py OUT GROUPS key=value...`):
the RL trainer's own `_setup` and `_optimise` on a FIXED batch (prompts, completions and advantages given, no
rollouts), with plain SGD at lr 1e-2 in place of AdamW, so that each update is -1e-2 x the gradient. PHASES says,
per phase, which of three prompt groups each process holds ("01|2,012|": phase 0 rank 0 groups 0 and 1, rank 1
group 2; phase 1 rank 0 all, rank 1 none; "012,012": one process, all three). For each variant of a phase
(loss_type, loss_micro_batch_size, shared_prefix) one `_optimise` runs; rank 0 saves every variant's weight
change and logged loss to OUT (torch.save)."""

from __future__ import annotations

import sys
from dataclasses import replace

import torch

import videor1.rl.trainer as trainer
from videor1.config import load_config
from videor1.data.records import read_records
from videor1.rl.config import RLConfig
from videor1.rl.metrics import gather_stats, step_stats
from videor1.rl.step import LossBatch, dummy_part, groups_per_part, load_prompts, loss_parts

G = 2
LR = 1e-2   # small enough that 9 updates leave the model near its start (lr 1 diverged by the third)
# phase 0: every loss type, one pass and one group per pass, shared prefix (and one without); phase 1: the same
# groups again, with (in the 2-process run) one process holding all of them and the other none (a dummy batch)
VARIANTS = [[(loss, size, True) for loss in ("grpo", "bnpo", "dr_grpo", "dapo") for size in (0, G)]
            + [("grpo", G, False)], [("grpo", 0, True), ("dr_grpo", G, True)]]
COMPLETIONS = [[11, 12, 13], [21, 22], [31], [41, 42, 43, 44], [51, 52], [61, 62, 63, 64, 65]]
ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])


def sgd(cfg, model):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fill_allowing_sgd(accelerator, **kwargs):
    real_fill(accelerator, **kwargs)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:   # DeepSpeed refuses optimizers it has not tested unless told
        plugin.deepspeed_config["zero_allow_untested_optimizer"] = True


real_fill = trainer.fill_deepspeed_auto
trainer.fill_deepspeed_auto = fill_allowing_sgd
trainer._build_optimizer = sgd


def weights(run) -> dict[str, torch.Tensor]:
    """Every weight, whole (gathered under ZeRO-3: a collective; None on the other ranks there), copied."""
    state = run.accelerator.get_state_dict(run.model) or {}
    return {k: v.detach().float().clone() for k, v in state.items()}


def batch_of(run, cfg, groups: list[int], size: int, shared: bool) -> LossBatch:
    """This process's loss batch of `groups` (the trainer's zero-weighted dummy batch when there are none)."""
    if not groups:
        return LossBatch([dummy_part(run.processor, run.pad_id)], 0.0, None)
    records, _ = read_records(cfg.train_data, cfg.media_root)
    prompts = load_prompts([records[g] for g in groups], list(range(len(groups))), groups, run.processor,
                           media_root=cfg.media_root, video=cfg.video, image=cfg.image, max_prompt_length=4096)
    rows = [g * G + j for g in groups for j in range(G)]
    parts = loss_parts(prompts.batch, [COMPLETIONS[r] for r in rows], ADVANTAGES[rows], G, run.pad_id, shared=shared,
                       per_part=groups_per_part(size, G, len(groups)))
    return LossBatch(parts, 1.0, None, 0.0, len(groups))


def main() -> None:
    out, phases, overrides = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
    cfg = load_config(RLConfig, None, overrides)
    run = trainer._setup(cfg)
    accelerator, rank = run.accelerator, run.accelerator.process_index
    results = {}
    for phase, spec in enumerate(phases):
        mine = [int(g) for g in spec.split("|")[rank]]
        for loss_type, size, shared in VARIANTS[phase]:
            run.cfg = replace(cfg, loss_type=loss_type, loss_micro_batch_size=size, shared_prefix=shared)
            batch = batch_of(run, run.cfg, mine, size, shared)
            before = weights(run)
            stats = trainer._optimise(run, batch)
            after = weights(run)
            logged = gather_stats(accelerator, step_stats(run.cfg, batch, stats, len(mine), 0))  # the metrics row
            if rank == 0:
                results[(phase, loss_type, size, shared)] = {"delta": {k: before[k] - after[k] for k in before},
                                                             "passes": len(batch.parts),
                                                             **{k: logged[k] for k in ("loss", "kl", "clip_fraction")}}
    if rank == 0:
        torch.save(results, out)
    accelerator.wait_for_everyone()
    print(f"PROBE-DONE rank={rank}", flush=True)


if __name__ == "__main__":
    main()
