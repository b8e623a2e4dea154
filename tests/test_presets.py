"""Every preset a user can pick loads and validates: they live in one place, hpcinv/presets (shipped in the
package; the checkout's configs/ links to it), and a command takes a preset's name or a file path.

Data presets go through every check ``hpcinv generate`` runs before it writes anything (velocity source,
splits, dispersion, CFL, record length, geometry); a preset that imports a public collection takes its
path as a setting, supplied here from ../shared/data when present (the schema alone otherwise).
"""

from pathlib import Path

import numpy as np
import pytest
import yaml

from hpcinv.config import DataConfig, RefineConfig, TrainConfig, config_kind, load_config
from hpcinv.errors import ConfigError
from hpcinv.generate.driver import check_dataset_config
from hpcinv.physics import make_geometry
from hpcinv.physics.survey import mirror_asymmetry
from hpcinv.presets import preset_names, preset_path
from tests.conftest import FCNVMB_NPZ, OPENFWI_NPZ, ROOT, one_error_line, run_cli

PRESETS = sorted((ROOT / "hpcinv" / "presets").glob("*.yaml"))
COLLECTIONS = ("npz", "openfwi")


def _collection(preset: Path, source: str, tmp_path: Path) -> Path | None:
    """The public collection a preset imports, in the form it expects; None when ../shared/data is absent."""
    if not OPENFWI_NPZ.exists():
        return None
    if source == "openfwi":  # OpenFWI's own files: (N, 1, 70, 70) arrays in .npy
        path = tmp_path / "model1.npy"
        np.save(path, np.load(OPENFWI_NPZ)["CurveFaultA"][:8, None])
        return path
    return OPENFWI_NPZ if "openfwi" in preset.name else FCNVMB_NPZ


def test_there_are_presets_of_every_kind():
    kinds = {config_kind(p) for p in PRESETS}
    assert kinds == {DataConfig, TrainConfig, RefineConfig} and len(PRESETS) >= 20
    assert [p.name.removesuffix(".yaml") for p in PRESETS] == preset_names()


def test_presets_have_one_home_and_are_found_by_name(tmp_path):
    configs = ROOT / "configs"
    assert configs.is_symlink() and configs.resolve() == (ROOT / "hpcinv" / "presets").resolve()
    assert (
        preset_path("bench2")
        == preset_path("symmetric_fcnvmb_data.yaml")
        == (ROOT / "hpcinv" / "presets" / "symmetric_fcnvmb_data.yaml")
    )
    by_name = load_config(TrainConfig, "bench2_inversionnet", ["train.epochs=2"])
    by_path = load_config(TrainConfig, configs / "symmetric_mixture_inversionnet_train.yaml", ["train.epochs=2"])
    assert by_name == by_path and by_name.train.epochs == 2
    with pytest.raises(ConfigError, match=r"'benhc2' does not exist, and is not a preset; presets: cpu_fcnvmb_data, "):
        load_config(DataConfig, "benhc2")
    # a preset's earlier name, and its earlier file name in configs/, are still understood
    fcnvmb = ["velocity.path=models.npz"]
    assert load_config(DataConfig, configs / "bench2.yaml", fcnvmb) == load_config(
        DataConfig, "symmetric_fcnvmb_data", fcnvmb
    )
    with pytest.raises(ConfigError, match=r"does not exist, and is not a preset"):
        load_config(DataConfig, tmp_path / "symmetric_fcnvmb_data.yaml")  # a path is never looked up among the presets


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_every_preset_loads_and_validates(preset, tmp_path):
    text = yaml.safe_load(preset.read_text())
    kind = config_kind(preset)
    overrides = []
    source = (text.get("velocity") or {}).get("source")
    collection = _collection(preset, source, tmp_path) if kind is DataConfig and source in COLLECTIONS else None
    if kind is DataConfig and source in COLLECTIONS:
        overrides.append(f"velocity.path={collection or tmp_path / 'absent.npz'}")
    if kind is TrainConfig and not (text.get("data") or {}).get("train"):
        overrides.append("data.train=runs/somewhere")  # the quickstart fills it in
    cfg = load_config(kind, preset, overrides)
    if kind is DataConfig and (source not in COLLECTIONS or collection is not None):
        check_dataset_config(cfg)  # every physical check generate makes before writing
    if kind is DataConfig and preset.name.startswith("symmetric"):  # mirror augmentation relies on it
        geometry = make_geometry(cfg.survey, cfg.grid)
        assert mirror_asymmetry(geometry.source_cells, geometry.receiver_cells, cfg.grid.nx) is None


def test_config_show_prints_the_resolved_config_with_descriptions():
    proc = run_cli("config", "show", "symmetric_mixture_inversionnet_train", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert "a TrainConfig, resolved with 1 override(s)" in proc.stdout
    lines = proc.stdout.splitlines()
    assert "  epochs: 3  # (may change on resume)" in lines and "  name: inversionnet" in lines
    assert any(line.startswith("  batch_size: 10  # per training worker") for line in lines)
    line = one_error_line(run_cli("config", "show", str(ROOT / "configs" / "symmetric_fcnvmb_data.yaml")))
    assert "velocity.source='npz' needs velocity.path" in line
