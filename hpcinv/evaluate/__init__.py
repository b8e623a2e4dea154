"""Evaluation: velocity metrics in m/s (this package), figures and reports."""
