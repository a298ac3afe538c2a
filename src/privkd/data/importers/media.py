"""Decoding and transforms shared by the media importers (BioVid, Affwild2).

* :func:`sample_video_frames` decodes a video file with PyAV and returns a fixed number
  of square frames chosen TSN-style (one per equal segment), as uint8 ``(3, T, S, S)``.
* :func:`load_image` reads one still frame (a JPEG of a face crop) the same way.
* :func:`read_wav` reads a wav file as float32 mono in [-1, 1].
* :func:`log_spectrogram` (biosignals) and :func:`log_mel_spectrogram` (audio) turn a 1-D
  signal into a log-power time-frequency image normalised to zero mean, unit std.

Frames are always made square the same way: resized so that the *shorter* side equals
``frame_size`` (aspect ratio kept) and then center-cropped to ``frame_size x frame_size``.
This keeps the middle of the picture, which suits BioVid (faces roughly centred in a
landscape frame) and is a no-op on Affwild2's square face crops.

Every failure to read a source file raises a :class:`~privkd.errors.DatasetError` that
names the file and says what to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import signal as sps
from scipy.io import wavfile

from privkd.data.importers.common import source_error
from privkd.errors import DatasetError
from privkd.optional import require

__all__ = [
    "frames_for",
    "hz_to_mel",
    "load_image",
    "log_mel_spectrogram",
    "log_spectrogram",
    "mel_filterbank",
    "mel_to_hz",
    "read_wav",
    "sample_video_frames",
    "segment_indices",
    "spectrogram_shape",
]

# Dynamic range kept by the log transforms: power below max * _FLOOR (80 dB under the peak)
# is clamped there, so silent stretches or zero-padding cannot produce huge negative outliers.
_FLOOR = 1e-8


# ----------------------------------------------------------------------------- frames


def segment_indices(n_available: int, n_frames: int) -> np.ndarray:
    """TSN-style deterministic sampling: the middle index of each of ``n_frames`` equal segments.

    ``floor((j + 0.5) * n_available / n_frames)`` for ``j = 0 .. n_frames - 1``. With fewer
    available frames than requested, indices repeat (each frame is used for about
    ``n_frames / n_available`` consecutive outputs), so every clip yields the same shape.
    """
    if n_available < 1 or n_frames < 1:
        raise ValueError(f"need at least one available and one requested frame, got {n_available}, {n_frames}")
    j = np.arange(n_frames, dtype=np.float64)
    return np.minimum(np.floor((j + 0.5) * n_available / n_frames).astype(np.int64), n_available - 1)


def _resized_size(width: int, height: int, frame_size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``frame_size``."""
    if width <= height:
        return frame_size, max(frame_size, round(height * frame_size / width))
    return max(frame_size, round(width * frame_size / height)), frame_size


def _center_crop(rgb: np.ndarray, frame_size: int) -> np.ndarray:
    """Center ``frame_size x frame_size`` crop of an ``(H, W, 3)`` image, returned as ``(3, S, S)``."""
    h, w = rgb.shape[:2]
    top, left = (h - frame_size) // 2, (w - frame_size) // 2
    return np.ascontiguousarray(rgb[top:top + frame_size, left:left + frame_size].transpose(2, 0, 1))


def load_image(path: str | Path, frame_size: int) -> np.ndarray:
    """One image file as uint8 ``(3, frame_size, frame_size)``: shorter side resized, center-cropped."""
    Image = require("PIL.Image", "video", "reading image frames")

    path = Path(path)
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            size = _resized_size(image.width, image.height, frame_size)
            if size != (image.width, image.height):
                image = image.resize(size, Image.Resampling.BILINEAR)
            rgb = np.asarray(image, dtype=np.uint8)
    except (OSError, Image.UnidentifiedImageError, ValueError) as exc:
        raise source_error(path, f"cannot read the image ({exc})",
                           "replace the file with a readable JPEG/PNG, or delete it (missing frames are "
                           "filled with the nearest available one)") from exc
    return _center_crop(rgb, frame_size)


def _video_error(path: Path, problem: str) -> DatasetError:
    return source_error(path, problem, "check that the file is a complete, playable video "
                        "(e.g. `ffprobe FILE`); re-copy or re-download it if it is truncated")


def _frame_keys(path: Path, *, decode: bool) -> tuple[list[int | None], float, float]:
    """Presentation timestamps of every frame (decode order), the stream time base and frame rate.

    Without ``decode`` only the packets are read (cheap); with it every frame is decoded,
    which also covers containers whose packets carry no timestamps.
    """
    av = require("av", "video", "decoding videos")

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise _video_error(path, "the file has no video stream")
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        if decode:
            keys = [frame.pts for frame in container.decode(stream)]
        else:
            keys = [packet.pts for packet in container.demux(stream) if packet.size > 0]
    return keys, time_base, rate


def _decode_selected(path: Path, wanted: dict[int, list[int]], by_index: bool, n_frames: int,
                     frame_size: int) -> tuple[np.ndarray, set[int]]:
    """Decode the frames whose key (pts, or decode index with ``by_index``) is in ``wanted``.

    Returns the output array and the keys that were never found.
    """
    av = require("av", "video", "decoding videos")

    out = np.empty((3, n_frames, frame_size, frame_size), dtype=np.uint8)
    remaining = dict(wanted)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            key = index if by_index else frame.pts
            positions = remaining.pop(key, None)  # type: ignore[arg-type]
            if positions is None:
                continue
            width, height = _resized_size(frame.width, frame.height, frame_size)
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
            square = _center_crop(rgb, frame_size)
            for position in positions:
                out[:, position] = square
            if not remaining:
                break
    return out, set(remaining)


def sample_video_frames(path: str | Path, n_frames: int, frame_size: int, *,
                        start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode ``n_frames`` frames of a video as uint8 ``(3, n_frames, frame_size, frame_size)``.

    The frames whose presentation time (measured from the first frame) lies in
    ``[start_s, end_s)`` (the whole video by default) are split into ``n_frames`` equal
    segments and the middle frame of each is taken (TSN-style, deterministic; see
    :func:`segment_indices`). A clip with fewer frames than ``n_frames`` repeats frames.
    Each frame is resized so that its shorter side is ``frame_size`` and center-cropped
    to a square. Only the selected frames are converted to RGB, and decoding stops after
    the last of them.

    Raises :class:`~privkd.errors.DatasetError` naming ``path`` when the file cannot be
    opened or decoded, or has no frame in the requested span.
    """
    av = require("av", "video", "decoding videos")

    path = Path(path)
    if n_frames < 1 or frame_size < 1:
        raise ValueError(f"n_frames and frame_size must be positive, got {n_frames} and {frame_size}")
    if not path.is_file():
        raise source_error(path, "video file not found", "check the dataset root and that the file was extracted")
    for decode in (False, True):
        try:
            keys, time_base, rate = _frame_keys(path, decode=decode)
        except av.FFmpegError as exc:
            raise _video_error(path, f"cannot open or read the video ({exc})") from exc
        by_index = not keys or any(k is None for k in keys)
        if by_index and not decode:
            continue  # packets without timestamps: count decoded frames instead
        if by_index:
            if not rate and (start_s is not None or end_s is not None):
                raise _video_error(path, "the video has neither frame timestamps nor a frame rate, "
                                   "so a time span cannot be selected")
            order = list(range(len(keys)))
            times = np.arange(len(keys)) / (rate or 1.0)
        else:
            order = sorted(keys)  # type: ignore[arg-type]
            times = (np.asarray(order, dtype=np.float64) - order[0]) * time_base if order else np.empty(0)
        eps = 1e-6
        inside = np.ones(len(order), dtype=bool)
        if start_s is not None:
            inside &= times >= start_s - eps
        if end_s is not None:
            inside &= times < end_s - eps
        candidates = [order[i] for i in np.flatnonzero(inside)]
        if not candidates:
            span = f" in [{start_s}, {end_s}) s" if start_s is not None or end_s is not None else ""
            total = f" (it has {len(order)} frames, {times[-1]:.2f} s)" if len(order) else ""
            raise _video_error(path, f"no video frame{span}{total}")
        wanted: dict[int, list[int]] = {}
        for position, index in enumerate(segment_indices(len(candidates), n_frames)):
            wanted.setdefault(candidates[int(index)], []).append(position)
        try:
            frames, missing = _decode_selected(path, wanted, by_index, n_frames, frame_size)
        except av.FFmpegError as exc:
            raise _video_error(path, f"cannot decode the video ({exc})") from exc
        if not missing:
            return frames
        # The decoder did not return some frames listed in the packets: count decoded frames instead.
    raise _video_error(path, f"the decoder did not return {len(missing)} of the selected frames")


# ------------------------------------------------------------------------------ audio


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A wav file as (float32 mono samples in [-1, 1], sampling rate in Hz).

    Integer PCM is scaled by its full range (8-bit unsigned, 16/24/32-bit signed; scipy
    left-aligns 24-bit samples in int32), float wavs are kept and clipped to [-1, 1],
    and multi-channel files are averaged to mono.
    """
    path = Path(path)
    try:
        rate, data = wavfile.read(path, mmap=False)
    except (OSError, ValueError, EOFError) as exc:
        raise source_error(path, f"cannot read the wav file ({exc})",
                           "re-extract it as 16-bit PCM, e.g. `ffmpeg -i VIDEO.mp4 -ac 1 -ar 16000 FILE.wav`") from exc
    data = np.asarray(data)
    if data.dtype == np.uint8:
        audio = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        audio = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    elif np.issubdtype(data.dtype, np.floating):
        audio = np.clip(data.astype(np.float32), -1.0, 1.0)
    else:
        raise source_error(path, f"unsupported wav sample type {data.dtype}",
                           "re-extract it as 16-bit PCM, e.g. `ffmpeg -i VIDEO.mp4 -ac 1 -ar 16000 FILE.wav`")
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


# ------------------------------------------------------------------------ spectrograms


def _log_normalise(power: np.ndarray) -> np.ndarray:
    """``log(power + floor)`` scaled to zero mean and unit std (float32).

    The floor is relative (80 dB under the peak, never below 1e-30), so the result does
    not depend on the signal's units; a constant result (e.g. silence) becomes all zeros.
    """
    power = np.asarray(power, dtype=np.float64)
    floor = max(float(power.max(initial=0.0)) * _FLOOR, 1e-30)
    logp = np.log(power + floor)
    logp -= logp.mean()
    std = logp.std()
    if std > 1e-8:
        logp /= std
    else:
        logp[:] = 0.0
    return logp.astype(np.float32)


def log_spectrogram(signal: np.ndarray, fs: float, *, nperseg: int = 64, noverlap: int = 48, nfft: int = 128) -> np.ndarray:
    """Normalised log-power spectrogram ``(nfft // 2 + 1, n_columns)`` of a 1-D signal.

    ``scipy.signal.spectrogram`` with a Hann window, the true sampling rate ``fs`` (so bin
    ``k`` is at ``k * fs / nfft`` Hz), per-segment mean removal (``detrend="constant"``)
    and ``n_columns = 1 + (len(signal) - nperseg) // (nperseg - noverlap)``, i.e. one column
    every ``nperseg - noverlap`` samples (a column rate of ``fs / (nperseg - noverlap)``).
    Then ``log(power + floor)`` normalised to zero mean, unit std over the whole image.
    """
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if len(x) < nperseg:
        raise ValueError(f"signal of {len(x)} samples is shorter than nperseg={nperseg}")
    _, _, power = sps.spectrogram(x, fs=fs, window="hann", nperseg=nperseg, noverlap=noverlap, nfft=nfft,
                                  detrend="constant", scaling="density", mode="psd")
    return _log_normalise(power)


def spectrogram_shape(n_samples: int, *, nperseg: int, noverlap: int, nfft: int) -> tuple[int, int]:
    """Shape of :func:`log_spectrogram` for a signal of ``n_samples`` samples."""
    return nfft // 2 + 1, 1 + (n_samples - nperseg) // (nperseg - noverlap)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: float, n_fft: int, n_mels: int = 64, *, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filterbank ``(n_mels, n_fft // 2 + 1)`` (peak weight 1, not area-normalised).

    Band ``m`` rises linearly from ``edges[m]`` to its centre ``edges[m + 1]`` and falls to
    ``edges[m + 2]``, the ``n_mels + 2`` edges being equally spaced in mel between ``fmin``
    and ``fmax`` (default ``sr / 2``); weights are evaluated at the exact FFT bin frequencies.
    """
    fmax = sr / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sr / 2.0 + 1e-9:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_spectrogram(audio: np.ndarray, sr: float, *, n_mels: int = 64, n_fft: int = 400, hop_length: int = 160,
                        n_frames: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Normalised log-mel spectrogram ``(n_mels, n_frames)`` of mono audio.

    Frame ``t`` is the Hann-windowed ``audio[t * hop_length : t * hop_length + n_fft]``
    (no centring: callers wanting frames centred on the hop grid pass audio starting
    ``n_fft // 2`` samples earlier). Exactly ``n_frames`` frames are computed: the audio
    is zero-padded at the end (or its tail ignored) so that every clip has the same
    shape. The power spectrum goes through :func:`mel_filterbank`, then ``log`` (80 dB
    floor) and per-spectrogram normalisation to zero mean, unit std.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if n_frames < 1 or hop_length < 1 or n_fft < 2:
        raise ValueError(f"need n_frames >= 1, hop_length >= 1, n_fft >= 2; got {n_frames}, {hop_length}, {n_fft}")
    needed = (n_frames - 1) * hop_length + n_fft
    if len(audio) < needed:
        audio = np.pad(audio, (0, needed - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio[:needed], n_fft)[::hop_length]
    window = sps.get_window("hann", n_fft, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2  # (n_frames, n_fft // 2 + 1)
    mel = mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax) @ power.T
    return _log_normalise(mel)


def frames_for(duration_s: float, hop_s: float) -> int:
    """Number of hop-grid frames covering ``duration_s``: ``1 + floor(duration / hop)`` (rounding guarded)."""
    return 1 + math.floor(duration_s / hop_s + 1e-9)
