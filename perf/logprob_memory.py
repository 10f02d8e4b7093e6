"""What the RL / SFT log-probs keep for backward: the row-by-row float32 `selective_log_softmax` of before issue 35
against `videor1.train.logprobs.token_logprobs` (chunked, its own backward), on bf16 logits.

Measures, at a stated shape, the bytes of the tensors autograd saves for backward (`saved_tensor_bytes`:
`torch.autograd.graph.saved_tensors_hooks`, distinct storages), the peak resident memory growth of the forward
(ru_maxrss, this process), the forward + backward time, and the largest difference of values and gradients
between the two. Then projects the saved bytes to the 7B recipe's loss forward (saved bytes scale linearly in
rows x positions x vocabulary): one prompt = G completions of C tokens over Qwen2.5-VL's vocabulary.

    python perf/logprob_memory.py [--rows 1] [--length 768] [--vocab 152064] [--generations 8] [--prompts 4]

CPU figures; the byte counts are the same on a GPU (the same tensors are saved), the times are not.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from videor1.train.logprobs import saved_tensor_bytes, token_logprobs

GIB = 1024 ** 3


def rowwise_before(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The pre-issue-35 `selective_log_softmax`: each row cast to float32, logsumexp, gather."""
    out = []
    for row_logits, row_ids in zip(logits / temperature, ids):
        row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(out)


def chunked_after(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    return token_logprobs(logits, ids, temperature=temperature)


def measure(fn, logits: torch.Tensor, ids: torch.Tensor) -> dict:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out, saved = saved_tensor_bytes(fn, logits[:, :-1], ids, 0.7)
    t1 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (grad,) = torch.autograd.grad(out.sum(), logits)
    t2 = time.perf_counter()
    return {"out": out.detach(), "grad": grad, "saved": saved, "forward_s": t1 - t0, "backward_s": t2 - t1,
            "rss_growth_kib": rss1 - rss0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--length", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=152_064)
    parser.add_argument("--generations", type=int, default=8, help="G of the projection")
    parser.add_argument("--prompts", type=int, default=4, help="prompts_per_step of the projection")
    args = parser.parse_args()
    torch.manual_seed(0)
    logits = torch.randn(args.rows, args.length + 1, args.vocab, dtype=torch.bfloat16).requires_grad_()
    ids = torch.randint(0, args.vocab, (args.rows, args.length))
    bf16 = args.rows * args.length * args.vocab * 2
    print(f"shape: {args.rows} row(s) x {args.length} positions x {args.vocab} vocabulary, bf16 logits "
          f"{bf16 / GIB:.3f} GiB, temperature 0.7")
    # the chunked one first: ru_maxrss only grows, so the larger peak is measured second
    after = measure(chunked_after, logits, ids)
    before = measure(rowwise_before, logits, ids)
    print(f"{'':28s}{'before (row-wise fp32)':>24s}{'after (chunked)':>20s}")
    for dtype in sorted({*before["saved"], *after["saved"]}, key=str):
        b, a = before["saved"].get(dtype, 0), after["saved"].get(dtype, 0)
        print(f"saved {str(dtype):22s}{b / GIB:21.3f} G{a / GIB:17.3f} G")
    total_b, total_a = sum(before["saved"].values()), sum(after["saved"].values())
    print(f"{'saved total / bf16 logits':28s}{total_b / bf16:22.2f}x{total_a / bf16:18.2f}x")
    print(f"{'forward RSS growth':28s}{before['rss_growth_kib'] / 1024 ** 2:21.3f} G"
          f"{after['rss_growth_kib'] / 1024 ** 2:17.3f} G")
    print(f"{'forward / backward s':28s}{before['forward_s']:13.2f} /{before['backward_s']:6.2f}"
          f"{after['forward_s']:12.2f} /{after['backward_s']:6.2f}")
    dv = float((before["out"] - after["out"]).abs().max())
    dg = float((before["grad"].float() - after["grad"].float()).abs().max())
    print(f"max |value diff| {dv:.2e}, max |grad diff| {dg:.2e} (bf16 gradients, max |grad| "
          f"{float(before['grad'].float().abs().max()):.2e}); before divided by the temperature in bf16, after "
          f"in float32")
    per_row = args.rows * args.length
    scale = args.generations * args.length / per_row
    print(f"\nprojection, one prompt = {args.generations} completions x {args.length} tokens x {args.vocab}: bf16 "
          f"logits {bf16 * scale / GIB:.2f} GiB; kept for backward: before {total_b * scale / GIB:.2f} GiB "
          f"(float32 copies), after {total_a * scale / GIB:.2f} GiB (the bf16 logits themselves); x{args.prompts} "
          f"prompts per step in one pass: before {total_b * scale * args.prompts / GIB:.2f} GiB, after "
          f"{total_a * scale * args.prompts / GIB:.2f} GiB; with loss_micro_batch_size {args.generations} "
          f"(one group per pass): after {total_a * scale / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
