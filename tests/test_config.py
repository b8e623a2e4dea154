import re

import pytest
import yaml

from hpcinv.config import (
    DataConfig,
    RefineConfig,
    ScalingSection,
    TrainConfig,
    config_hash,
    load_config,
    parse_overrides,
)
from hpcinv.errors import ConfigError
from tests.conftest import CONFIGS, ROOT, run_cli, tiny_config


def test_every_preset_validates_as_its_kind():
    kinds = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        top = set(yaml.safe_load(path.read_text()))
        cls = RefineConfig if "refine" in top else TrainConfig if top & {"model", "train"} else DataConfig
        raw = yaml.safe_load(path.read_text())
        overrides = []
        if (
            cls is DataConfig
            and raw.get("velocity", {}).get("source", "synthetic") != "synthetic"
            and not raw["velocity"].get("path")
        ):
            overrides = ["velocity.path=models.npz"]  # presets of imported collections take the path as a setting
        if cls is TrainConfig and not (raw.get("data") or {}).get("train"):
            overrides = ["data.train=runs/some_dataset"]
        kinds[path.name] = type(load_config(cls, path, overrides)).__name__
    assert kinds["tiny.yaml"] == "DataConfig" and kinds["tiny_train.yaml"] == "TrainConfig"
    assert kinds["cpu_refine.yaml"] == "RefineConfig" and kinds["refine_paper.yaml"] == "RefineConfig"


def test_overrides_are_typed_and_nested():
    cfg = tiny_config("survey.n_shots=3", "grid.dx_m=12.5", "velocity.synthetic.n_salt=[0, 1]")
    assert cfg.survey.n_shots == 3 and cfg.grid.dx_m == 12.5 and cfg.velocity.synthetic.n_salt == [0, 1]
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        tiny_config("survey.n_shot=3")
    msg = str(err.value)
    assert "unknown key 'survey.n_shot'" in msg and "n_shots" in msg and "f0_hz" in msg


def test_wrong_type_names_value():
    with pytest.raises(ConfigError, match=r"survey.n_shots.*'many'"):
        tiny_config("survey.n_shots=many")
    with pytest.raises(ConfigError, match="modelling.accuracy"):
        tiny_config("modelling.accuracy=5")


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        tiny_config("survey.n_shots")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DataConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(DataConfig, bad)


def test_hash_ignores_execution_settings_only():
    base = config_hash(tiny_config())
    assert config_hash(tiny_config("modelling.threads=4", "modelling.models_per_call=2")) == base
    assert config_hash(tiny_config("survey.f0_hz=7.0")) != base


def test_environment_variables_are_read_in_one_place():
    """Only hpcinv/environment.py reads HPCINV_* variables in the package, and its table documents every
    one named anywhere (package, scripts, templates, tests, benchmarks)."""
    from hpcinv.environment import VARIABLES

    named = set()
    folders = ("hpcinv", "slurm", "scripts", "tests", "benchmarks")
    for path in (p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in (".py", ".sh", ".sbatch")):
        text = path.read_text()
        named |= set(re.findall(r"HPCINV_[A-Z_]+[A-Z]", text))
        reads = re.findall(r"(?:environ\.get\(|environ\[|getenv\()\s*[\"'](HPCINV_\w+)", text)
        if path.is_relative_to(ROOT / "hpcinv") and path.name != "environment.py":
            assert not reads, f"{path.relative_to(ROOT)} reads {sorted(reads)}: go through hpcinv.environment"
    assert named - set(VARIABLES) == set(), "undocumented variables"


def test_environment_values_are_checked():
    from hpcinv.environment import environment

    env = environment({"HPCINV_OBJECT_STORE_GB": "8", "HPCINV_KEEP_RAY_TMP": "0", "HPCINV_RAY_TMP": "/scratch"})
    assert (env.object_store_gb, env.keep_ray_tmp, env.ray_tmp) == (8.0, False, "/scratch")
    assert environment({"HPCINV_KEEP_RAY_TMP": "1"}).keep_ray_tmp and environment({}).ray_tmp == "/tmp"
    for bad in ("eight", "0", "-2"):
        with pytest.raises(ConfigError, match=f"HPCINV_OBJECT_STORE_GB='{bad}': expected a number of GB > 0"):
            environment({"HPCINV_OBJECT_STORE_GB": bad})
    proc = run_cli("config", "env", env={"HPCINV_RAY_TMP": "/scratch/x"})
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("HPCINV_RAY_TMP "))
    assert "/scratch/x" in row and "hpcinv cluster" in row


def test_one_resource_check_for_slurm_requests_and_ray_clusters():
    scaling = ScalingSection(num_workers=4, cpus_per_worker=2)
    assert scaling.resources() == {"CPU": 8}
    scaling.check_fits({"CPU": 8, "GPU": 0}, "here", "")
    with pytest.raises(ConfigError, match=r"needs \{'CPU': 8\} but the allocation has \{'CPU': 6\}; ask for more"):
        scaling.check_fits({"CPU": 6}, "the allocation", "ask for more")
    gpu = ScalingSection(num_workers=4, use_gpu=True)
    with pytest.raises(
        ConfigError, match=r"\(one GPU each\) needs \{'CPU': 4, 'GPU': 4\} but .* has \{'CPU': 64, 'GPU': 2"
    ):
        gpu.check_fits({"CPU": 64, "GPU": 2}, "the Ray cluster", "")


def test_setting_roles_decide_hashes_resumes_and_the_shown_config():
    """Roles declared on the fields: execution settings leave a dataset's hash alone, resumable ones may
    differ on resume, and `config show` says so; every other setting counts as a difference."""
    from hpcinv.config import RefineSection, config_difference, describe, role_paths

    assert role_paths(DataConfig, "execution") == [
        ("modelling", "device"),
        ("modelling", "threads"),
        ("modelling", "models_per_call"),
    ]
    assert role_paths(RefineSection, "execution") == [("device",), ("threads",)]
    resumable = role_paths(TrainConfig, "resumable")
    assert ("train", "epochs") in resumable and ("tracking",) in resumable and ("train", "lr") not in resumable
    base = load_config(TrainConfig, CONFIGS / "tiny_train.yaml")
    later = load_config(TrainConfig, CONFIGS / "tiny_train.yaml", ["train.epochs=9", "tracking.mode=disabled"])
    assert config_difference(base, later, ignore="resumable") == ""
    changed = load_config(TrainConfig, CONFIGS / "tiny_train.yaml", ["train.lr=0.1", "model.depth=2"])
    difference = config_difference(base, changed, ignore="resumable")
    assert difference.startswith("model.depth is ") and "train.lr is 0.002 there, 0.1 here" in difference
    shown = describe(base)
    assert "epochs: 4  # (may change on resume)" in shown and "lr: 0.002\n" in shown
