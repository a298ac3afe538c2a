"""import_biovid on a miniature copy of the BioVid Heat Pain layout (3 subjects x 2 classes x 2 clips)."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from layouts import (
    FS,
    PART_B,
    clip_signals,
    make_biovid_layout,
    stems,
    write_csv,
)

from privkd.data.dataset import MultimodalDataset
from privkd.data.h5format import validate_dataset
from privkd.data.importers.biovid import import_biovid
from privkd.data.importers.media import log_spectrogram
from privkd.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return make_biovid_layout(tmp_path_factory.mktemp("biovid"))


@pytest.fixture(scope="module")
def imported(layout, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "biovid.h5"
    return import_biovid(layout, out, signals=("eda", "ecg", "emg_corrugator"), frames=4, frame_size=16,
                         progress=False)


def test_default_import_shapes_labels_subjects_groups(imported):
    info = validate_dataset(imported)
    assert info.task == "classification" and info.class_names == ["BL1", "PA4"] and info.n_samples == 12
    m = info.modalities
    assert set(m) == {"eda", "ecg", "emg_corrugator", "video"}
    for name in ("eda", "ecg", "emg_corrugator"):
        assert m[name].kind == "spectrogram" and m[name].sample_shape == (1, 65, 93)  # 3 s window at 512 Hz
        assert m[name].sampling_rate == 32.0 and m[name].channel_names == (name,)
    assert m["video"].kind == "video" and m["video"].sample_shape == (3, 4, 16, 16)
    assert m["video"].sampling_rate == pytest.approx(4 / 5.5)
    data = MultimodalDataset(imported)
    expected = list(stems())
    assert data.groups.tolist() == [stem for _, stem, _ in expected]
    assert data.subjects.tolist() == [subject for subject, _, _ in expected]
    assert data.labels.tolist() == [0, 0, 1, 1] * 3 and data.labels.dtype == np.int64
    with h5py.File(imported) as h5:
        assert h5["modalities/video"].dtype == np.uint8
        assert "part B" in h5.attrs["description"] and "BL1, PA4" in h5.attrs["description"]
        assert "2-5 s" in h5.attrs["description"] and "4 frames" in h5.attrs["description"]


def test_values_match_an_independent_computation(imported):
    data = MultimodalDataset(imported)
    for row in (0, 7):
        _, stem, level = list(stems())[row]
        signals = clip_signals(stem, int(5.5 * FS), PART_B)
        item = data[row]
        for name, column in (("eda", 0), ("ecg", 1), ("emg_corrugator", 3)):
            # 2.0-5.0 s = samples 1024..2560, as written (6 decimals) and stored (float32)
            window = np.round(signals[2 * FS:5 * FS, column], 6).astype(np.float32)
            expected = log_spectrogram(window, FS, nperseg=64, noverlap=48, nfft=128)
            np.testing.assert_allclose(item.inputs[name].numpy()[0], expected, atol=1e-4)
        video = item.inputs["video"].numpy() * 255  # 4 frames of a 3 s clip: 2 in each half
        means = video.mean(axis=(0, 2, 3))
        np.testing.assert_allclose(means, [level, level, level + 60, level + 60], atol=2.5)


def test_raw_signals_and_signal_only(layout, tmp_path):
    out = import_biovid(layout, tmp_path / "raw.h5", classes=("PA4", "BL1"), signals=("gsr",), signal_format="raw",
                        signal_window=(0.5, 1.5), video=False, progress=False)
    info = validate_dataset(out)
    assert set(info.modalities) == {"eda"} and info.modalities["eda"].kind == "signal"
    assert info.modalities["eda"].sample_shape == (1, 512) and info.modalities["eda"].sampling_rate == 512.0
    data = MultimodalDataset(out)
    assert data.labels.tolist() == [1, 1, 0, 0] * 3  # index in the given class order
    _, stem, _ = list(stems())[2]
    expected = np.round(clip_signals(stem, 2816, PART_B)[256:768, 0], 6)
    np.testing.assert_allclose(data[2].inputs["eda"].numpy()[0], expected, atol=1e-5)


def test_video_window_selects_the_span(layout, tmp_path):
    out = import_biovid(layout, tmp_path / "v.h5", signals=(), frames=3, frame_size=8, video_window=(1.5, 3.0),
                        progress=False)
    data = MultimodalDataset(out)
    assert set(data.info.modalities) == {"video"}
    level = next(iter(stems()))[2]
    np.testing.assert_allclose(data[0].inputs["video"].numpy().mean(axis=(0, 2, 3)) * 255, level + 60, atol=2.5)


def assert_fails_cleanly(root: Path, out: Path, match: str, error=DatasetError, **options) -> DatasetError:
    with pytest.raises(error, match=match) as caught:
        import_biovid(root, out, progress=False, **options)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return caught.value


def test_missing_video_or_csv_is_named(tmp_path):
    root = make_biovid_layout(tmp_path / "src", ("gsr", "ecg", "emg_trapezius"))
    subject, stem, _ = list(stems())[5]
    (root / "video" / subject / f"{stem}.mp4").unlink()
    err = assert_fails_cleanly(root, tmp_path / "o.h5", stem + ".mp4")
    assert "video missing" in err.problem and err.file == root / "video" / subject / f"{stem}.mp4"
    # without video the same layout imports
    assert import_biovid(root, tmp_path / "ok.h5", video=False, progress=False).exists()
    (root / "biosignals_filtered" / subject / f"{stem}_bio.csv").unlink()
    other_subject, other, _ = list(stems())[3]
    (root / "biosignals_filtered" / other_subject / f"{other}_bio.csv").unlink()
    err = assert_fails_cleanly(root, tmp_path / "o.h5", other + "_bio.csv")
    assert "biosignal file missing" in err.problem


def test_part_b_signal_on_part_a_data(tmp_path):
    root = make_biovid_layout(tmp_path / "src", ("gsr", "ecg", "emg_trapezius"))
    err = assert_fails_cleanly(root, tmp_path / "o.h5", r"_bio\.csv.*emg_zygomaticus.*available columns",
                               signals=("eda", "emg_zygomaticus"))
    assert err.field == "emg_zygomaticus" and "part-B" in err.problem
    assert "'time', 'gsr', 'ecg', 'emg_trapezius'" in err.problem


def test_time_step_must_match_the_rate(tmp_path):
    root = make_biovid_layout(tmp_path / "src", ("gsr",), time_scale=1e6)
    err = assert_fails_cleanly(root, tmp_path / "o.h5", "sampling_rate=", sampling_rate=1000.0, video=False)
    assert err.file.name.endswith("_bio.csv") and err.field == "time" and "512 Hz if in microseconds" in err.problem
    assert "sampling_rate=512" in err.fix
    # seconds and milliseconds are accepted too
    for scale in (1.0, 1e3):
        ok = make_biovid_layout(tmp_path / f"s{scale:g}", ("gsr",), time_scale=scale)
        assert import_biovid(ok, tmp_path / f"s{scale:g}.h5", video=False, progress=False).exists()


def test_short_csv_and_bad_values(tmp_path):
    root = make_biovid_layout(tmp_path / "src", ("gsr",))
    subject, stem, _ = list(stems())[4]
    csv = root / "biosignals_filtered" / subject / f"{stem}_bio.csv"
    write_csv(csv, stem, ("gsr",), seconds=4.0)
    err = assert_fails_cleanly(root, tmp_path / "o.h5", f"{stem}_bio.csv.*too few for the signal window 2-5 s")
    assert err.file == csv
    write_csv(csv, stem, ("gsr",))
    lines = csv.read_text().splitlines()
    lines[10] = lines[10].split("\t")[0] + "\tabc"
    csv.write_text("\n".join(lines) + "\n")
    assert_fails_cleanly(root, tmp_path / "o.h5", f"{stem}_bio.csv")


def test_bad_options(layout, tmp_path):
    assert_fails_cleanly(layout, tmp_path / "o.h5", "unknown BioVid signal", ConfigError, signals=("eeg",))
    assert_fails_cleanly(layout, tmp_path / "o.h5", "twice", ConfigError, signals=("eda", "gsr"))
    assert_fails_cleanly(layout, tmp_path / "o.h5", "unknown or no classes", ConfigError, classes=("BL1", "PA9"))
    assert_fails_cleanly(tmp_path / "nowhere", tmp_path / "o.h5", "nowhere")


def test_undecodable_video_leaves_no_file(tmp_path):
    root = make_biovid_layout(tmp_path / "src", ("gsr",))
    subject, stem, _ = list(stems())[-1]
    (root / "video" / subject / f"{stem}.mp4").write_bytes(b"garbage" * 20)
    assert_fails_cleanly(root, tmp_path / "o.h5", f"{stem}.mp4", frames=2, frame_size=8)
