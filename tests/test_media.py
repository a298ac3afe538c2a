"""Decoding and transforms of privkd.data.importers.media, on tiny generated files."""

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from privkd.data.importers.media import (
    hz_to_mel,
    load_image,
    log_mel_spectrogram,
    log_spectrogram,
    mel_filterbank,
    mel_to_hz,
    read_wav,
    sample_video_frames,
    segment_indices,
)
from privkd.errors import DatasetError

av = pytest.importorskip("av")
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
# largest per-pixel error of a flat grey frame through the codec and the YUV round trip
TOLERANCE = 1.5 if CODEC == "libx264" else 4.5
STEP = 5  # grey level per frame index


def write_indexed_video(path: Path, n: int, *, fps: int = 25, width: int = 32, height: int = 24,
                        frame=None) -> Path:
    """A video whose frame ``i`` is flat grey ``STEP * i`` (or ``frame(i)`` when given)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            image = frame(i) if frame is not None else np.full((height, width, 3), STEP * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_indices(frames: np.ndarray) -> np.ndarray:
    """Frame index each output frame came from, read back from its grey level (checked against codec noise)."""
    levels = frames.astype(np.float64).mean(axis=(0, 2, 3))
    indices = np.rint(levels / STEP)
    assert np.abs(levels - STEP * indices).max() <= TOLERANCE, levels
    return indices.astype(int)


def test_segment_indices_take_the_middle_of_equal_segments():
    assert segment_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert segment_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # too few frames: repeats
    assert segment_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_video_sampling_returns_the_tsn_frames(tmp_path):
    path = write_indexed_video(tmp_path / "clip.mp4", 50)  # 2 s at 25 fps, grey = 5 * index
    frames = sample_video_frames(path, 5, 16)
    assert frames.shape == (3, 5, 16, 16) and frames.dtype == np.uint8
    assert decoded_indices(frames).tolist() == [5, 15, 25, 35, 45]
    # a time span: frames 25..49 lie in [1.0, 2.0) s, segments of 5 -> middles 27, 32, ...
    assert decoded_indices(sample_video_frames(path, 5, 16, start_s=1.0, end_s=2.0)).tolist() == [27, 32, 37, 42, 47]
    # frames 10..14 in [0.4, 0.6): 4 segments of 1.25 frames; 3 frames for 8 outputs: repeats
    assert decoded_indices(sample_video_frames(path, 4, 8, start_s=0.4, end_s=0.6)).tolist() == [10, 11, 13, 14]
    repeated = sample_video_frames(path, 8, 8, start_s=0.4, end_s=0.52)
    assert decoded_indices(repeated).tolist() == [10, 10, 10, 11, 11, 12, 12, 12]


def test_video_frames_are_resized_and_center_cropped(tmp_path):
    def frame(i):  # 32x24: red left 4 columns, blue right 4 columns, green centre
        image = np.zeros((24, 32, 3), np.uint8)
        image[:, :4, 0] = 255
        image[:, 28:, 2] = 255
        image[:, 4:28, 1] = 255
        return image

    path = write_indexed_video(tmp_path / "wide.mp4", 10, frame=frame)
    frames = sample_video_frames(path, 2, 24).astype(float)  # shorter side already 24: crop columns 4..27
    assert frames.shape == (3, 2, 24, 24)
    interior = frames[:, :, :, 2:-2]  # chroma subsampling blurs the outermost columns
    assert interior[1].min() > 200 and interior[0].max() < 60 and interior[2].max() < 60
    small = sample_video_frames(path, 1, 6).astype(float)  # resized to 8x6, then cropped to 6x6
    assert small.shape == (3, 1, 6, 6) and small[1, 0, :, 1:-1].mean() > 180


def test_video_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DatasetError, match="broken.mp4"):
        sample_video_frames(broken, 4, 8)
    with pytest.raises(DatasetError, match="absent.mp4"):
        sample_video_frames(tmp_path / "absent.mp4", 4, 8)
    short = write_indexed_video(tmp_path / "short.mp4", 10)  # 0.4 s
    with pytest.raises(DatasetError, match=r"short.mp4.*no video frame in \[1.0, 2.0\)"):
        sample_video_frames(short, 4, 8, start_s=1.0, end_s=2.0)


def test_load_image_crops_to_a_square(tmp_path):
    from PIL import Image

    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = (0, 255, 0)  # the central 20x20 square is green
    Image.fromarray(image).save(tmp_path / "f.png")
    out = load_image(tmp_path / "f.png", 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.uint8
    assert out[1].min() == 255 and out[0].max() == 0
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.raises(DatasetError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg", 20)


@pytest.mark.parametrize("dtype, scale", [(np.int16, 32767), (np.int32, 2**31 - 1), (np.float32, 1.0)])
def test_read_wav_scales_and_mixes_to_mono(tmp_path, dtype, scale):
    t = np.arange(800) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.ones_like(t)
    wavfile.write(tmp_path / "a.wav", 8000, (np.stack([left, right], axis=1) * scale).astype(dtype))
    audio, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and audio.dtype == np.float32 and audio.shape == (800,)
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-4)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000")
    with pytest.raises(DatasetError, match="bad.wav"):
        read_wav(tmp_path / "bad.wav")


def test_log_spectrogram_peaks_at_the_sine_frequency():
    fs = 512.0
    t = np.arange(int(3 * fs)) / fs
    spec = log_spectrogram(np.sin(2 * np.pi * 40.0 * t), fs, nperseg=64, noverlap=48, nfft=128)
    assert spec.shape == (65, 1 + (1536 - 64) // 16) and spec.dtype == np.float32
    # bin k is k * fs / nfft = 4 k Hz, so 40 Hz is bin 10 (with 1000 Hz assumed it would be bin 5)
    assert np.bincount(spec.argmax(axis=0)).argmax() == 10
    assert abs(spec.mean()) < 1e-4 and abs(spec.std() - 1) < 1e-3
    flat = log_spectrogram(np.full(256, 3.0), fs)
    assert np.isfinite(flat).all() and np.all(flat == 0)


def test_mel_filterbank_is_sane():
    sr, n_fft = 16000, 400
    bank = mel_filterbank(sr, n_fft, 64)
    assert bank.shape == (64, 201) and bank.min() >= 0 and bank.max() <= 1
    assert (bank.sum(axis=1) > 0).all()  # no empty band
    assert (np.diff(bank.argmax(axis=1)) >= 0).all()  # band centres ascend
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([0.0, 1000.0, 8000.0])), [0.0, 1000.0, 8000.0])
    assert abs(float(hz_to_mel(1000.0)) - 1000.0) < 0.1  # HTK: 1 kHz is ~1000 mel


def test_log_mel_of_a_tone_peaks_in_the_band_holding_it():
    sr, n_fft, hop = 16000, 400, 160
    t = np.arange(sr // 2) / sr
    mel = log_mel_spectrogram(np.sin(2 * np.pi * 1000.0 * t), sr, n_mels=64, n_fft=n_fft, hop_length=hop,
                              n_frames=40)
    assert mel.shape == (64, 40) and mel.dtype == np.float32
    edges = mel_to_hz(np.linspace(0, hz_to_mel(sr / 2), 66))
    band = int(np.bincount(mel.argmax(axis=0)).argmax())
    assert edges[band] < 1000.0 < edges[band + 2]  # 1 kHz lies inside the winning triangle
    centres = edges[1:-1]
    assert band == int(np.argmin(np.abs(centres - 1000.0)))
    # fixed width: short audio is padded, long audio cropped
    assert log_mel_spectrogram(np.zeros(100), sr, n_fft=n_fft, hop_length=hop, n_frames=7).shape == (64, 7)
    assert np.all(log_mel_spectrogram(np.zeros(100), sr, n_fft=n_fft, hop_length=hop, n_frames=7) == 0)
