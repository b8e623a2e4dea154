"""Every folder knows what it is: no command destroys or misreads a folder of another kind.

The cases of a hostile pass over the commands, re-run as written: each refusal is one line, exit 2,
and leaves every folder involved byte-identical (a digest of each before and after); the legitimate
uses give their documented result. D is a dataset (`hpcinv generate`), R a run (`hpcinv train`), P the
run's predictions for D (`hpcinv predict`), F a refine store from P (`hpcinv refine`).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hpcinv.config import RefineSection
from hpcinv.errors import HpcinvError
from hpcinv.folders import RECORD, claim, distinct, inspect
from hpcinv.refine.fwi import refine_model
from hpcinv.store import ShardedDataset, folder_lock, load_dataset_config, read_manifest, verify_dataset
from hpcinv.store.lock import LOCK
from hpcinv.store.velocities import VelocityStore
from launch import refine as launch_refine
from tests.conftest import CLI, CONFIGS, ROOT, hpcinv, one_error_line, run_cli, tree_digest

TINY = str(CONFIGS / "tiny.yaml")
TRAIN = str(CONFIGS / "tiny_train.yaml")
FAST = ["refine.bands_hz=[6.0, null]", "refine.iterations_per_band=[2, 2]", "refine.patience=0"]


@pytest.fixture(scope="module")
def refined(tiny_dataset, tiny_predictions, tmp_path_factory):
    """F: refined models of the first 2 samples of D, from P."""
    out = tmp_path_factory.mktemp("folders") / "F"
    proc = hpcinv(
        "refine", "--data", tiny_dataset, "--init", tiny_predictions, "--out", out, "--samples", "2",
        "--in-process", "--quiet", "--figures", "0", *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def recording(tiny_dataset, tmp_path_factory):
    """Recorded gathers: the first 4 samples of D as an .npy, and a second recording differing in one value."""
    folder = tmp_path_factory.mktemp("recording")
    ds = ShardedDataset(tiny_dataset)
    gathers = np.stack([ds.read(i)[0] for i in range(4)]).astype(np.float32)
    np.save(folder / "a.npy", gathers)
    other = gathers.copy()
    other[0, 0, 50, 10] += 1e-3
    np.save(folder / "b.npy", other)
    return folder


def refused(digests: dict, *args) -> str:
    """Run ``hpcinv ARGS``: it must be refused with one line and leave every folder of ``digests``
    byte-identical. Returns the line."""
    before = {folder: tree_digest(folder) for folder in digests}
    line = one_error_line(hpcinv(*args))
    for folder, digest in before.items():
        assert tree_digest(folder) == digest, (args, folder)
    return line


def test_every_folder_records_its_kind(tiny_dataset, tiny_run, tiny_predictions, refined, recording, tmp_path):
    imported = tmp_path / "I"
    assert hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", imported).returncode == 0
    report = tmp_path / "E"
    proc = hpcinv(
        "evaluate", tiny_predictions, "--data", tiny_dataset, "--out", report, "--figures", "0", "--misfit-samples", "0"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = {
        tiny_dataset: "dataset",
        imported: "imported",
        tiny_run: "run",
        tiny_predictions: "predictions",
        refined: "refined",
        refined / "start": None,  # (refine from a store makes no start of its own)
        report: "report",
    }
    for folder, kind in kinds.items():
        if kind is None:
            assert not folder.exists()
            continue
        record = json.loads((folder / RECORD).read_text())
        assert record["kind"] == kind and inspect(folder).recorded, folder
        assert record["made_by"].startswith("hpcinv ")
    assert json.loads((tiny_dataset / RECORD).read_text())["identity"] == read_manifest(tiny_dataset)["config_hash"]
    assert json.loads((imported / RECORD).read_text())["identity"] == read_manifest(imported)["identity"]


def test_folders_made_before_records_are_recognised_by_their_contents(
    tiny_dataset, tiny_run, tiny_predictions, refined, recording, tmp_path
):
    for folder, kind in ((tiny_dataset, "dataset"), (tiny_run, "run"), (tiny_predictions, "predictions")):
        old = shutil.copytree(folder, tmp_path / kind)
        (old / RECORD).unlink()
        found = inspect(old)
        assert found.kind == kind and not found.recorded
        # a damaged manifest does not hide what the folder is
        if (old / "manifest.json").exists():
            (old / "manifest.json").write_text("{garbage")
            assert inspect(old).kind == kind
    old = shutil.copytree(refined, tmp_path / "refined")
    (old / RECORD).unlink()
    (old / "manifest.json").write_text("[]")
    assert inspect(old).kind == "refined"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / LOCK).touch()
    assert inspect(tmp_path / "empty").kind == "empty"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert inspect(tmp_path / "mine").kind == "foreign"
    # an old imported dataset whose manifest is damaged: its shards hold gathers without velocities
    imported = tmp_path / "imported"
    assert (
        hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", imported, "--quiet").returncode == 0
    )
    (imported / RECORD).unlink()
    (imported / "manifest.json").write_text("{garbage")
    assert inspect(imported).kind == "imported"
    assert "is a dataset of imported gathers" in one_error_line(
        hpcinv("generate", TINY, "--out", imported, "--restart", "--in-process")
    )
    # a quickstart stopped after its dataset, a run stopped before its first event
    shutil.copytree(tiny_dataset, tmp_path / "qs" / "dataset")
    assert inspect(tmp_path / "qs").kind == "quickstart"
    (tmp_path / "qs" / "dataset" / RECORD).unlink()  # made before records
    assert inspect(tmp_path / "qs").kind == "quickstart"
    (tmp_path / "run0").mkdir()
    shutil.copy(tiny_run / "config.yaml", tmp_path / "run0" / "config.yaml")
    assert inspect(tmp_path / "run0").kind == "run"
    # a folder that holds what a report holds, and more, is not taken for one: never replaced
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "metrics.json").write_text("{}")
    (tmp_path / "paper" / "thesis.tex").write_text("mine")
    assert inspect(tmp_path / "paper").kind == "foreign"
    line = refused(
        {tmp_path / "paper": 1}, "evaluate", tiny_predictions, "--data", tiny_dataset, "--out", tmp_path / "paper"
    )
    assert "is a non-empty folder that hpcinv did not make" in line
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RECORD).write_text("{}")
    with pytest.raises(HpcinvError, match="hpcinv.json' is damaged"):
        claim(tmp_path / "bad", "dataset")


# ------------------------------------------------------------------ 1-3: writes into another kind


def test_case1_generate_into_a_store_is_refused(tiny_predictions, refined, tmp_path):
    for store in (tiny_predictions, refined):
        copy = shutil.copytree(store, tmp_path / store.name, symlinks=True)
        for restart in ([], ["--restart"]):
            line = refused({copy: 1}, "generate", TINY, "--out", copy, "dataset.n_samples=4", "--in-process", *restart)
            assert f"--out '{copy}' is a velocity store of " in line and "choose another --out" in line


def test_case2_predict_and_refine_into_a_dataset_are_refused(tiny_dataset, tiny_run, tmp_path):
    copy = shutil.copytree(tiny_dataset, tmp_path / "D2")
    for restart in ([], ["--restart"]):
        line = refused({copy: 1, tiny_dataset: 1}, "predict", tiny_run, "--data", tiny_dataset, "--out", copy, *restart)
        assert f"--out '{copy}' is a dataset made by `hpcinv generate`" in line and "not with --restart" in line
        line = refused(
            {copy: 1, tiny_dataset: 1},
            "refine", "--data", tiny_dataset, "--init", "smooth", "--out", copy, "--in-process", *restart,
        )  # fmt: skip
        assert f"--out '{copy}' is a dataset made by `hpcinv generate`" in line
    # the input itself as --out: named as the input, not as a lock held by a long-gone process
    line = refused({tiny_dataset: 1}, "predict", tiny_run, "--data", tiny_dataset, "--out", tiny_dataset, "--restart")
    assert line.endswith(
        f"--out '{tiny_dataset}' is --data '{tiny_dataset}', which this command reads; choose another --out"
    )
    # and nothing else writes into a dataset: train, evaluate, generate --restart into a run
    line = refused({tiny_dataset: 1}, "train", TRAIN, "--out", tiny_dataset, f"data.train={tiny_dataset}")
    assert "is a dataset made by `hpcinv generate`" in line
    line = refused({tiny_dataset: 1}, "evaluate", tiny_run, "--data", tiny_dataset, "--out", tiny_dataset)
    assert "is a dataset made by `hpcinv generate`; `hpcinv evaluate` writes only an evaluation report" in line


def test_case3_refine_never_discards_its_own_start(tiny_dataset, tiny_predictions, refined):
    line = refused(
        {tiny_predictions: 1, tiny_dataset: 1},
        "refine", "--data", tiny_dataset, "--init", tiny_predictions, "--out", tiny_predictions, "--restart",
    )  # fmt: skip
    assert "is --init" in line
    # a refine store as the start of another refine: the same kind, still never its own --out
    line = refused(
        {refined: 1},
        "refine",
        "--data",
        tiny_dataset,
        "--init",
        refined,
        "--out",
        refined,
        "--restart",
        "--samples",
        "2",
    )
    assert "is --init" in line
    line = refused(
        {refined: 1}, "refine", "--data", tiny_dataset, "--init", refined, "--out", refined / "sub", "--samples", "2"
    )
    assert "lies inside --init" in line


def test_generate_restart_into_a_run_is_refused(tiny_run):
    line = refused({tiny_run: 1}, "generate", TINY, "--out", tiny_run, "--restart", "--in-process")
    assert f"--out '{tiny_run}' is a training run made by `hpcinv train`" in line


# ------------------------------------------------------------------ 4, 5, 8: imported data


def test_case4_gathers_a_float16_store_cannot_hold_are_refused_or_scaled(tiny_run, recording, tmp_path):
    big = np.load(recording / "a.npy")
    big = big / np.abs(big).max() * 1e5
    np.save(tmp_path / "big.npy", big)
    out = tmp_path / "I"
    line = one_error_line(
        hpcinv("import-gathers", TINY, "dataset.gathers_dtype=float16", "--gathers", tmp_path / "big.npy", "--out", out)
    )
    assert "peak |amplitude| is 1e+05" in line and "more than float16 holds (65504)" in line
    assert "dataset.gathers_dtype=float32" in line and "--scale 0.1" in line and not out.exists()
    # scaled as the line says: stored within range, read back as recorded, predicted finite
    proc = hpcinv(
        "import-gathers", TINY, "dataset.gathers_dtype=float16", "--gathers", tmp_path / "big.npy", "--out", out,
        "--scale", "0.1", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = read_manifest(out)
    assert manifest["gathers_scale"] == 0.1 and manifest["stats"]["gathers"]["max"] <= 65504
    assert verify_dataset(out).ok
    read = ShardedDataset(out).read(3)[0]
    assert read.dtype == np.float32 and np.allclose(read, big[3], rtol=2e-3, atol=1e5 * 2e-3)
    pred = tmp_path / "P"
    assert hpcinv("predict", tiny_run, "--data", out, "--out", pred, "--quiet").returncode == 0
    assert np.isfinite(VelocityStore(pred).read_range(0, 4)[1]).all()
    # a manifest whose statistics are not finite fails verify
    broken = shutil.copytree(out, tmp_path / "broken")
    manifest["stats"]["gathers"]["mean"] = float("-inf")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert any("statistics not finite (gathers.mean)" in p for p in verify_dataset(broken).problems)


def test_case5_stores_of_one_recording_are_refused_on_another(tiny_run, recording, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    for name, out in (("a.npy", a), ("b.npy", b)):
        assert hpcinv("import-gathers", TINY, "--gathers", recording / name, "--out", out, "--quiet").returncode == 0
    assert read_manifest(a)["config_hash"] == read_manifest(b)["config_hash"]  # one config, two recordings
    assert read_manifest(a)["identity"] != read_manifest(b)["identity"]
    pred = tmp_path / "PA"
    assert hpcinv("predict", tiny_run, "--data", a, "--out", pred, "--quiet").returncode == 0
    for args in (
        ("refine", "--data", b, "--init", pred, "--out", tmp_path / "F", "--in-process"),
        ("evaluate", pred, "--data", b, "--out", tmp_path / "E"),
    ):
        line = refused({pred: 1, b: 1}, *args)
        assert "other recorded gathers with the same config" in line
        assert not (tmp_path / "F").exists() and not (tmp_path / "E").exists()


def test_case8_and_6_empty_dead_and_unreadable_gathers_are_refused(recording, tmp_path):
    gathers = np.load(recording / "a.npy")
    np.save(tmp_path / "empty.npy", gathers[:0])
    dead = gathers.copy()
    dead[2, 1] = 0.0
    np.save(tmp_path / "dead.npy", dead)
    nan = gathers.copy()
    nan[1, 3, 7, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "nothing.npy").write_bytes(b"")
    (tmp_path / "text.npy").write_text("1 2 3\n")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = {
        "empty.npy": "--gathers holds no samples (shape [0, 5, 200, 64])",
        "dead.npy": "--gathers sample 2, shot 1 is all zeros (a dead or missing shot)",
        "nan.npy": "--gathers sample 1 (shot 3) holds NaN or Inf values",
        "nothing.npy": "is an empty file",
        "text.npy": "is not a .npy or .npz file (it does not begin with NumPy's header)",
        "objects.npy": "is a damaged or unsupported NumPy file",
    }
    for name, expect in cases.items():
        line = one_error_line(hpcinv("import-gathers", TINY, "--gathers", tmp_path / name, "--out", tmp_path / "I"))
        assert expect in line, (name, line)
        assert not (tmp_path / "I").exists()


def test_refine_of_gathers_that_record_nothing_is_one_clear_error(tiny_dataset):
    cfg = load_dataset_config(tiny_dataset)
    gathers, truth = ShardedDataset(tiny_dataset).read(0)
    rc = RefineSection(bands_hz=[None], iterations_per_band=[1])
    with pytest.raises(HpcinvError, match="recorded gathers are all zeros"):
        refine_model(truth, np.zeros_like(gathers), cfg, rc, (1800.0, 4500.0))


def test_import_takes_the_samples_the_command_line_selects(recording, tmp_path):
    out = tmp_path / "I"
    proc = hpcinv(
        "import-gathers", TINY, "--gathers", recording / "a.npy", "--out", out, "--quiet",
        "dataset.start_index=1", "dataset.n_samples=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["imported_samples"] == [1, 3]
    source = np.load(recording / "a.npy")
    stored = ShardedDataset(out)
    assert len(stored) == 2 and np.array_equal(stored.read(0)[0], source[1])
    assert np.array_equal(stored.read(1)[0], source[2])
    line = one_error_line(
        hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", tmp_path / "J", "dataset.n_samples=9")
    )
    assert "dataset.n_samples=9 from dataset.start_index=0 needs samples up to 8, but --gathers holds 4" in line
    assert not (tmp_path / "J").exists()
    # the config's own counts (tiny.yaml: 24 samples) are generation settings: the whole file is taken, said so
    proc = hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", tmp_path / "K", "--quiet")
    assert proc.returncode == 0 and json.loads(proc.stdout)["imported_samples"] == [0, 4], proc.stderr[-2000:]
    assert "importing all 4 samples of --gathers" in proc.stderr


# ------------------------------------------------------------------ 7: inputs are held while read


@pytest.mark.slow
def test_case7_a_start_store_cannot_be_pulled_away_while_refine_reads_it(tiny_dataset, tiny_run, tmp_path):
    data = shutil.copytree(tiny_dataset, tmp_path / "D")
    start = tmp_path / "P"
    assert hpcinv("predict", tiny_run, "--data", data, "--out", start, "--quiet").returncode == 0
    out = tmp_path / "F"
    proc = subprocess.Popen(
        [*CLI, "refine", "--data", str(data), "--init", str(start), "--out", str(out), "--in-process",
         "--quiet", "refine.shard_size=1", "refine.bands_hz=[null]", "refine.iterations_per_band=[50]"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "manifest.json").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        for args in (
            ("predict", tiny_run, "--data", data, "--out", start, "--restart"),
            ("generate", TINY, "--out", data, "--restart", "dataset.seed=3", "--in-process"),
            ("refine", "--data", data, "--init", start, "--out", out, "--restart", "refine.lr_mps=5"),
        ):
            line = refused({start: 1, data: 1}, *args)
            assert "is in use by" in line, line
        assert proc.poll() is None  # the refine goes on
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_a_stale_lock_description_names_no_dead_process(tmp_path):
    folder = tmp_path / "D"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (folder / LOCK).write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "pid": int(dead.stdout),
                "shared": False,
                "command": "hpcinv generate tiny",
                "since": "2026-01-01 00:00:00",
            }
        )
    )
    # a reader that did not describe itself holds it; a writer asks
    with folder_lock(folder, shared=True, create=False), pytest.raises(HpcinvError) as refusal, folder_lock(folder):
        pass
    assert "in use by another hpcinv process that reads it" in str(refusal.value)
    assert "hpcinv generate tiny" not in str(refusal.value)


# ------------------------------------------------------------------ 9: the launcher checks the same


def test_case9_the_refine_launcher_runs_the_commands_checks(
    tiny_dataset, tiny_predictions, recording, tmp_path, capsys
):
    other = tmp_path / "O"
    assert hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", other, "--quiet").returncode == 0
    data, start, out = str(tiny_dataset), str(tiny_predictions), str(tmp_path / "F")
    cases = [
        (["--data", data, "--init", data, "--out", out], "is a dataset made by `hpcinv generate`, not a run"),
        (["--data", str(other), "--init", start, "--out", out], "holds velocities of dataset"),
        (["--data", data, "--init", start, "--out", out, "refine.v_max_mps=9000"], "exceeds the dataset's pinned"),
        (["--data", data, "--init", start, "--out", out, "--samples", "0"], "'0' is not a whole number >= 1"),
        (["--data", data, "--init", start, "--out", data], f"--out '{data}' is --data"),
        (["--data", data, "--init", start, "--out", out, "refine.freeze_top_cells=99"], "freezes the whole model"),
    ]
    for args, expect in cases:
        try:
            code = launch_refine.main(args)
        except SystemExit as exc:  # a usage error, from argparse
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("launch: error: ") and expect in err, (args, err)
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "F").exists() and not (ROOT / "slurm-logs").exists()


# ------------------------------------------------------------------ 10: checkpoints


class _Opaque:
    """Any Python object: a checkpoint holding one would need pickled code run to load."""


def test_case10_garbage_and_truncated_checkpoints_are_one_line(tiny_dataset, tiny_run, tmp_path):
    state = next(tiny_run.glob("checkpoint_epoch*/state.pt")).read_bytes()
    (tmp_path / "garbage.pt").write_bytes(os.urandom(4096))
    (tmp_path / "cut.pt").write_bytes(state[: len(state) // 3])
    torch.save({"model": {}, "model_spec": {}, "x": _Opaque()}, tmp_path / "objects.pt")
    expect = {
        "garbage.pt": "is not a checkpoint (not the archive torch.save writes)",
        "cut.pt": "is truncated or damaged (its archive has no end)",
        "objects.pt": "never runs code stored in one",
    }
    for name, message in expect.items():
        for args in (
            ("predict", tmp_path / name, "--data", tiny_dataset, "--out", tmp_path / "P"),
            ("evaluate", tmp_path / name, "--data", tiny_dataset, "--out", tmp_path / "E"),
            ("refine", "--data", tiny_dataset, "--init", tmp_path / name, "--out", tmp_path / "F"),
        ):
            line = one_error_line(hpcinv(*args))
            assert message in line and "weights_only=False" not in line, (args, line)
    assert not any((tmp_path / n).exists() for n in "PEF")


# ------------------------------------------------------------------ 11: messages that say what is wrong


def test_case11_messages_name_what_is_wrong(tiny_dataset, tiny_run, tmp_path):
    out = tmp_path / "P"
    assert (
        hpcinv("predict", tiny_run, "--data", tiny_dataset, "--out", out, "--shard-size", "5", "--quiet").returncode
        == 0
    )
    line = refused({out: 1}, "predict", tiny_run, "--data", tiny_dataset, "--out", out, "--shard-size", "4")
    assert "holds the output of another `hpcinv predict` (shard_size is 5 there, 4 here)" in line
    line = one_error_line(hpcinv("refine", "--data", tiny_dataset, "--init", "nope", "--out", tmp_path / "F"))
    assert "--init 'nope' does not exist; give a run or checkpoint (`hpcinv train`), a velocity store" in line
    assert "or 'smooth'" in line
    line = one_error_line(
        hpcinv("refine", "--data", tiny_dataset, "--init", "smooth", "--out", tmp_path / "F", "refine.device=cuda",
               "--in-process")
    )  # fmt: skip
    assert "refine.device='cuda'" in line and "modelling.device" not in line
    line = one_error_line(
        hpcinv("refine", "--data", tiny_dataset, "--init", "smooth", "--out", tmp_path / "F",
               "refine.smooth_v_top_mps=1000")
    )  # fmt: skip
    assert "give refine.smooth_v_top_mps / smooth_v_bottom_mps within the bounds" in line
    assert "refine.v_min_mps no lower than 1800" in line and "widen" not in line


# ------------------------------------------------------------------ 12: no quiet surprises


def test_case12_evaluate_replaces_its_report_whole_and_names_the_baseline(tiny_dataset, tiny_run, tmp_path):
    report = tmp_path / "E"
    first = hpcinv(
        "evaluate", tiny_run, "--data", tiny_dataset, "--out", report, "--misfit-samples", "0", "--figures", "2"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(list(report.glob("figures/*/*.png"))) == 4
    again = hpcinv(
        "evaluate", tiny_run, "--data", tiny_dataset, "--out", report, "--misfit-samples", "0", "--figures", "1",
        "--baseline", f"{tiny_dataset}",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(report.glob("figures/*/*.png"))) == 2  # no figure of the first report is left
    results = json.loads((report / "metrics.json").read_text())
    assert "data-free baseline (mean model of ds)" in results
    assert f"mean velocity model of `{tiny_dataset}` (every sample)" in (report / "metrics.md").read_text()
    line = refused(
        {report: 1}, "evaluate", tiny_run, "--data", tiny_dataset, "--out", report, "--baseline", f"{tiny_dataset}:"
    )
    assert "names no split" in line


def test_case12_a_refused_evaluation_leaves_nothing(tiny_dataset, tiny_run, tmp_path):
    ds = shutil.copytree(tiny_dataset, tmp_path / "D")
    import h5py

    shard = ds / "shards" / "shard-000002.h5"
    with h5py.File(shard, "r") as fh:
        info = fh["gathers"].id.get_chunk_info_by_coord((3, 0, 0, 0))
    with open(shard, "r+b") as fh:  # one sample's bytes zeroed: found only when it is read
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)
    out = tmp_path / "new" / "E"
    line = refused({ds: 1}, "evaluate", tiny_run, "--data", ds, "--out", out, "--misfit-samples", "0")
    assert "sample 19 (row 3) is damaged" in line
    assert not out.exists() and not out.parent.exists()


@pytest.mark.slow
def test_case12_an_evaluation_that_fails_while_writing_leaves_nothing_and_keeps_the_last_report(
    tiny_dataset, tiny_predictions, tmp_path
):
    """A full disk while the figures are written: one line, the earlier report untouched, no temporary left."""
    from tests.test_integrity import _small_disk

    mount = _small_disk(tmp_path)
    report = mount / "E"
    command = (
        f"{sys.executable} -m hpcinv.cli evaluate {tiny_predictions} --data {tiny_dataset} --out {report} "
        "--misfit-samples 0 --samples 2"
    )
    # the first report (no figures) fits in 256 kB; the second (two figures of ~90 kB each, and the first
    # report still there until the new one is complete) does not
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {mount} && {command} --figures 0 && cat {report}/metrics.md | md5sum && "
        f"{command} --figures 2; echo rc=$?; cat {report}/metrics.md | md5sum; ls -A {mount}"
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "rc=2" in proc.stdout, (proc.stdout, proc.stderr[-3000:])
    first, second = [ln for ln in proc.stdout.splitlines() if ln.endswith("-")]
    assert first == second  # the last report is as it was
    assert proc.stdout.strip().splitlines()[-1] == "E"  # nothing else left in the folder: no temporary
    errors = [ln for ln in proc.stderr.splitlines() if "hpcinv: error:" in ln]
    assert len(errors) == 1 and "disk full: cannot write" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_case12_refine_and_evaluate_print_no_torch_warning(tiny_dataset, tiny_predictions, tmp_path):
    for args in (
        ["refine", "--data", str(tiny_dataset), "--init", "smooth", "--out", str(tmp_path / "F"), "--samples", "1",
         "--in-process", "--quiet", *FAST],
        ["evaluate", str(tiny_predictions), "--data", str(tiny_dataset), "--out", str(tmp_path / "E"),
         "--misfit-samples", "1", "--figures", "1", "--baseline", str(tiny_dataset)],
    ):  # fmt: skip
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Warning" not in proc.stderr, proc.stderr[-3000:]


def test_distinct_refuses_an_output_that_is_an_input_holds_one_or_lies_in_a_store(
    tmp_path, tiny_dataset, tiny_predictions
):
    distinct(tmp_path / "a", {"--data": tmp_path / "b", "--init": None})
    distinct(tiny_dataset / "eval", {"--data": tiny_dataset})  # inside a dataset: nothing there removes it
    for out, relation in ((tmp_path / "b", "is"), (tmp_path, "holds")):
        with pytest.raises(HpcinvError, match=f"--out '{out}' {relation} --data"):
            distinct(out, {"--data": tmp_path / "b"})
    with pytest.raises(HpcinvError, match="lies inside --init"):  # a store is discarded whole by --restart
        distinct(tiny_predictions / "x", {"--init": tiny_predictions})


# ------------------------------------------------------------------ a second hostile pass


def test_folders_that_only_look_like_hpcinv_ones_are_never_written(tiny_dataset, tiny_predictions, tmp_path):
    web = tmp_path / "web"  # someone else's manifest.json, and a summary.json
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "webapp"}')
    (web / "summary.json").write_text("{}")
    assert inspect(web).kind == "foreign"
    line = refused({web: 1}, "refine", "--data", tiny_dataset, "--init", tiny_predictions, "--out", web, "--restart")
    assert "is a non-empty folder that hpcinv did not make" in line
    conf = tmp_path / "conf"  # a lone config.yaml that is not hpcinv's
    conf.mkdir()
    (conf / "config.yaml").write_text("foo: 1\n")
    for restart in ([], ["--restart"]):
        line = refused({conf: 1}, "generate", TINY, "--out", conf, "--in-process", *restart)
        assert "is a non-empty folder that hpcinv did not make" in line
    draft = tmp_path / "draft"  # a user's file that merely looks like a writer's temporary
    draft.mkdir()
    (draft / "draft.tmp-1").write_text("mine")
    line = refused({draft: 1}, "predict", tiny_predictions, "--data", tiny_dataset, "--out", draft)
    assert "non-empty folder that hpcinv did not make" in line or "not a training run" in line


def test_a_record_that_contradicts_the_contents_is_refused(tiny_dataset, tiny_run, tiny_predictions, tmp_path):
    def relabel(folder, kind):
        copy = shutil.copytree(folder, tmp_path / f"{folder.name}-as-{kind}")
        record = json.loads((copy / RECORD).read_text())
        (copy / RECORD).write_text(json.dumps(record | {"kind": kind}))
        return copy

    cases = [
        (relabel(tiny_predictions, "refined"), ("refine", "--data", tiny_dataset, "--init", "smooth", "--restart")),
        (relabel(tiny_dataset, "report"), ("evaluate", tiny_run, "--data", tiny_dataset, "--misfit-samples", "0")),
        (relabel(tiny_run, "dataset"), ("generate", TINY, "--restart", "--in-process")),
    ]
    for folder, command in cases:
        line = refused({folder: 1}, *command, "--out", folder)
        assert "hpcinv.json' says the folder is" in line and "but it holds" in line, line


def test_more_messages_that_name_what_is_wrong(tiny_dataset, tiny_run, tiny_predictions, recording, tmp_path):
    np.savez(tmp_path / "g.npz", a=np.load(recording / "a.npy"))
    line = one_error_line(
        hpcinv("import-gathers", TINY, "--gathers", tmp_path / "g.npz", "--key", "zz", "--out", tmp_path / "I")
    )
    assert "--key 'zz' is not in it; its arrays: ['a']" in line
    line = one_error_line(
        hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--key", "a", "--out", tmp_path / "I")
    )
    assert "is a .npy, which holds one array: --key is for .npz files" in line
    line = one_error_line(
        hpcinv("import-gathers", TINY, "--gathers", recording / "a.npy", "--out", tmp_path / "I",
               "dataset.gathers_dtype=float16", "--scale", "1e-12")
    )  # fmt: skip
    assert "--scale 1e-12 makes shot 0 of sample 0 all zeros in float16" in line and not (tmp_path / "I").exists()
    (tmp_path / "empty").mkdir()  # an empty folder is a fine --out
    assert (
        hpcinv(
            "import-gathers", TINY, "--gathers", recording / "a.npy", "--out", tmp_path / "empty", "--quiet"
        ).returncode
        == 0
    )
    assert inspect(tmp_path / "empty").kind == "imported"
    line = one_error_line(
        hpcinv("evaluate", tiny_run, "--data", tiny_dataset, "--out", tmp_path / "E", "--baseline", ":train")
    )
    assert "--baseline ':train' names no dataset" in line
    colon = tmp_path / "D:x"  # a folder whose name holds a colon is that folder, not a split of another
    colon.symlink_to(tiny_dataset)
    proc = hpcinv("evaluate", tiny_run, "--data", tiny_dataset, "--out", tmp_path / "E", "--baseline", colon,
                  "--misfit-samples", "0", "--figures", "0", "--samples", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = one_error_line(hpcinv("train", TRAIN, "--out", tmp_path / "R", f"data.train={tiny_predictions}"))
    assert "is a velocity store of network predictions" in line and "imported gathers" not in line
    import pickle

    with open(tmp_path / "pickle.pt", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    proc = hpcinv("predict", tmp_path / "pickle.pt", "--data", tiny_dataset, "--out", tmp_path / "P")
    assert "is not a checkpoint" in one_error_line(proc) and "Warning" not in proc.stderr


def test_a_refused_resume_leaves_the_run_as_it_was(tiny_dataset, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "R")
    state = next(run.glob("checkpoint_epoch*/state.pt"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    line = refused(
        {run: 1}, "train", TRAIN, "--out", run, "--in-process", f"data.train={tiny_dataset}", "train.epochs=2",
        "scaling.num_workers=1", "tracking.mode=disabled",
    )  # fmt: skip
    assert "is truncated or damaged" in line and "move checkpoint_epoch000000 out of" in line
