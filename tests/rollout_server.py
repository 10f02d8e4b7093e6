"""`videor1 serve-rollouts` in its own process, for the tests: its output goes to a log file, never to a pipe
(a server whose pipe nobody reads blocks at 64 KiB of output, which once looked like a training hang), and the
URL and token are read from the log and the token file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    token: str
    log: Path
    token_file: Path

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `timeout_s`; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def start_server(model_dir: Path, tmp: Path, *args: str, engine: str = "hf", env: dict | None = None,
                 command: Sequence[str] | None = None, timeout_s: float = 300.0) -> Server:
    """Start `serve-rollouts --model model_dir --engine engine --port 0 *args` (through `command`, default the
    venv's `videor1`), writing its log and token file under `tmp`; wait for its "serving rollouts on" line."""
    index = len(list(tmp.glob("rollout-server-*.log")))
    log, token_file = tmp / f"rollout-server-{index}.log", tmp / f"rollout-server-{index}.token"
    base = list(command) if command else [str(Path(sys.executable).parent / "videor1")]
    with open(log, "w") as sink:
        proc = subprocess.Popen([*base, "serve-rollouts", "--model", str(model_dir), "--engine", engine, "--port", "0",
                                 "--token-file", str(token_file), *args], stdout=sink, stderr=subprocess.STDOUT,
                                text=True, env=env if env is not None else dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("serving rollouts on")]
        if lines:
            return Server(proc, lines[0].split()[-1], token_file.read_text().strip(), log, token_file)
        time.sleep(0.2)
    Server(proc, "", "", log, token_file).stop(5)
    raise AssertionError(f"serve-rollouts did not start (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
