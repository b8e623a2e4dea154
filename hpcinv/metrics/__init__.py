"""How good a velocity model is, in m/s (:mod:`.scores`), and how it looks (:mod:`.figures`).

Below both training (validation metrics, W&B figures) and evaluation (reports), so neither imports
the other for them. Figures import matplotlib, so they are imported from :mod:`.figures` where used.
"""

from hpcinv.metrics.scores import METRICS, spread, velocity_metrics

__all__ = ["METRICS", "spread", "velocity_metrics"]
