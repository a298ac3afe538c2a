"""``privkd data synth biovid``: a BioVid-shaped file that validates, depends only on its seed, and
trains under a shipped BioVid recipe (tiny sizes here; the defaults are BioVid's 87 × 100 clips)."""

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import read_info, validate_dataset
from privkd.data.importers.biovid import CLIP_SECONDS
from privkd.data.synth_biovid import write_synthetic_biovid
from privkd.errors import ConfigError

TINY = {"subjects": 3, "clips": 4, "frames": 4, "size": 16, "progress": False}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def contents(path) -> dict:
    """Every array and attribute of the file, for comparing two files' content."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out.update({f"attr:{k}": v for k, v in h5.attrs.items()})
        for name, ds in h5["modalities"].items():
            out.update({f"attr:{name}:{k}": v for k, v in ds.attrs.items()})
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_cli_writes_a_valid_file_with_biovid_rates_and_reports_size_and_time(tmp_path):
    out = tmp_path / "synth.h5"
    result = invoke("data", "synth", "biovid", out, "--subjects", 3, "--clips", 4, "--frames", 4, "--size", 16,
                    "--no-progress")
    assert "MiB written in" in result.output and "12 clips" in result.output
    info = validate_dataset(out)
    assert info.n_samples == 12 and len(set(info.subjects)) == 3
    assert list(info.class_names) == ["BL1", "PA1", "PA2", "PA3", "PA4"]
    assert info.modalities["video"].sample_shape == (3, 4, 16, 16)
    assert info.modalities["video"].kind == "video"
    assert info.modalities["video"].sampling_rate == pytest.approx(4 / CLIP_SECONDS)
    for name in ("eda", "ecg", "emg_trapezius"):
        assert info.modalities[name].sample_shape == (1, 3 * 512)  # the 2-5 s window at 512 Hz
        assert info.modalities[name].sampling_rate == 512
    with h5py.File(out, "r") as h5:
        assert h5["modalities/video"].dtype == np.uint8
        assert list(h5["labels"][:4]) == [0, 1, 2, 3]  # clips cycle through the classes


def test_same_seed_same_content_other_seed_other_content(tmp_path):
    first, again, other = (tmp_path / f"{n}.h5" for n in ("first", "again", "other"))
    write_synthetic_biovid(first, seed=0, **TINY)
    write_synthetic_biovid(again, seed=0, **TINY)
    write_synthetic_biovid(other, seed=1, **TINY)
    assert same(contents(first), contents(again))
    a, b = contents(first), contents(other)
    assert not np.array_equal(a["modalities/video"], b["modalities/video"])
    assert not np.array_equal(a["modalities/eda"], b["modalities/eda"])


def test_spectrogram_signals_match_the_importer_layout(tmp_path):
    result = write_synthetic_biovid(tmp_path / "b.h5", classes=("BL1", "PA4"), signals=("emg_corrugator",),
                                    signal_format="spectrogram", **TINY)
    info = read_info(result.path)
    assert info.modalities["emg_corrugator"].kind == "spectrogram"
    assert info.modalities["emg_corrugator"].sample_shape[:2] == (1, 65)
    assert result.bytes == result.path.stat().st_size and result.seconds > 0


def test_bad_options_are_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError):
        write_synthetic_biovid(tmp_path / "x.h5", signals=("heartbeat",), **TINY)
    with pytest.raises(ConfigError):
        write_synthetic_biovid(tmp_path / "x.h5", classes=("BL1",), **TINY)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow  # a few minutes on 2 shared cores, as the recipe smoke tests
def test_biovid_recipe_trains_on_the_synthetic_file(tmp_path, monkeypatch):
    """biovid_b_pkdot (R3D-18 on the video, ResNet-18 on the EMG spectrogram) reads the file as it is."""
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "biovid_b.h5"
    invoke("data", "synth", "biovid", data, "--subjects", 3, "--clips", 4, "--frames", 4, "--size", 16,
           "--classes", "BL1,PA4", "--signals", "emg_corrugator", "--signal-format", "spectrogram", "--no-progress")
    settings = [f"data.path={data}", "training.epochs=1", "training.limit_train_batches=1", "training.batch_size=4",
                "structural.k=2", "training.progress_bar=false", "evaluation.max_folds=1", "evaluation.n_folds=3",
                "evaluation.n_val_subjects=1", "teacher.tnet_refit_epochs=1"]
    invoke("run", "biovid_b_pkdot", "--out", tmp_path / "runs",
           *[arg for item in settings for arg in ("--set", item)])
    (run_dir,) = (tmp_path / "runs").glob("*-biovid_b_pkdot")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["methods"]) == {"baseline", "teacher", "pkdot"}
