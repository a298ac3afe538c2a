"""``privkd config list`` and ``privkd config show NAME``: the shipped configs and what a config's keys are and do."""

from __future__ import annotations

from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.catalog import config_keys, key_documentation, shipped_configs
from privkd.config.loading import SHIPPED_CONFIGS


def invoke(*args: str):
    return CliRunner().invoke(app, ["config", *args], env={"COLUMNS": "400"})


def test_config_list_names_every_shipped_config_with_its_description():
    configs = shipped_configs()
    assert sorted(configs) == sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    assert configs["demo"] == "The demo: smartwatch exercise recognition (7 classes, 10 subjects)."
    assert all(configs.values()), [name for name, text in configs.items() if not text]
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for name in configs:
        assert name in result.output
    assert "The demo: smartwatch exercise recognition" in result.output


def test_config_show_resolves_defaults_and_documents_each_key(tmp_path):
    keys = {k.key: k for k in config_keys("demo")}
    assert keys["data.privileged"].value == ["gyroscope"] and keys["data.privileged"].set_in_file
    assert keys["training.threads"].value == "auto" and not keys["training.threads"].set_in_file
    assert "`in_memory`" in keys["data.in_memory"].doc
    assert set(keys) <= set(key_documentation()) | {"variants"}
    result = invoke("show", "demo")
    assert result.exit_code == 0, result.output
    assert "data.privileged *" in result.output and "evaluation.max_folds" in result.output
    assert "trains only the first folds" in " ".join(result.output.replace("│", " ").split())

    own = tmp_path / "mine.yaml"
    own.write_text("training:\n  epochs: 7\n")
    result = invoke("show", str(own), "--set-only")
    assert result.exit_code == 0 and "training.epochs *" in result.output and "model.embed_dim" not in result.output


def test_config_show_names_the_shipped_configs_for_an_unknown_name():
    result = invoke("show", "dmeo")
    assert result.exit_code == 2 and "demo" in result.output and "compare" in result.output


def test_help_prints_no_type_for_flags():
    """A flag takes no value: typer printed ``--final <bool>`` and ``--help <bool>``."""
    for command in (["run"], ["data", "import", "ts"], ["predict"], []):
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "<bool>" not in result.output, result.output
    assert "<path>" in CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output  # values keep theirs
