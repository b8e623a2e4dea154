"""Shared helpers for benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys

import torch


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(result: dict) -> None:
    json.dump({"machine": machine(), **result}, sys.stdout, indent=1)
    sys.stdout.write("\n")
