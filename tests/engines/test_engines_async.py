"""One-step off-policy rollouts (`async_rollouts: true`) from a 2-process ZeRO-3 trainer (the engine whose weight
sync has the most collectives) through `serve-rollouts --engine hf --ranks 2`, weights over the process group:
the prefetch thread (HTTP only), the per-step barrier and the ZeRO-3 gathers of the weight sync keep both
processes' collectives in step, also at a step where one process has no prompt (it sends no rollout request and
still joins every barrier and gather)."""

from __future__ import annotations

from engines_common import launch, metrics_of
from rollout_server import start_server


def test_async_rl_two_processes_through_the_server(tiny_model_dir, synth_dir, tmp_path):
    """T-GRPO, 3 steps: step 1 is generated on the spot (staleness 0), steps 2 and 3 were requested during the
    step before (staleness 1); rank 1's step-2 prompts are all bad (no prompt, no request made ahead); the IS
    statistics are logged; the server ends at version 3 (the policy of the start of step 3)."""
    from test_engines_rl import _data, _overrides

    from videor1.generation.remote import RemoteEngine

    data = _data(tmp_path, synth_dir, with_bad=True)
    out = tmp_path / "run"
    server = start_server(tiny_model_dir, tmp_path, "--ranks", "2")
    try:
        launch("zero3", "rl", _overrides(tiny_model_dir, data, tmp_path, out) + [
            "save_steps=0", "async_rollouts=true", "rollout_engine=remote", f"remote.token_file={server.token_file}",
            f"remote.url={server.url}", "remote.bucket_bytes=65536", "remote.timeout_s=60"], tmp_path)
        metrics = metrics_of(out)
        assert [m["step"] for m in metrics] == [1, 2, 3] and [m["prompts"] for m in metrics] == [4, 2, 4]
        assert [m["rollout_staleness"] for m in metrics] == [0.0, 1.0, 1.0]
        assert all(m["is_ratio_max"] >= m["is_ratio_mean"] > 0 and 0 <= m["is_truncated_fraction"] <= 1
                   for m in metrics)
        assert all(m["completion_length"] > 0 for m in metrics)
        state = RemoteEngine(server.url, token=server.token).health()
        assert state["version"] == 3 and state["run"] == str(out.resolve())
    finally:
        server.stop()
