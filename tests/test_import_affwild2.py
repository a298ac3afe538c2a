"""import_affwild2 on a miniature copy of the ABAW valence/arousal layout."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from layouts import (
    CLIP,
    FPS,
    SR,
    annotations,
    audio_of,
    frame_level,
    make_affwild2_layout,
    write_wav,
)
from scipy.io import wavfile

from privkd.data.dataset import MultimodalDataset
from privkd.data.h5format import validate_dataset
from privkd.data.importers.affwild2 import import_affwild2
from privkd.data.importers.media import log_mel_spectrogram
from privkd.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return make_affwild2_layout(tmp_path_factory.mktemp("affwild2"))


@pytest.fixture(scope="module")
def imported(layout, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "affwild2.h5"
    return import_affwild2(layout, out, clip_frames=CLIP, frame_size=16, n_mels=32, progress=False)


def test_clips_targets_subjects_splits(imported):
    info = validate_dataset(imported)
    assert info.task == "regression" and info.target_names == ["valence", "arousal"]
    # 1-30-1280x720: 14 frames -> clips at 0, 4, 8 (12..13 is a partial clip); video10_left: clip 0 only;
    # 118: clip 0 only
    assert info.n_samples == 5
    m = info.modalities
    assert m["video"].kind == "video" and m["video"].sample_shape == (3, CLIP, 16, 16)
    assert m["video"].sampling_rate == FPS
    # 4 frames at 30 fps = 0.1333 s -> 1 + 13 frames of 10 ms
    assert m["audio"].kind == "spectrogram" and m["audio"].sample_shape == (1, 32, 14)
    assert m["audio"].sampling_rate == pytest.approx(100.0)
    data = MultimodalDataset(imported)
    names = ["1-30-1280x720"] * 3 + ["video10_left", "118"]
    assert data.subjects.tolist() == names and data.groups.tolist() == names
    with h5py.File(imported) as h5:
        assert h5["splits"].asstr()[()].tolist() == ["train"] * 4 + ["validation"]
        assert h5["modalities/video"].dtype == np.uint8
        assert "Aff-Wild2" in h5.attrs["description"]
    # targets: mean of the valid rows of each clip, computed by hand
    values = annotations("1-30-1280x720", 14)
    expected = np.stack([values[[0, 3]].mean(axis=0), values[4:8].mean(axis=0), values[8:12].mean(axis=0),
                         annotations("video10_left", 9)[0:4].mean(axis=0), annotations("118", 8)[0:4].mean(axis=0)])
    np.testing.assert_allclose(data.labels, expected, atol=1e-6)


def test_frames_and_audio_match_an_independent_computation(imported):
    data = MultimodalDataset(imported)
    video = data[1].inputs["video"].numpy() * 255  # clip of frames 5..8; frame 6 (index 5) is missing
    levels = video.mean(axis=(0, 2, 3))
    # missing 00006.jpg is filled with the nearest frame, 00005 (tie with 00007 -> the earlier one)
    expected = [frame_level("1-30-1280x720", n) for n in (5, 5, 7, 8)]
    np.testing.assert_allclose(levels, expected, atol=2.0)
    # audio of clip 1 of 1-30-1280x720: starts at frame 4 = 0.1333 s, frames centred on the 10 ms grid
    audio = (audio_of("1-30-1280x720", 14 / FPS) * 32767).astype(np.int16).astype(np.float32) / 32768
    start = round(4 / FPS * SR) - 200
    segment = np.zeros(13 * 160 + 400, dtype=np.float32)
    available = audio[start:start + len(segment)]
    segment[:len(available)] = available
    expected_mel = log_mel_spectrogram(segment, SR, n_mels=32, n_fft=400, hop_length=160, n_frames=14, fmax=8000)
    np.testing.assert_allclose(data[1].inputs["audio"].numpy()[0], expected_mel, atol=1e-4)
    # the _left video uses the shared video10.wav: its spectrogram differs from the other videos'
    assert not np.allclose(data[3].inputs["audio"].numpy(), data[0].inputs["audio"].numpy(), atol=0.1)


def test_frame_step_overlap_and_sets(layout, tmp_path):
    out = import_affwild2(layout, tmp_path / "o.h5", clip_frames=3, frame_step=2, clip_hop=2, frame_size=8,
                          n_mels=16, audio_frames=5, sets=("Train_Set",), progress=False)
    data = MultimodalDataset(out)
    values = annotations("1-30-1280x720", 14)
    # clips start at 0, 2, ..., 8 (span 5 frames, 14 rows); clip at 0 uses rows 0, 2, 4 with row 2 invalid
    first = data.groups.tolist().count("1-30-1280x720")
    assert first == 5 and data.info.modalities["audio"].sample_shape == (1, 16, 5)
    np.testing.assert_allclose(data.labels[0], values[[0, 4]].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(data.labels[1], values[[4, 6]].mean(axis=0), atol=1e-6)  # rows 2, 4, 6
    assert data.info.modalities["video"].sampling_rate == FPS / 2
    with h5py.File(out) as h5:
        assert set(h5["splits"].asstr()[()]) == {"train"}


def assert_fails_cleanly(root: Path, out: Path, match: str, error=DatasetError, **options):
    with pytest.raises(error, match=match) as caught:
        import_affwild2(root, out, clip_frames=CLIP, frame_size=8, n_mels=16, progress=False, **options)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return caught.value


def test_malformed_annotation_line(tmp_path):
    root = make_affwild2_layout(tmp_path / "src")
    path = root / "annotations" / "VA_Estimation_Challenge" / "Validation_Set" / "118.txt"
    lines = path.read_text().splitlines()
    lines[3] = "0.5;0.2"
    path.write_text("\n".join(lines) + "\n")
    err = assert_fails_cleanly(root, tmp_path / "o.h5", r"118\.txt.*line 4")
    assert err.file == path and err.field == "line 4"
    lines[3] = "0.5,7"
    path.write_text("\n".join(lines) + "\n")
    assert_fails_cleanly(root, tmp_path / "o.h5", r"118\.txt.*line 4.*outside \[-1, 1\]")
    path.write_text("v,a\n0.1,0.2\n")
    assert_fails_cleanly(root, tmp_path / "o.h5", r"118\.txt.*line 1.*valence,arousal")


def test_missing_frame_folder_or_wav(tmp_path):
    root = make_affwild2_layout(tmp_path / "src")
    (root / "audio" / "video10.wav").rename(root / "audio" / "elsewhere.wav")
    err = assert_fails_cleanly(root, tmp_path / "o.h5", r"audio[/\\]video10\.wav.*not found.*ffmpeg")
    assert err.file == root / "audio" / "video10.wav"
    (root / "audio" / "elsewhere.wav").rename(root / "audio" / "video10.wav")
    frames = root / "cropped_aligned" / "118"
    for jpg in frames.iterdir():
        jpg.unlink()
    frames.rmdir()
    err = assert_fails_cleanly(root, tmp_path / "o.h5", r"cropped_aligned[/\\]118.*frame folder not found")
    assert err.file == frames


def test_bad_wav_and_bad_jpeg_leave_no_file(tmp_path):
    root = make_affwild2_layout(tmp_path / "src")
    wavfile.write(root / "audio" / "118.wav", 8000, np.zeros(800, np.int16))
    assert_fails_cleanly(root, tmp_path / "o.h5", r"118\.wav.*8000 Hz")
    write_wav(root, "118", 8 / FPS)
    (root / "cropped_aligned" / "118" / "00002.jpg").write_bytes(b"not a jpeg")
    assert_fails_cleanly(root, tmp_path / "o.h5", r"00002\.jpg")


def test_bad_options(layout, tmp_path):
    with pytest.raises(ConfigError, match="clip_frames"):
        import_affwild2(layout, tmp_path / "o.h5", clip_frames=0, progress=False)
    with pytest.raises(DatasetError, match="Test_Set"):
        import_affwild2(layout, tmp_path / "o.h5", sets=("Test_Set",), progress=False)
    with pytest.raises(ConfigError, match="no frame rate given for the video '118'"):
        import_affwild2(layout, tmp_path / "o.h5", fps={"1-30-1280x720": 30.0, "video10": 25.0},
                        clip_frames=CLIP, progress=False)
    assert not (tmp_path / "o.h5").exists()
    # per-video rates; <name> covers <name>_left
    out = import_affwild2(layout, tmp_path / "ok.h5", fps={"1-30-1280x720": 30.0, "video10": 25.0, "118": 30.0},
                          clip_frames=CLIP, frame_size=8, n_mels=16, progress=False)
    assert MultimodalDataset(out).info.n_samples == 5
