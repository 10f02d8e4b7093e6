"""ZeRO-3 start-up loads the policy and the KL reference partitioned: the RL trainer's own `_build_models` under
`accelerate launch` with configs/accelerate/zero3.yaml, 2 processes on gloo, a tiny model built wide (hidden
1024, 4 layers: 42M parameters, 167 MB in fp32 each) so that weights dominate the memory of loading.

Asserted: every process holds half of each model's parameter elements (DeepSpeed's `ds_tensor` partitions, the
full shapes in `ds_numel`), and each process's peak anonymous RSS over loading both models stays well below
their whole size (a full load on every process, as DDP does, measured 325 MB for 2 x 159 MiB; here about
180 MB). Process 0 alone reads the checkpoint's values (transformers' ZeRO-3 loading), through safetensors'
memory map (file pages, not anonymous memory). glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so that
freed blocks go back to the system and the peak measures what is held, not allocator reuse.
"""

from __future__ import annotations

import json

from engines_common import launch

PROBE = '''
import json, sys, threading, time
from videor1.rl.config import RLConfig
from videor1.rl.trainer import _build_models
from videor1.model.load import count_parameters, local_numel
from videor1.train.engine import make_accelerator

def rss_anon_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

accelerator = make_accelerator(mixed_precision="no")
base, peak, done = rss_anon_kb(), [0], []
def sample():
    while not done:
        peak[0] = max(peak[0], rss_anon_kb())
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
model, ref = _build_models(RLConfig(model=sys.argv[1], train_data="unused", output_dir="unused", beta=0.04),
                           None, accelerator)
done.append(True)
sampler.join()
print("PROBE " + json.dumps({"rank": accelerator.process_index, "local": local_numel(model),
      "full": count_parameters(model), "ref_local": local_numel(ref), "ref_full": count_parameters(ref),
      "peak_mb": (max(peak[0], rss_anon_kb()) - base) / 1024}), flush=True)
'''


def test_zero3_loads_policy_and_reference_partitioned(tmp_path):
    from videor1.model.tiny import build_tiny

    wide = build_tiny(tmp_path / "wide", hidden_size=1024, num_layers=4, seed=0)
    proc = launch("zero3", str(wide), [], tmp_path, script_text=PROBE, extra_env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    rows = sorted((json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
                   if line.startswith("PROBE ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1], proc.stdout[-2000:]
    full = rows[0]["full"]
    model_mb = full * 4 / 2**20                  # fp32
    for r in rows:
        print(r)
        assert r["full"] == r["ref_full"] == full > 40_000_000
        for local in (r["local"], r["ref_local"]):
            assert abs(local - full / 2) <= 0.01 * full, (local, full)      # half, up to partition padding
    assert sum(r["local"] for r in rows) >= full
    # a full load of both models on every process costs 2 x model_mb (measured under DDP: 325 MB for 318 MiB);
    # partitioned: half of each plus the largest module built whole inside zero.Init (measured 180 MB)
    for r in rows:
        assert r["peak_mb"] < 0.7 * 2 * model_mb, (r["rank"], r["peak_mb"], model_mb)
