"""Backbones from another package reach every command through entry points (:mod:`privkd.plugins`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from privkd import plugins
from privkd.data import from_arrays
from privkd.errors import PrivkdError, UnknownPartError
from privkd.methods.registry import method_spec
from privkd.models.backbones import build_backbone

PLUGIN = '''
import math
from privkd.models.backbones import MLPBackbone, register_backbone


@register_backbone("toy_mlp")
def toy_mlp(sample_shape):
    return MLPBackbone(math.prod(sample_shape))
'''


def install_plugin(site: Path) -> Path:
    """A package registering backbone ``toy_mlp``, installed as pip would lay it out: the module
    and a dist-info directory whose entry_points.txt declares it under privkd.backbones."""
    (site / "privkd_toy_plugin").mkdir(parents=True)
    (site / "privkd_toy_plugin" / "__init__.py").write_text(PLUGIN)
    dist = site / "privkd_toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: privkd-toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[privkd.backbones]\ntoy_mlp = privkd_toy_plugin\n")
    return site


def privkd(*args: object, site: Path | None) -> subprocess.CompletedProcess:
    """``python -m privkd ARGS`` in a new process, with ``site`` on its path when given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site) if site else "",
                                                                      os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, "-m", "privkd", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_a_plugin_backbone_trains_with_privkd_run_and_predicts_with_privkd_predict(tmp_path):
    site = install_plugin(tmp_path / "site")
    rng = np.random.default_rng(0)
    data = from_arrays(tmp_path / "data.h5", {"accelerometer": rng.normal(size=(24, 3, 20)),
                                              "gyroscope": rng.normal(size=(24, 3, 20))},
                       np.array(["a", "b"] * 12), subjects=[f"p{i % 6}" for i in range(24)],
                       sampling_rates={"accelerometer": 10, "gyroscope": 10})
    config = tmp_path / "plugin.yaml"
    config.write_text(yaml.safe_dump({
        "methods": ["baseline"], "data": {"path": str(data), "prevalent": ["accelerometer"], "privileged": ["gyroscope"]},
        "model": {"backbones": {"accelerometer": "toy_mlp"}, "embed_dim": 8, "fusion_dim": 8},
        "evaluation": {"n_folds": 2, "n_val_subjects": 1},
        "training": {"epochs": 1, "batch_size": 8, "jobs": 1, "progress_bar": False}}))

    run = privkd("run", config, "--out", tmp_path / "runs", site=site)
    assert run.returncode == 0, run.stderr
    (student,) = {path.parent for path in (tmp_path / "runs").glob("*/fold_0/baseline/**/student.json")}

    predicted = privkd("predict", student, data, "--out", tmp_path / "p.csv", site=site)
    assert predicted.returncode == 0, predicted.stderr
    assert (tmp_path / "p.csv").read_text().count("\n") == 25

    without = privkd("predict", student, data, "--out", tmp_path / "q.csv", site=None)
    assert without.returncode == 2 and not (tmp_path / "q.csv").exists()
    message = " ".join((without.stdout + without.stderr).split())
    assert "unknown backbone 'toy_mlp'" in message and "'privkd.backbones'" in message and "damaged" not in message


def test_an_unknown_part_names_the_entry_point_group_a_plugin_would_use():
    with pytest.raises(UnknownPartError, match="privkd.backbones") as backbone:
        build_backbone("no_such_backbone", (3, 20))
    assert "unknown backbone 'no_such_backbone'" in str(backbone.value) and "signal_cnn" in str(backbone.value)
    with pytest.raises(UnknownPartError, match="privkd.methods"):
        method_spec("no_such_method")


def test_a_plugin_that_fails_to_import_is_named_with_its_package(monkeypatch):
    def broken():
        raise ImportError("No module named 'torch_geometric'")

    point = SimpleNamespace(name="gnn", value="broken_plugin.backbones", load=broken,
                            dist=SimpleNamespace(name="broken-plugin"))
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [point] if group == "privkd.backbones" else [])
    with pytest.raises(PrivkdError) as failed:
        plugins.load_plugins()
    text = str(failed.value)
    assert "plugin 'gnn' (broken_plugin.backbones, entry point group 'privkd.backbones')" in text
    assert "torch_geometric" in text and "uninstall broken-plugin" in text
    plugins.load_plugins()  # once per process: a second lookup does not raise again
