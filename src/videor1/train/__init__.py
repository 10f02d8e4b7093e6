"""What SFT and RL share: precision, records, resume, parameter groups, freezing, skip log, checkpoints, metrics."""
