# Developer shortcuts; each mirrors a step of .ci/run (which is what CI runs).
PY := .venv/bin/python

.PHONY: setup lint format test fast gpu bench-gpu

setup:            ## the environment (.venv): torch 2.13.0 first, then hpcinv with its test extra
	bash scripts/setup.sh

lint: setup       ## what CI checks before the tests: lint, formatting, types
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: setup     ## rewrite the files the way lint wants them formatted
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

test: setup       ## the whole suite, with the local SLURM cluster (as root), as CI runs it
	bash scripts/test.sh

fast: setup       ## the fast tier: no CLI runs on Ray, no SLURM (about 80 s here)
	$(PY) -m pytest -m "not slow and not slurm"

gpu: setup        ## the GPU tier (skips where no CUDA GPU is visible)
	$(PY) -m pytest -m gpu

bench-gpu: setup  ## one JSON document of GPU figures (docs/GPU.md)
	$(PY) benchmarks/gpu.py
