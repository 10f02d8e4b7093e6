"""docs/multinode.md as far as one CPU machine allows: two "nodes" = two `accelerate launch` commands with one
process each, `--num_machines 2 --machine_rank 0|1 --main_process_ip 127.0.0.1`, DeepSpeed's standard (torchrun)
multi-node launcher, configs/accelerate/zero3.yaml (ZeRO-3):
- T-GRPO with mixed media across the nodes and a node whose prompts are all unusable at step 2;
- SFT with the SFT engine test's data (mixed media in a micro-batch, micro-batches whose samples are all
  skipped, under gradient accumulation) writing one shared output directory, then a resume of it from
  checkpoint-2, again as two nodes, ending with the same weights.
Each launcher writes to its own log file (`run_together`): a pipe read only after the other launcher had ended
filled up and blocked that node inside a collective, which looked like a ZeRO-3 hang (docs/multinode.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engines_common import DIST_TIMEOUT_S, LAUNCHER, REPO, engine_of, metrics_of, run_together
from test_engines_rl import _data as rl_data
from test_engines_rl import _overrides as rl_overrides
from test_engines_sft import _data as sft_data
from test_engines_sft import _overrides

CONFIG = "zero3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(overrides: list[str], tmp: Path, kind: str = "sft") -> list[str]:
    script = tmp / "launch_engine.py"
    script.write_text(LAUNCHER)
    port = _free_port()
    env = dict(os.environ, VIDEOR1_DIST_TIMEOUT_S=str(DIST_TIMEOUT_S), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmds = [[accelerate, "launch", "--config_file", str(REPO / f"configs/accelerate/{CONFIG}.yaml"),
             "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
             "--deepspeed_multinode_launcher", "standard", "--mixed_precision", "no",
             str(script), kind, *overrides] for rank in (0, 1)]
    return run_together(cmds, [tmp / f"node{rank}.log" for rank in (0, 1)], env=env)


def test_run_together_drains_every_output(tmp_path):
    """The first process ends only once the second has written 256 KiB (four pipe buffers) and ended: the harness
    must not leave the second blocked on an unread pipe, as the two-node runs once did (the first node then waited
    in a collective until gloo's timeout)."""
    flag = tmp_path / "second_done"
    wait = (f"import pathlib, sys, time\nflag, end = pathlib.Path({str(flag)!r}), time.monotonic() + 30\n"
            "while not flag.exists() and time.monotonic() < end:\n    time.sleep(0.1)\nsys.exit(0 if flag.exists() else 1)")
    write = f"import pathlib, sys\nsys.stdout.write('x' * 262144)\nsys.stdout.flush()\npathlib.Path({str(flag)!r}).touch()"
    first, second = run_together([[sys.executable, "-c", wait], [sys.executable, "-c", write]],
                                 [tmp_path / "first.log", tmp_path / "second.log"], env=dict(os.environ), timeout=120)
    assert first == "" and second == "x" * 262144


def test_run_together_stops_all_when_one_fails(tmp_path):
    """A node that fails at start leaves the other waiting in its first collective: the harness ends both at
    once, with the failing one's output, instead of waiting out the timeout."""
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"(?s)a process failed.*exit 3.*no rendezvous"):
        run_together([[sys.executable, "-c", "import sys; print('no rendezvous'); sys.exit(3)"],
                      [sys.executable, "-c", "import time; time.sleep(120)"]],
                     [tmp_path / "first.log", tmp_path / "second.log"], env=dict(os.environ), timeout=300)
    assert time.monotonic() - start < 60


def test_two_nodes_on_loopback_train_and_resume(tiny_model_dir, synth_dir, tmp_path):
    data = sft_data(tmp_path, synth_dir)
    out = tmp_path / "shared" / "run"
    node0, _ = _two_nodes(_overrides(tiny_model_dir, data, tmp_path, out), tmp_path)
    assert f"engine {CONFIG} (2 process(es), DEEPSPEED" in node0
    assert engine_of(out)["num_processes"] == 2
    assert [m["step"] for m in metrics_of(out)] == [1, 2, 3]
    ckpt = out / "checkpoint-2"
    assert (ckpt / "rng_state_1.pt").is_file()          # the second node's process wrote its own state
    shards = sorted(p.name for p in (ckpt / "accelerator_state" / "pytorch_model").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    again = tmp_path / "shared" / "again"
    again.mkdir()
    shutil.copytree(ckpt, again / "checkpoint-2")
    _two_nodes(_overrides(tiny_model_dir, data, tmp_path, again, "resume=true"), tmp_path)
    first, resumed = load_file(str(out / "final/model.safetensors")), load_file(str(again / "final/model.safetensors"))
    assert all(torch.equal(first[k], resumed[k]) for k in first)


def test_two_nodes_on_loopback_zero3_rl(tiny_model_dir, synth_dir, tmp_path):
    data = rl_data(tmp_path, synth_dir, with_bad=True)
    out = tmp_path / "shared" / "rl"
    node0, _ = _two_nodes(rl_overrides(tiny_model_dir, data, tmp_path, out) + ["save_steps=0"], tmp_path, "rl")
    assert f"engine {CONFIG} (2 process(es), DEEPSPEED" in node0
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["prompts"] for m in metrics] == [4, 2, 4]      # the second node had no usable prompt at step 2
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "final/model.safetensors"))
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)
