"""Tasks: data sets, models, seed-batched replicas and the task registry."""
