"""Runs: the run contract, checkpoints, training, and runs from elsewhere."""
