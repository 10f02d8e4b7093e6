"""Generation engines: HF `generate`, vLLM (optional extra) and a remote rollout server, behind one protocol."""
