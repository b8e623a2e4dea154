import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hpcinv.config import DataConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_DATA = Path(os.environ.get("HPCINV_SHARED_DATA", ROOT.parent / "shared" / "data"))
FCNVMB_NPZ = SHARED_DATA / "fcnvmb_simulated_salt_vmodels.npz"
OPENFWI_NPZ = SHARED_DATA / "openfwi_vmodel_samples.npz"
VIKING_SEGY = SHARED_DATA / "viking_small.segy"

needs_shared = pytest.mark.skipif(not FCNVMB_NPZ.exists(), reason="reference data ../shared/data not present")


def tiny_config(*overrides: str) -> DataConfig:
    return load_config(DataConfig, CONFIGS / "tiny.yaml", list(overrides))


def descendants(pid: int, name: str = "") -> list[psutil.Process]:
    """Processes started (directly or not) by ``pid`` whose title starts with ``name`` — this test's
    own Ray processes, never another run's on the same machine."""
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if (p.cmdline() or [""])[0].startswith(name):
                found.append(p)
        except psutil.Error:
            pass
    return found


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "hpcinv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "ds"
    proc = run_cli("generate", str(CONFIGS / "tiny.yaml"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out
