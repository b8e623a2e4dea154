"""Run every benchmark and print one JSON document (ratios are measured side by side inside each).

    python benchmarks/run_all.py [--quick]

--quick shrinks each benchmark (fewer samples, a quarter-width network) for a smoke run; the
figures quoted in docs/SCALING.md come from the full settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result.pop("machine", None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    emit(
        {
            "generation": run("generation.py", *(["--samples", "4", "--repeats", "1"] if quick else [])),
            "loader": run("loader.py", "--samples", "16" if quick else "48"),
            "training": run("training.py", *(["--width", "16", "--steps", "1"] if quick else [])),
            "checkpoint": run("checkpoint.py"),
        }
    )


if __name__ == "__main__":
    main()
