"""The config schema rejects mistakes with the key, the problem and the fix."""

import pytest

from privkd.config.loading import (
    apply_overrides,
    config_from_dict,
    load_config,
    packaged_config_path,
    variant_config,
)
from privkd.config.parse import config_to_dict
from privkd.config.rows import restrict_rows, row_method
from privkd.errors import ConfigError


def test_demo_config_loads_with_paper_defaults():
    cfg = load_config(packaged_config_path("demo"))
    assert cfg.methods == ("baseline", "teacher", "pkdot")
    assert cfg.data.prevalent == ("accelerometer",) and cfg.data.privileged == ("gyroscope",)
    assert (cfg.structural.k, cfg.structural.epsilon, cfg.pkdot.beta) == (30, 0.01, 0.6)
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
        ({"structural": {"ot_mode": "rowwise"}}, "structural.ot_mode", "'paper', 'paired'"),
        ({"methods": ["baseline", "magic"]}, "methods", "pkdot"),
        ({"data": {"prevalent": ["a"], "privileged": ["a"]}}, "data.privileged", "both"),
        ({"evaluation": {"n_folds": 1}}, "evaluation.n_folds", "2"),
        ({"structural": {"epsilon": 0}}, "structural.epsilon", "> 0"),
        ({"variants": {"x": {"method": "pkdot", "set": {"teacher.tnet_loss": "mmd"}}}}, "variants.x.set.teacher.tnet_loss", "shared"),
        ({"variants": {"x": {"method": "teacher"}}}, "variants.x.method", "cannot be varied"),
        ({"variants": {"pkdot": {"method": "pkdot"}}}, "variants.pkdot", "method's name"),
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


def test_variant_config_applies_only_its_overrides():
    cfg = config_from_dict(
        {"variants": {"pkdot_paired": {"method": "pkdot", "set": {"structural.ot_mode": "paired", "pkdot.beta": 2}}}}
    )
    row = variant_config(cfg, "pkdot_paired")
    assert cfg.structural.ot_mode == "paper" and row.structural.ot_mode == "paired" and row.pkdot.beta == 2.0 and row.structural.k == cfg.structural.k
    assert row_method(cfg, "pkdot_paired") == "pkdot" and variant_config(cfg, "pkdot") is cfg


def test_only_keeps_the_named_rows_and_rejects_unknown_ones():
    cfg = load_config(packaged_config_path("amid_ablation"))
    kept = restrict_rows(cfg, ["baseline", "amid_nce"])
    assert kept.methods == ("baseline",) and list(kept.variants) == ["amid_nce"]
    assert restrict_rows(cfg, ["amid_no_d2"]).methods == ()
    with pytest.raises(ConfigError, match="--only"):
        restrict_rows(cfg, ["amid_typo"])


def test_shipped_configs_all_load():
    from pathlib import Path

    import privkd

    for path in (Path(privkd.__file__).parent / "configs").glob("*.yaml"):
        assert load_config(path).name
