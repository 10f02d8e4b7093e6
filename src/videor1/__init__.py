"""videor1: Video-R1 (GRPO / T-GRPO for video reasoning with Qwen2.5-VL), SFT cold start and evaluation."""

__version__ = "0.1.0"
