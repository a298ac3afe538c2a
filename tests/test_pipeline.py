"""End to end: the CLI's quick demo trains all three methods and writes a complete run."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from privkd.cli import app


def test_quick_demo_writes_summary_for_all_methods(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = list(tmp_path.iterdir())
    assert run_dir.name.endswith("-demo")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "classification"
    assert list(summary["methods"]) == ["baseline", "teacher", "pkdot"]
    for metrics in summary["methods"].values():
        for name in ("accuracy", "f1"):
            assert len(metrics[name]["per_fold"]) == 2
            assert 1 / 7 < metrics[name]["mean"] <= 1.0  # better than chance on 7 balanced classes
    assert "| pkdot ‡ |" in (run_dir / "summary.md").read_text()  # ‡: departs from its paper (student.hallucinate)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["epochs"] == 3
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["packages"]["torch"]
    assert environment["cpu"] and environment["cpu_capability"]  # what moves results across machines
    folds = json.loads((run_dir / "folds.json").read_text())
    assert all(not set(f["test"]) & set(f["train"] + f["val"]) for f in folds)


def test_second_run_never_overwrites_the_first(run_config):
    tiny = {"name": "tiny", "methods": ["baseline"], "evaluation": {"max_folds": 1}}
    runs = [run_config(tiny, "--set", "training.epochs=1", "--set", "training.progress_bar=false") for _ in range(2)]
    assert all(result.exit_code == 0 for result, _ in runs)
    assert runs[0][1] != runs[1][1] and (runs[0][1] / "summary.json").is_file()


def test_config_error_exits_2_with_message_and_no_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epocs: 3\n")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "training.epocs" in result.output and "allowed keys" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_unknown_modality_names_dataset_fields(run_config):
    result, run_dir = run_config({"data": {"prevalent": ["camera"]}})
    assert result.exit_code == 2 and run_dir is None
    assert "data.prevalent" in result.output and "accelerometer" in result.output


@pytest.mark.slow
def test_compare_config_trains_every_paper_row(run_config):
    """The shipped comparison (MT-PKDOT Tables II and VI) on one fold and one epoch: every row
    trains through the same CLI and lands in the summary."""
    from privkd.config.loading import load_config
    from privkd.config.parse import config_to_dict

    values = config_to_dict(load_config("compare"))
    values["evaluation"]["max_folds"] = 1
    values["training"].update(epochs=1, progress_bar=False)
    values["teacher"]["tnet_refit_epochs"] = 2
    result, run_dir = run_config(values)
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["methods"]) == [
        "baseline", "teacher", "mt_teacher", "pkdot", "mtpkdot", "p2p_cosine", "p2p_mse", "p2p_kl", "pkdot_paired",
        "mtpkdot_no_centroid",
    ]
    assert all(row["accuracy"]["mean"] > 1 / 7 for row in summary["methods"].values())
