"""Training: one loop, stages, losses, checkpoints, metrics."""
