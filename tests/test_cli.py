"""The CLI end to end: generation and its resume after SIGKILL in real processes, and every bad input
(through the same ``main()``, in this process)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpcinv.store import read_manifest, verify_dataset
from tests.conftest import CLI, CONFIGS, ROOT, hpcinv, one_error_line, run_cli

TINY = str(CONFIGS / "tiny.yaml")


def _snapshot(folder):
    """Every file's bytes, but the lock file's (it names its latest holder)."""
    return {
        p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.mark.slow
def test_generate_then_rerun_skips_everything(tiny_dataset):
    before = _snapshot(tiny_dataset)
    proc = run_cli("generate", TINY, "--out", str(tiny_dataset), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["computed_shards"] == 0 and summary["skipped_shards"] == 3
    assert {k: v for k, v in _snapshot(tiny_dataset).items() if k.name != "manifest.json"} == {
        k: v for k, v in before.items() if k.name != "manifest.json"
    }
    proc = run_cli("verify", str(tiny_dataset))
    assert proc.returncode == 0 and "OK: 3 shards / 24 samples" in proc.stdout


@pytest.mark.slow
def test_resume_after_driver_sigkill_computes_only_missing_shards(tmp_path):
    out = tmp_path / "ds"
    args = [
        *CLI,
        "generate",
        TINY,
        "--out",
        str(out),
        "--quiet",
        "--in-process",
        "dataset.n_samples=48",
        "dataset.shard_size=4",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.05)
        with contextlib.suppress(Exception):
            done = len(read_manifest(out)["shards"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(read_manifest(out)["shards"])
    assert 3 <= done < 12, "the driver should have been killed mid-run"
    on_disk = len(list((out / "shards").glob("shard-*.h5")))
    rerun = hpcinv(*args[3:])
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped_shards"] == on_disk  # complete files not yet in the manifest are adopted
    assert summary["computed_shards"] == 12 - on_disk
    report = verify_dataset(out)
    assert report.ok and report.samples_ok == 48
    assert not list((out / "shards").glob(".shard-*"))


@pytest.mark.parametrize(
    "args, expect",
    [
        (["generate", "configs/missing.yaml"], "config file 'configs/missing.yaml' does not exist"),
        (["generate", TINY, "survey.n_shot=4"], "unknown key 'survey.n_shot'; valid keys here: n_shots"),
        (["generate", TINY, "dataset.shard_size=big"], "dataset.shard_size: Input should be a valid integer"),
        (["generate", TINY, "survey.f0_hz=30.0"], "points per wavelength"),
        (["generate", TINY, "survey.source_x_m=[-100.0]"], "outside the grid"),
        (["generate", TINY, "survey.nt=100"], "use survey.nt >="),
        (["generate", TINY, "modelling.max_vel_mps=3000.0"], "set modelling.max_vel_mps >= 4500"),
        (["generate", TINY, "velocity.source=npz", "velocity.path=/nonexistent/models.npz"], "does not exist"),
        (["generate", "configs"], "config file 'configs' is a folder; give a YAML file"),
        (["generate", TINY, "survey.nt=400", "foo"], "'foo' is neither an option of 'hpcinv generate' nor an override"),
        (["generate", TINY, "modelling.max_vel_mps=.inf"], "modelling.max_vel_mps: Input should be a finite number"),
        (["generate", TINY, "survey.peak_time_s=.inf"], "survey.peak_time_s: Input should be a finite number"),
        (["generate", TINY, "grid.dx_m=.inf"], "grid.dx_m: Input should be a finite number"),
        (["generate", TINY, "--workers", "-2"], "argument --workers: '-2' is not a whole number >= 1"),
        (["generate", TINY, "--workers", "0"], "argument --workers: '0' is not a whole number >= 1"),
        (
            ["generate", TINY, "survey.downsample=1", "survey.dt_s=0.05"],
            "use survey.dt_s <= 0.025 (with survey.nt raised to keep the record length), or survey.f0_hz <= 4",
        ),
        (["generate", TINY, "survey.downsample=20"], "use survey.downsample <= 12, or survey.dt_s <= 0.00125"),
        (
            ["generate", TINY, "velocity.synthetic.salt_velocity_mps=1e30", "modelling.max_vel_mps=1e30"],
            "models span 2000 .. 1e+30 m/s, outside any rock's P-wave velocity",
        ),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, expect, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    proc = hpcinv(*args[:2], "--out", str(out), *args[2:])
    line = one_error_line(proc)
    assert expect in line, line
    assert not out.exists()


def test_version():
    proc = hpcinv("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == "hpcinv 0.1.0"


def test_verify_of_a_missing_or_non_dataset_folder(tmp_path, tiny_predictions):
    proc = hpcinv("verify", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and f"dataset folder '{tmp_path / 'nowhere'}' does not exist" in proc.stdout
    proc = hpcinv("verify", tiny_predictions)
    assert proc.returncode == 1 and "is a velocity store of network predictions made by `hpcinv predict`" in proc.stdout


def test_bad_collections_from_cli(tmp_path):
    bad = np.full((4, 48, 64), 2500.0, dtype=np.float32)
    bad[1, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", v=bad)
    (tmp_path / "broken.mat").write_bytes(b"\x00garbage")
    for path, expect in ((tmp_path / "nan.npz", "model 1 has velocity nan"), (tmp_path / "broken.mat", "broken.mat")):
        source = "npz" if path.suffix == ".npz" else "fcnvmb"
        proc = hpcinv(
            "generate",
            TINY,
            "--out",
            str(tmp_path / "o"),
            f"velocity.source={source}",
            f"velocity.path={path}",
            "dataset.n_samples=null",
        )
        assert expect in one_error_line(proc)
        assert not (tmp_path / "o").exists()


def test_different_config_on_existing_dataset_is_refused_without_damage(tiny_dataset):
    before = _snapshot(tiny_dataset)
    proc = hpcinv("generate", TINY, "--out", str(tiny_dataset), "survey.f0_hz=7.0")
    assert "holds a dataset made with a different config" in one_error_line(proc)
    assert _snapshot(tiny_dataset) == before


def test_non_dataset_folders_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for restart in ([], ["--restart"]):
        proc = hpcinv("generate", TINY, "--out", str(tmp_path), "--in-process", *restart)
        assert "is a non-empty folder that hpcinv did not make" in one_error_line(proc)
        assert (tmp_path / "notes.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
    proc = hpcinv("verify", str(tmp_path))
    assert proc.returncode == 1 and "manifest.json is missing" in proc.stdout


def test_restart_discards_other_config(tmp_path):
    out = tmp_path / "ds"
    assert hpcinv("generate", TINY, "--out", out, "--quiet", "--in-process", "dataset.n_samples=4").returncode == 0
    proc = hpcinv("generate", TINY, "--out", out, "--quiet", "--in-process", "--restart", "dataset.n_samples=8")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["computed_shards"] == 1 and verify_dataset(out).samples_ok == 8


def test_an_internal_error_is_one_line_with_its_traceback_kept(monkeypatch, tmp_path, capsys):
    """A bug is not reported like bad input: exit 1, one line naming the saved traceback; -v prints it."""
    from hpcinv import cli

    def broken(args):
        raise KeyError("an internal slip")

    monkeypatch.setattr(cli, "_cmd_verify", broken)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # leave pytest's handlers alone
    monkeypatch.setenv("HPCINV_LOG_DIR", str(tmp_path))
    assert cli.main(["verify", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hpcinv: internal error: KeyError: 'an internal slip' (not a problem with your input")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    saved = next(tmp_path.glob("hpcinv-*.log")).read_text()
    assert "Traceback" in saved and "in broken" in saved
    assert cli.main(["-v", "verify", "somewhere"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_user_error_shows_its_cause_with_v(monkeypatch, tmp_path, capsys):
    from hpcinv import cli

    monkeypatch.setattr(signal, "signal", lambda *a: None)
    bad = tmp_path / "models.npz"
    bad.write_bytes(b"not an npz file")
    args = [
        "generate",
        str(CONFIGS / "tiny.yaml"),
        "--out",
        str(tmp_path / "ds"),
        "velocity.source=npz",
        f"velocity.path={bad}",
    ]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcinv: error: cannot read velocity collection") and "Traceback" not in err
    assert cli.main(["-v", *args]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["train", str(CONFIGS / "tiny_train.yaml"), "train.epochs=zero"],
        ["generate", str(CONFIGS / "tiny.yaml"), "grid.nz=zero"],
        ["refine", "--data", "d", "--init", "smooth", "refine.lr_mps=zero"],
    ],
)
def test_a_bad_config_is_reported_before_torch_and_ray_load(command, tmp_path):
    code = (
        "import sys\nfrom hpcinv import cli\n"
        f"rc = cli.main({[*command, '--out', str(tmp_path / 'out')]!r})\n"
        "print(rc, 'torch' in sys.modules, 'ray' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
    assert "Input should be a valid" in proc.stderr and not (tmp_path / "out").exists()


def test_help_is_plain_text_and_points_to_the_config_keys():
    proc = hpcinv("--help")
    assert proc.returncode == 0 and "``" not in proc.stdout
    assert "hpcinv config show PRESET" in proc.stdout and "docs/" in proc.stdout
