import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
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
    """Run the real console entry point in a fresh process (``env``: extra environment variables): for
    what needs a process of its own (signals, Ray started by the command, what is imported at start)."""
    return subprocess.run(
        [sys.executable, "-m", "hpcinv.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Ran:
    """What :func:`hpcinv` gives back: like a finished process."""

    returncode: int
    stdout: str
    stderr: str


def hpcinv(*args: str) -> Ran:
    """Run ``hpcinv ARGS`` in this process, through the same ``main()`` as the console entry point,
    without starting an interpreter (seconds saved per call): for commands that start no Ray."""
    import logging

    from hpcinv.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = signal.getsignal(signal.SIGTERM)
    console = logging.StreamHandler(err)  # what the command logs reaches its stderr, as on a console
    console.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(console)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse: --help, --version, a usage error
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        root.removeHandler(console)
        root.setLevel(level)
    return Ran(code, out.getvalue(), err.getvalue())


def generate_small(out: Path, *overrides: str) -> Path:
    """A small dataset of configs/tiny.yaml (with ``overrides``), generated in this process."""
    from hpcinv.stages import Execution
    from hpcinv.stages.generate import run
    from hpcinv.stages.requests import GenerateRequest

    run(GenerateRequest(config=tiny_config(*overrides), out=str(out)), Execution(in_process=True, progress=False))
    return out


def one_error_line(proc) -> str:
    """The single ``hpcinv: error:`` line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "hpcinv: error: " in ln]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0][errors[0].index("hpcinv: error: ") :]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden ones too) and every folder, by relative path: equal
    before and after means the folder was left byte-identical, nothing added or removed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def train_in_process(run: Path, dataset: Path, *overrides: str) -> dict:
    """tiny_train.yaml trained as one rank in this process (no Ray), W&B disabled unless overridden."""
    from hpcinv.config import TrainConfig, load_config
    from hpcinv.stages.train import train

    cfg = load_config(
        TrainConfig,
        CONFIGS / "tiny_train.yaml",
        [f"data.train={dataset}", "scaling.num_workers=1", "tracking.mode=disabled", *overrides],
    )
    return train(cfg, run, in_process=True)


@pytest.fixture(scope="session", autouse=True)
def sigint_handled():
    """Ctrl-C handled as in a terminal, in this process and the commands it starts: a shell without job
    control (``cmd &`` in a script, some CI runners) starts pytest with SIGINT ignored, which every child
    would inherit, and the tests that interrupt a command with SIGINT would see it run on."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """configs/tiny.yaml: 24 samples in 3 shards, generated in this process."""
    return generate_small(tmp_path_factory.mktemp("tiny") / "ds")


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """One epoch of tiny_train.yaml on the tiny dataset, one rank in this process."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    train_in_process(run, tiny_dataset, "train.epochs=1")
    return run


@pytest.fixture(scope="session")
def tiny_predictions(tiny_run, tiny_dataset, tmp_path_factory) -> Path:
    """The tiny run's predictions for every sample of the tiny dataset (a velocity store)."""
    from hpcinv.stages import Execution
    from hpcinv.stages.predict import run
    from hpcinv.stages.requests import PredictRequest

    out = tmp_path_factory.mktemp("tiny_predictions") / "pred"
    run(PredictRequest(run=str(tiny_run), data=str(tiny_dataset), out=str(out)), Execution(progress=False))
    return out


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the in-process tests of the actor paths of a module, shut down
    after it (the rest of the session runs without Ray in this process: reader processes fork from it)."""
    import ray

    from hpcinv.distributed.session import init_ray

    init_ray("local", num_cpus=2)
    yield
    ray.shutdown()
