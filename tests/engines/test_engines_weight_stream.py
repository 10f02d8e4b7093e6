"""The weight stream a vLLM sync consumes (`videor1.generation.weights.full_state_items`), on 2 processes under
DeepSpeed ZeRO-3 and FSDP2 (gloo): every rank gets every full tensor, in the rollout dtype (bf16), equal to the
model's own weights; under ZeRO-3 no gathered parameter is left available when a tensor is handed on (one module
gathered at a time, released before its tensors go out); FSDP2 parameters stay sharded DTensors."""

from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import save_file

from engines_common import launch

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from safetensors.torch import load_file
    from videor1.generation.weights import full_state_items
    from videor1.model.load import load_model
    from videor1.train.common import fill_deepspeed_auto, set_fsdp_wrap_classes
    from videor1.train.engine import make_accelerator

    _, _, model_dir, ref_file, out_dir = sys.argv
    acc = make_accelerator()
    model = load_model(model_dir, device=acc.device, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fill_deepspeed_auto(acc, micro_batch=1, accumulation=1, max_grad_norm=1.0, model=model)
    set_fsdp_wrap_classes(acc, model)
    model, opt = acc.prepare(model, opt)
    inner = acc.unwrap_model(model)
    params = list(inner.parameters())
    zero3 = hasattr(params[0], "ds_id")
    ref = load_file(ref_file)
    names, left_gathered = [], 0
    for name, tensor in full_state_items(model, acc, dtype=torch.bfloat16):
        if zero3:   # nothing but ZeRO-3's always-resident small parameters may be gathered now
            left_gathered += sum(1 for p in params if p.ds_status.name == "AVAILABLE" and not p.ds_persist)
        assert tensor.dtype == torch.bfloat16, (name, tensor.dtype)
        assert torch.equal(tensor.cpu(), ref[name]), name
        names.append(name)
    assert sorted(names) == sorted(ref) and names == list(inner.state_dict())   # every tensor, in state-dict order
    dtensors = sum(hasattr(p, "full_tensor") for p in params)
    with open(f"{out_dir}/stream{acc.process_index}.txt", "w") as handle:
        handle.write(f"pairs={len(names)} zero3={zero3} left_gathered={left_gathered} dtensors={dtensors}")
''')


@pytest.mark.parametrize("config", ["zero3", "fsdp2"])
def test_weight_stream_under_sharding(config, tiny_model_dir, tmp_path):
    from videor1.model.load import load_model

    state = load_model(tiny_model_dir, device="cpu", dtype=torch.float32).state_dict()
    ref = tmp_path / "ref.safetensors"
    save_file({k: v.bfloat16().contiguous().clone() for k, v in state.items()}, str(ref))
    launch(config, "stream", [str(tiny_model_dir), str(ref), str(tmp_path)], tmp_path, script_text=SCRIPT)
    for rank in (0, 1):
        fields = dict(item.split("=") for item in (tmp_path / f"stream{rank}.txt").read_text().split())
        assert int(fields["pairs"]) == len(state)
        if config == "zero3":
            assert fields["zero3"] == "True" and fields["left_gathered"] == "0"
        else:
            assert int(fields["dtensors"]) > 0   # still sharded after the stream
