"""hpcinv: deep-learning seismic velocity-model building at HPC scale."""

__version__ = "0.1.0"
