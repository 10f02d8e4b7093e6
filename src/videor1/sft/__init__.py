"""SFT cold start: config, data (CoT records -> masked token batches), trainer, LoRA."""
