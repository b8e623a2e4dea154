"""Evaluation: reports of runs, checkpoints and velocity stores on a dataset (metrics: :mod:`hpcinv.metrics`)."""
