"""videor1.train.logprobs: chunked per-token log-probs with their own backward, against the naive float32
computation (values and gradients), and what each keeps for backward (saved-tensor bytes).

Tolerances: values within 2e-5 absolute (float32 log-probs of magnitude <= ~20); gradients within 1e-5
absolute in float32 and within one bf16 rounding of the gradient's size (8e-3 relative) in bf16.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videor1.rl.algorithms import selective_log_softmax
from videor1.sft.data import IGNORE_INDEX, first_target, token_nll
from videor1.train.logprobs import chunk_positions, saved_tensor_bytes, token_logprobs


def _naive(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The obvious float32 way: a float32 copy of the logits, log_softmax, gather (what autograd keeps: the copy)."""
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _case(dtype: torch.dtype, seed: int, b: int = 3, length: int = 7, vocab: int = 50):
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(b, length + 1, vocab, generator=g) * 3).to(dtype).requires_grad_()
    ids = torch.randint(0, vocab, (b, length), generator=g)
    upstream = torch.randn(b, length, generator=g)
    return base, ids, upstream


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_elements", [1, 120, 1 << 24])   # one position per chunk, a few, all at once
def test_values_and_gradients_equal_the_naive_float32_computation(dtype, temperature, chunk_elements):
    base, ids, upstream = _case(dtype, seed=int(temperature * 10) + chunk_elements % 7)
    logits = base[:, :-1, :]   # a non-contiguous view, as the trainers pass it
    got = token_logprobs(logits, ids, temperature=temperature, chunk_elements=chunk_elements)
    ref = _naive(logits, ids, temperature)
    assert got.dtype == torch.float32 and got.shape == ids.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)
    (g_got,) = torch.autograd.grad((got * upstream).sum(), base)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), base)
    assert g_got.dtype == dtype and float(g_got[:, -1].abs().max()) == 0.0   # the unused last position
    if dtype == torch.float32:
        torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-5)
    else:
        scale = float(g_ref.float().abs().max())
        assert float((g_got.float() - g_ref.float()).abs().max()) <= 8e-3 * scale


def test_chunking_and_input_checks():
    assert chunk_positions(152_064) == 110 and chunk_positions(10, chunk_elements=3) == 1
    with pytest.raises(ValueError, match=r"\[B, L, V\]"):
        token_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0.0)


def test_no_float32_copy_of_the_logits_is_kept_for_backward():
    """bf16 logits [B, L, V]: the naive way keeps a float32 copy (2x the bf16 bytes), the old row-by-row
    selective_log_softmax kept the same (each row's float32 copy); token_logprobs keeps the bf16 logits it was
    given and a [B, L] float32 logsumexp only."""
    b, length, vocab = 2, 16, 4096
    base = torch.randn(b, length + 1, vocab, dtype=torch.bfloat16).requires_grad_()
    ids = torch.randint(0, vocab, (b, length))
    bf16_bytes = base.numel() * 2

    def rowwise_old():   # the pre-issue-35 selective_log_softmax, row by row
        rows = [r.float().gather(-1, i.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(r.float(), dim=-1)
                for r, i in zip(base[:, :-1], ids)]
        return torch.stack(rows)

    _, naive = saved_tensor_bytes(_naive, base[:, :-1], ids)
    _, old = saved_tensor_bytes(rowwise_old)
    _, new = saved_tensor_bytes(selective_log_softmax, base[:, :-1], ids)
    positions = b * length
    assert naive.get(torch.float32, 0) >= 2 * positions * vocab * 2          # the float32 copy: 2x bf16
    assert old.get(torch.float32, 0) >= 2 * positions * vocab * 2
    assert new.get(torch.float32, 0) <= positions * 4                       # the logsumexp only
    assert new.get(torch.bfloat16, 0) == bf16_bytes                          # the caller's logits, not a copy
    assert sum(new.values()) <= bf16_bytes + positions * 12


def test_token_nll_equals_cross_entropy_and_takes_the_last_positions():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, 40, generator=g, requires_grad=True)
    labels = torch.randint(0, 40, (2, 9), generator=g)
    labels[:, :4] = IGNORE_INDEX   # the prompt
    labels[1, 7:] = IGNORE_INDEX   # padding
    nll, n = token_nll(logits, labels)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum")
    assert int(n) == 5 + 3 and float(nll.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    (g_nll,) = torch.autograd.grad(nll, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_nll, g_ref, rtol=0, atol=1e-6)
    # the SFT trainer keeps logits from the first target's position - 1 on (`logits_to_keep`): same loss
    keep = labels.shape[1] - first_target(labels) + 1
    assert first_target(labels) == 4 and keep == 6
    part, _ = token_nll(logits[:, -keep:], labels[:, -keep:])
    assert float(part.detach()) == pytest.approx(float(nll.detach()), rel=1e-6)
    assert first_target(torch.full((1, 3), IGNORE_INDEX)) == 3
