"""Launched by test_engines_global_norm.py (`accelerate launch ... rl_grad_probe.py OUT GROUPS key=value...`):
the RL trainer's own `_setup` and `_optimise` on a FIXED batch (prompts, completions and advantages given, no
rollouts), with plain SGD at lr 1e-2 in place of AdamW, so that each update is -1e-2 x the gradient. GROUPS says
which of three prompt groups each process holds ("01|2": rank 0 groups 0 and 1, rank 1 group 2; "012": one
process, all three). For each variant (loss_type, loss_micro_batch_size, shared_prefix) one `_optimise` runs;
rank 0 saves every variant's weight change and metrics to OUT (torch.save)."""

from __future__ import annotations

import sys
from dataclasses import replace

import torch

import videor1.rl.trainer as trainer
from videor1.config import load_config
from videor1.data.records import read_records
from videor1.model.inputs import pad_token_id
from videor1.rl.config import RLConfig
from videor1.rl.step import LossBatch, groups_per_part, load_prompts, loss_parts
from videor1.train.common import process_sum

G = 2
LR = 1e-2   # small enough that 9 updates leave the model near its start (lr 1 diverged by the third)
VARIANTS = [(loss, size, True) for loss in ("grpo", "bnpo", "dr_grpo", "dapo") for size in (0, G)] + \
    [("grpo", G, False)]
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
    """Every weight, whole (gathered under ZeRO-3: a collective), copied."""
    return {k: v.detach().float().clone() for k, v in run.accelerator.get_state_dict(run.model).items()}


def main() -> None:
    out, groups, overrides = sys.argv[1], sys.argv[2].split("|"), sys.argv[3:]
    cfg = load_config(RLConfig, None, overrides)
    run = trainer._setup(cfg)
    rank = run.accelerator.process_index
    mine = [int(g) for g in groups[rank]]
    records, _ = read_records(cfg.train_data, cfg.media_root)
    prompts = load_prompts([records[g] for g in mine], list(range(len(mine))), mine, run.processor,
                           media_root=cfg.media_root, video=cfg.video, image=cfg.image, max_prompt_length=4096)
    rows = [g * G + j for g in mine for j in range(G)]
    tokens, advantages = [COMPLETIONS[r] for r in rows], ADVANTAGES[rows]
    results = {}
    for loss_type, size, shared in VARIANTS:
        run.cfg = replace(cfg, loss_type=loss_type, loss_micro_batch_size=size, shared_prefix=shared)
        parts = loss_parts(prompts.batch, tokens, advantages, G, pad_token_id(run.processor), shared=shared,
                           per_part=groups_per_part(size, G, len(mine)))
        before = weights(run)
        stats = trainer._optimise(run, LossBatch(parts, 1.0, None, 0.0, len(mine)))
        after = weights(run)
        loss = process_sum(run.accelerator, stats["loss"]) / run.accelerator.num_processes   # every process has data
        if rank == 0:
            results[(loss_type, size, shared)] = {"delta": {k: before[k] - after[k] for k in before},
                                                  "loss": loss, "passes": len(parts)}
    if rank == 0:
        torch.save(results, out)
    run.accelerator.wait_for_everyone()
    print(f"PROBE-DONE rank={rank} parts={[r['passes'] for r in results.values()]}", flush=True)


if __name__ == "__main__":
    main()
