"""Shared fixtures: the embedded dataset built once per session into a temporary cache."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def watch_path(tmp_path_factory) -> Path:
    from privkd.data.embedded import embedded_dataset_path

    return embedded_dataset_path(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def run_config(tmp_path, monkeypatch, watch_path):
    """Write ``values`` as a YAML config, run ``privkd run`` on it against the session's cached
    embedded data, and return the CLI result and the run directory (None if none was made)."""
    import yaml
    from typer.testing import CliRunner

    from privkd.cli import app

    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))

    def run(values: dict, *extra: str):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(values, sort_keys=False))
        out = tmp_path / "runs"
        result = CliRunner().invoke(app, ["run", str(config), "--out", str(out), *extra])
        runs = sorted(out.iterdir()) if out.exists() else []
        return result, (runs[-1] if runs else None)

    return run
