import pytest

from hpcinv.config import DataConfig, config_hash, load_config, parse_overrides
from hpcinv.errors import ConfigError
from tests.conftest import CONFIGS, tiny_config


def test_presets_load():
    for name in ("tiny.yaml", "fcnvmb_paper.yaml"):
        cfg = load_config(DataConfig, CONFIGS / name)
        assert cfg.grid.nz > 0


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
