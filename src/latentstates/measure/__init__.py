"""Measure: weight metrics, the Hessian's top eigenvalue, per-checkpoint extraction."""
