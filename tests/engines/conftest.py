"""Real-engine runs: 2 processes under `accelerate launch` with the repo's own configs/accelerate/*.yaml, on
gloo (DeepSpeed's CPU accelerator / torch FSDP2 on CPU). Marked `engines`; skipped when deepspeed is not
installed (`pip install -c constraints.txt '.[deepspeed]'` with DS_BUILD_OPS=0), run by `make test-engines`.

The process-group timeout (VIDEOR1_DIST_TIMEOUT_S) and the subprocess timeout are short, so that a
collective-count mismatch fails in about a minute instead of hanging for gloo's 30 minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engines_common import copy_media


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/engines/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.engines)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _needs_deepspeed():
    """Skip without deepspeed, except under `make test-engines` (VIDEOR1_REQUIRE_ENGINES=1), where CI must run them."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        if os.environ.get("VIDEOR1_REQUIRE_ENGINES") == "1":
            pytest.fail("deepspeed is not installed: DS_BUILD_OPS=0 pip install -c constraints.txt -e '.[test]'")
        pytest.skip("the engine tests need deepspeed (make test-engines installs it)")


@pytest.fixture(scope="module")
def sp_data(tmp_path_factory, synth_dir) -> tuple[Path, Path]:
    """Three records (video, image, video) with their media under one root."""
    tmp = tmp_path_factory.mktemp("sp")
    rows = [json.loads(x) for x in (synth_dir / "rl.jsonl").read_text().splitlines()]
    videos = [r for r in rows if r["data_type"] == "video"]
    picked = [videos[0], next(r for r in rows if r["data_type"] == "image"), videos[1]]
    cot = [json.loads(x) for x in (synth_dir / "cot.jsonl").read_text().splitlines()]
    cot = [next(r for r in cot if r["data_type"] == kind) for kind in ("video", "image")]   # SFT samples
    copy_media(picked + cot, synth_dir, tmp)
    data = tmp / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in picked))
    (tmp / "cot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cot))
    return tmp, data
