"""Thin readers of the pipeline: annotate (CoT by rejection sampling), infer, demo."""
