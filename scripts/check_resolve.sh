#!/usr/bin/env bash
# Do the optional GPU extras resolve against pyproject.toml's ranges? `pip install --dry-run` of `.[vllm]`,
# `.[deepspeed]` and `.[gdn]`, ignoring what is installed, in parallel. causal-conv1d (in `.[gdn]`) is an sdist
# whose metadata build imports torch: it is prepared with the installed torch (no build isolation) and its CUDA
# build skipped (CAUSAL_CONV1D_SKIP_CUDA_BUILD), so no torch is downloaded for it. Installs nothing: with PyPI's metadata files (PEP 658)
# pip reads only package metadata (measured: ~200 packages, no wheel downloaded, about 2.5 min per extra here).
# Writes pip's resolution reports to ${OUT:-/tmp/videor1-resolve}/<extra>.json and prints the key versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-"python -m pip"}
OUT=${OUT:-/tmp/videor1-resolve}
mkdir -p "$OUT"
pids=()
for extra in vllm deepspeed gdn; do
  flags=()
  [ "$extra" = gdn ] && flags=(--no-build-isolation)
  ( CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE $PIP install --dry-run --ignore-installed --quiet --disable-pip-version-check \
      "${flags[@]}" --report "$OUT/$extra.json" ".[$extra]" >"$OUT/$extra.log" 2>&1 \
    || { echo "resolution of .[$extra] FAILED:"; grep -v '^WARNING: Location' "$OUT/$extra.log" | tail -30; exit 1; } ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" = 0 ] || exit 1
python3 - "$OUT" <<'PY'
import json, sys
keys = ("vllm", "deepspeed", "flash-linear-attention", "causal-conv1d", "torch", "torchvision", "transformers",
        "accelerate", "tokenizers")
for extra in ("vllm", "deepspeed", "gdn"):
    report = json.load(open(f"{sys.argv[1]}/{extra}.json"))
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    print(f".[{extra}] resolves ({len(got)} packages):", ", ".join(f"{k} {got[k]}" for k in keys if k in got))
PY
