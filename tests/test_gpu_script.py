"""benchmarks/gpu.py is only useful if it runs the first time a GPU is lent: its code paths are checked
here on the CPU at toy sizes, and without a GPU it must say so and exit 0."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = str(ROOT / "benchmarks" / "gpu.py")


def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the gpu tier runs the real thing")
def test_without_a_gpu_it_says_so_and_exits_0():
    doc = _run()
    assert doc["benchmark"] == "gpu" and "needs a CUDA GPU" in doc["skipped"]


@pytest.mark.slow
def test_every_section_runs_on_the_cpu_at_toy_sizes():
    doc = _run("--smoke-on-cpu")
    sections = ("card", "deepwave", "generate", "train", "loader")
    assert not {name: doc[name]["error"] for name in sections if "error" in doc[name]}
    assert doc["deepwave"]["updates_per_s"] > 0 and doc["generate"]["models_per_call_4"]["generate_samples_per_s"] > 0
    assert set(doc["train"]["results"]) == {
        f"{p}/{m}" for p in ("fp32", "bf16") for m in ("none", "blocks", "units", "nested")
    }
    assert all(row["largest_batch"] == 2 for row in doc["train"]["results"].values())
    assert doc["loader"]["disk/workers4"]["samples_per_s"] > 0 and doc["loader"]["cache/pinned"]["place"] == "host"
