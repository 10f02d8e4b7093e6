"""What SFT and RL share: `common` (seeding / RNG, distributed helpers, precision, records, vision freezing,
parameter groups), `checkpoint` (atomic checkpoints, resume resolution, the final save) and `metrics`
(metrics.jsonl + TensorBoard, curves, the skip log)."""
