"""Parallelism beyond data parallelism: sequence parallelism on DeepSpeed Ulysses (`sequence`)."""
