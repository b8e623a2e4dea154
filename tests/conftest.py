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

# Tests on the public reference data skip where it is absent -- unless HPCINV_REQUIRE_DATA=1, which makes
# them run (and fail on the missing files) on a machine that is meant to have it.
_MISSING = [p.name for p in (FCNVMB_NPZ, OPENFWI_NPZ, VIKING_SEGY) if not p.exists()]
needs_shared = pytest.mark.skipif(
    bool(_MISSING) and os.environ.get("HPCINV_REQUIRE_DATA") != "1",
    reason=f"reference data missing from {SHARED_DATA}: {', '.join(_MISSING)}",
)


def pytest_collection_modifyitems(items):
    """A test that needs a trained run (it trains on Ray first) belongs to the slow tier."""
    for item in items:
        if "tiny_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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


CLI = (sys.executable, "-m", "hpcinv.cli")  # the console entry point in a fresh process


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh process (``env``: extra environment variables)."""
    return subprocess.run(
        [sys.executable, "-m", "hpcinv.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def generate_small(out: Path, *overrides: str) -> Path:
    """A small dataset of configs/tiny.yaml (with ``overrides``) made in process through the CLI."""
    proc = run_cli("generate", str(CONFIGS / "tiny.yaml"), "--out", str(out), "--in-process", "--quiet", *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``hpcinv: error:`` line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "hpcinv: error: " in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0][errors[0].index("hpcinv: error: ") :]


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """One epoch of tiny_train.yaml on the tiny dataset."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    proc = run_cli(
        "train",
        str(CONFIGS / "tiny_train.yaml"),
        "--out",
        str(run),
        f"data.train={tiny_dataset}",
        "train.epochs=1",
        "tracking.mode=disabled",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "ds"
    proc = run_cli("generate", str(CONFIGS / "tiny.yaml"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for every in-process test of the actor paths: started once."""
    import ray

    from hpcinv.actors import init_ray

    init_ray("local", num_cpus=2)
    yield
    ray.shutdown()
