"""``privkd data import``: option parsing, the printed summary, and clean failures (exit 2, no traceback, no file)."""

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import MultimodalDataset, read_info


def invoke(*args):
    return CliRunner().invoke(app, ["data", "import", *[str(a) for a in args]])


def user_table(path, n=12):
    rng = np.random.default_rng(0)
    pd.DataFrame({
        "participant": [f"p{i % 4}" for i in range(n)],
        "gsr_mean": rng.normal(size=n), "gsr_peaks": rng.normal(size=n), "au12": rng.normal(size=n),
        "valence": rng.normal(size=n), "arousal": rng.normal(size=n),
    }).to_csv(path, index=False)


def test_table_with_regex_modalities_and_two_regression_targets(tmp_path):
    user_table(tmp_path / "t.csv")
    result = invoke("table", tmp_path / "t.csv", tmp_path / "t.h5", "--subject-column", "participant",
                    "--label", "valence", "--label", "arousal", "--modality", "eda=^gsr_", "--modality", "face=^au",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    info = read_info(tmp_path / "t.h5")
    assert info.task == "regression" and info.target_names == ["valence", "arousal"]
    assert {name: m.sample_shape for name, m in info.modalities.items()} == {"eda": (2,), "face": (1,)}
    assert "wrote" in result.output and "eda" in result.output


def test_table_import_and_info_print_the_grouping_and_the_feature_columns(tmp_path):
    user_table(tmp_path / "t.csv", n=40)
    result = invoke("table", tmp_path / "t.csv", tmp_path / "t.h5", "--subject-column", "participant",
                    "--label", "valence", "--label", "arousal", "--modality", "eda=^gsr_", "--modality", "face=^au",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    grouping = lines.index("Modality grouping by regular expression (2 modalities):")
    assert lines[grouping + 1:grouping + 3] == ["  eda: 2 columns (gsr_mean, gsr_peaks), pattern ^gsr_",
                                                "  face: 1 column (au12), pattern ^au"]
    listing = "Feature columns: eda = [gsr_mean, gsr_peaks]; face = [au12]"  # was printed as "eda = ; face = "
    assert listing in result.output
    assert "Subjects: 4, 10 samples per subject" in lines and "  ids: p0, p1, p2, p3" in lines
    info = CliRunner().invoke(app, ["data", "info", str(tmp_path / "t.h5")])
    assert info.exit_code == 0 and listing in info.output and "Modality grouping" not in info.output


def test_folder_with_kind_and_rate_options(tmp_path):
    root = tmp_path / "f"
    (root / "ecg").mkdir(parents=True)
    rows = []
    for i in range(6):
        np.save(root / "ecg" / f"s{i}.npy", np.sin(np.arange(64) * (i + 1) / 10.0)[None])
        rows.append({"sample": f"s{i}", "subject": f"p{i % 3}", "label": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    result = invoke("folder", root, tmp_path / "f.h5", "--rate", "ecg=256", "--no-progress")
    assert result.exit_code == 0, result.output
    ds = MultimodalDataset(tmp_path / "f.h5")
    assert ds.info.modalities["ecg"].sampling_rate == 256.0 and ds.info.modalities["ecg"].kind == "signal"
    np.testing.assert_allclose(ds[5].inputs["ecg"].numpy(), np.sin(np.arange(64) * 6 / 10.0)[None], rtol=1e-6)


def test_malformed_option_and_missing_source_exit_2_without_traceback(tmp_path):
    user_table(tmp_path / "t.csv")
    bad_option = invoke("table", tmp_path / "t.csv", tmp_path / "t.h5", "--modality", "eda")
    assert bad_option.exit_code == 2 and "NAME=VALUE" in bad_option.output and "Traceback" not in bad_option.output
    missing = invoke("features", tmp_path / "nowhere", tmp_path / "x.h5")
    assert missing.exit_code == 2 and "nowhere" in missing.output and "Traceback" not in missing.output
    bad_column = invoke("table", tmp_path / "t.csv", tmp_path / "t.h5", "--no-progress")
    assert bad_column.exit_code == 2 and "subject" in bad_column.output
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*.tmp"))
