"""The config schema rejects mistakes with the key, the problem and the fix."""

import pytest

from privkd.config import apply_overrides, config_from_dict, config_to_dict, load_config, packaged_config_path
from privkd.errors import ConfigError


def test_demo_config_loads_with_paper_defaults():
    cfg = load_config(packaged_config_path("demo"))
    assert cfg.methods == ("baseline", "teacher", "pkdot")
    assert cfg.data.prevalent == ("accelerometer",) and cfg.data.privileged == ("gyroscope",)
    assert (cfg.pkdot.k, cfg.pkdot.epsilon, cfg.pkdot.beta) == (30, 0.01, 0.6)
    assert cfg.training.lr == pytest.approx(1e-3)


def test_round_trip_through_plain_data():
    cfg = load_config(packaged_config_path("demo"))
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_override_sets_nested_key_with_yaml_types():
    values = apply_overrides({"training": {"epochs": 30}}, ["training.epochs=5", "training.lr=1e-4", "methods=[baseline]"])
    cfg = config_from_dict(values)
    assert cfg.training.epochs == 5 and cfg.training.lr == pytest.approx(1e-4) and cfg.methods == ("baseline",)


@pytest.mark.parametrize(
    ("values", "key", "hint"),
    [
        ({"trainig": {}}, "trainig", "allowed keys"),
        ({"training": {"epochs": "many"}}, "training.epochs", "int"),
        ({"pkdot": {"ot_mode": "rowwise"}}, "pkdot.ot_mode", "'paper', 'paired'"),
        ({"methods": ["baseline", "magic"]}, "methods", "pkdot"),
        ({"data": {"prevalent": ["a"], "privileged": ["a"]}}, "data.privileged", "both"),
        ({"evaluation": {"n_folds": 1}}, "evaluation.n_folds", "2"),
        ({"pkdot": {"epsilon": 0}}, "pkdot.epsilon", "> 0"),
    ],
)
def test_bad_values_name_key_and_fix(values, key, hint):
    with pytest.raises(ConfigError) as err:
        config_from_dict(values)
    message = str(err.value)
    assert key in message and hint in message


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
