"""scripts/setup.sh installs the torch the project is tested with, CPU or a named CUDA variant, before
anything else (checked with a stand-in interpreter that records what it is asked to do)."""

import shutil
import subprocess

from tests.conftest import ROOT

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/calls.log"
[ "$1" = "-c" ] && [ "$2" = "import torch" ] && exit 1
exit 0
"""


def _setup(tmp_path, **env) -> list[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(FAKE_PYTHON)
    (venv / "python").chmod(0o755)
    proc = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return (venv / "calls.log").read_text().splitlines()


def test_setup_installs_the_tested_torch_first(tmp_path):
    calls = _setup(tmp_path)
    torch_call = calls.index("-m pip install -q torch==2.13.0")
    assert torch_call < calls.index("-m pip install -q -e .[test]")


def test_setup_takes_a_cuda_variant(tmp_path):
    calls = _setup(tmp_path, HPCINV_TORCH="cu126")
    assert "-m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" in calls


def test_the_declared_torch_range_admits_the_installed_version():
    import re
    import tomllib

    from packaging.requirements import Requirement

    pinned = re.search(r"^TORCH_VERSION=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M).group(1)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert pinned in torch_req.specifier and "2.13.0" in torch_req.specifier
