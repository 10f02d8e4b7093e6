#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels scripts/gpu_smoke.py needs on the GPU check machine, which has
# Python 3.12 x86_64, torch 2.11 + transformers 5.17 + accelerate + peft, no network, no PyAV, no DeepSpeed:
#   - PyAV (binary wheel for cp312 manylinux x86_64);
#   - DeepSpeed built here as a pure-Python wheel (DS_BUILD_OPS=0: no CUDA op is compiled now; ops it needs
#     are JIT-built there or not used) and its small pure deps not on that machine;
# then prints the total, which must stay under 56 MiB (the repository + carried files travel in 64 MiB).
# On the machine: pip install --no-index --no-deps .whl/*.whl (or PYTHONPATH), then
#   PYTHONPATH=src python scripts/gpu_smoke.py --require-gpu --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=${PYTHON:-$(test -x .venv/bin/python && echo "$PWD/.venv/bin/python" || echo python3)}  # DeepSpeed's setup.py imports torch
mkdir -p "$DEST"
grep -qx '/.whl/' .gitignore 2>/dev/null || echo '/.whl/' >> .gitignore
target=(--only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.12
        --implementation cp --abi cp312 --abi abi3 --abi none)
# PyAV: the binary wheel carries its own FFmpeg
$PY -m pip download --quiet --no-deps "${target[@]}" -d "$DEST" "av>=14,<19"
# DeepSpeed's small pure-Python dependencies that a torch image usually lacks (torch, numpy, packaging,
# psutil, pydantic, tqdm are there)
$PY -m pip download --quiet --no-deps "${target[@]}" -d "$DEST" hjson py-cpuinfo msgpack ninja einops
# DeepSpeed as a pure-Python wheel
if ! ls "$DEST"/deepspeed-*.whl >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  $PY -m pip download --quiet --no-deps --no-binary deepspeed -d "$tmp" "deepspeed==0.19.8"
  tar xzf "$tmp"/deepspeed-*.tar.gz -C "$tmp"
  (cd "$tmp"/deepspeed-0.19.8 && DS_BUILD_OPS=0 DS_SKIP_CUDA_CHECK=1 $PY -m pip wheel --quiet --no-deps \
      --no-build-isolation -w "$OLDPWD/$DEST" .)
  rm -rf "$tmp"
fi
ls -la "$DEST"
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "total: $total bytes ($((total / 1048576)) MiB; must stay under 56 MiB)"
[ "$total" -lt $((56 * 1048576)) ] || { echo "too large for the GPU machine's 64 MiB transfer"; exit 1; }
