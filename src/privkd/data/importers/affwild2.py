"""Importer for Aff-Wild2 valence/arousal (the ABAW VA challenge release), laid out as::

    <root>/cropped_aligned/<video>/<nnnnn>.jpg     1-based, 5-digit frame numbers; frames without a
                                                   detected face are missing
    <root>/annotations/VA_Estimation_Challenge/Train_Set/<video>.txt
    <root>/annotations/VA_Estimation_Challenge/Validation_Set/<video>.txt
    <root>/audio/<video>.wav                       extracted by the user, e.g.
                                                   ffmpeg -i <video>.mp4 -ac 1 -ar 16000 audio/<video>.wav

(``annotations/VA_Set/...``, the folder name of older ABAW releases, is accepted too.)
Annotation files start with the line ``valence,arousal`` followed by one ``v,a`` line per
video frame; ``-5`` marks a frame without a valid annotation. Videos ``<name>_left`` /
``<name>_right`` (two people in one video) share the audio ``<name>.wav``.

Each video is cut into clips of ``clip_frames`` frames taken every ``frame_step`` frames;
a clip's target is the mean valence/arousal over its valid frames. The frames become the
``video`` modality and the audio of the clip's time span a log-mel spectrogram ``audio``.
Everything (annotations, frame lists, wav headers) is scanned and checked before the
first image or wav is decoded.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from privkd.data.h5format import write_streamed_dataset
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_dir, source_error
from privkd.data.importers.media import (
    frames_for,
    load_image,
    log_mel_spectrogram,
    read_wav,
)
from privkd.errors import ConfigError

__all__ = ["import_affwild2"]

_ANNOTATION_DIRS = ("VA_Estimation_Challenge", "VA_Set")
_FRAME = re.compile(r"^(\d+)\.jpg$", re.IGNORECASE)
_PAIR = re.compile(r"^(?P<name>.+)_(left|right)$")
_INVALID = -5.0
_EXTRACT = "extract it with `ffmpeg -i VIDEO.mp4 -ac 1 -ar 16000 {path}`"


@dataclass
class _Clip:
    start: int  # 0-based index of the clip's first frame (annotation line - 2)
    target: np.ndarray  # (2,) mean valence, arousal over valid frames
    images: list[Path]  # one per clip frame, missing frames already filled with the nearest one


@dataclass
class _Video:
    name: str
    split: str
    wav: Path
    fps: float
    clips: list[_Clip]


def _split_name(set_name: str) -> str:
    known = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}
    return known.get(set_name, set_name.lower().removesuffix("_set"))


def _read_annotations(path: Path) -> np.ndarray:
    """(n_frames, 2) valence/arousal per frame; rows with a -5 marker are NaN."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise source_error(path, f"cannot read the annotation file ({exc})", "re-copy it from the release") from exc
    fix = "each line after the header must be two numbers 'valence,arousal' in [-1, 1] (or -5 for invalid frames)"
    if not lines or lines[0].replace(" ", "").lower() != "valence,arousal":
        raise source_error(path, f"line 1 is {lines[0] if lines else ''!r}, expected the header 'valence,arousal'",
                           "check that this is a VA annotation file of the ABAW release", field="line 1")
    values = np.empty((len(lines) - 1, 2), dtype=np.float64)
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            v, a = float(parts[0]), float(parts[1])
        except ValueError:
            if not line.strip() and all(not rest.strip() for rest in lines[number - 1:]):
                values = values[: number - 2]  # trailing blank lines
                break
            raise source_error(path, f"line {number} is {line!r}, not two comma-separated numbers", fix,
                               field=f"line {number}") from None
        if _INVALID in (v, a):
            values[number - 2] = np.nan
            continue
        if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
            raise source_error(path, f"line {number} holds {line!r}, outside [-1, 1] and not the -5 marker", fix,
                               field=f"line {number}")
        values[number - 2] = (v, a)
    if not len(values):
        raise source_error(path, "the file has no annotation lines", "re-copy it from the release")
    return values


def _frame_numbers(folder: Path) -> np.ndarray:
    """Sorted 1-based frame numbers of the JPEGs in ``folder``."""
    with os.scandir(folder) as entries:
        numbers = [int(m.group(1)) for e in entries if (m := _FRAME.match(e.name))]
    return np.asarray(sorted(numbers), dtype=np.int64)


def _wav_for(src: Path, video: str) -> Path:
    """``audio/<video>.wav``, or for ``<name>_left``/``_right`` the shared ``audio/<name>.wav``."""
    own = src / "audio" / f"{video}.wav"
    pair = _PAIR.match(video)
    if own.is_file() or pair is None:
        return own
    return src / "audio" / f"{pair['name']}.wav"


def _wav_rate(path: Path, min_rate: float) -> int:
    """The wav's sampling rate from its header; errors if it is missing, unreadable or below ``min_rate``."""
    if not path.is_file():
        raise source_error(path, "audio file not found", _EXTRACT.format(path=path))
    try:
        try:
            rate, _ = wavfile.read(path, mmap=True)  # header only; the data is mapped, not read
        except ValueError:  # formats that cannot be memory-mapped (e.g. 24-bit): read them whole
            rate, _ = wavfile.read(path)
    except (OSError, ValueError, EOFError) as exc:
        raise source_error(path, f"cannot read the wav file ({exc})", _EXTRACT.format(path=path)) from exc
    if rate < min_rate:
        raise source_error(path, f"audio sampled at {rate} Hz cannot cover mel bands up to {min_rate / 2:g} Hz",
                           f"re-extract at 16 kHz ({_EXTRACT.format(path=path)}), or lower fmax")
    return int(rate)


def _fps_of(fps: float | Mapping[str, float], video: str) -> float:
    if not isinstance(fps, Mapping):
        return float(fps)
    pair = _PAIR.match(video)
    for key in (video, pair["name"] if pair else None):
        if key is not None and key in fps:
            return float(fps[key])
    raise ConfigError("fps", f"no frame rate given for the video {video!r}",
                      "add it to the fps mapping (e.g. from `ffprobe`), or pass one rate for all videos")


def _clips_of(values: np.ndarray, numbers: np.ndarray, folder: Path, clip_frames: int, frame_step: int,
              clip_hop: int) -> list[_Clip]:
    """Clips of one video: targets from valid frames, images filled with the nearest available frame."""
    span = (clip_frames - 1) * frame_step
    available = set(numbers.tolist())
    clips = []
    for start in range(0, len(values) - span, clip_hop):
        index = start + frame_step * np.arange(clip_frames)  # 0-based; frame number = index + 1
        targets = values[index]
        valid = ~np.isnan(targets).any(axis=1)
        present = [int(i) + 1 in available for i in index]
        if not valid.any() or not any(present):
            continue
        # nearest available frame number for each clip frame (ties: the earlier frame)
        wanted = index + 1
        right = np.clip(np.searchsorted(numbers, wanted), 0, len(numbers) - 1)
        left = np.clip(right - 1, 0, len(numbers) - 1)
        nearest = np.where(np.abs(numbers[left] - wanted) <= np.abs(numbers[right] - wanted), numbers[left],
                           numbers[right])
        images = [folder / f"{int(n):05d}.jpg" for n in nearest]
        clips.append(_Clip(start, targets[valid].mean(axis=0).astype(np.float32), images))
    return clips


def _scan(src: Path, sets: Sequence[str], clip_frames: int, frame_step: int, clip_hop: int,
          fps: float | Mapping[str, float], min_rate: float, show: bool) -> tuple[list[_Video], Path]:
    fix_root = "point src at the Aff-Wild2 root holding cropped_aligned/, annotations/ and audio/"
    annotations = require_dir(src / "annotations", "Aff-Wild2 annotations", fix_root)
    base = next((annotations / d for d in _ANNOTATION_DIRS if (annotations / d).is_dir()), None)
    if base is None:
        raise source_error(annotations / _ANNOTATION_DIRS[0], "VA annotation folder not found",
                           f"unpack the VA annotations there (older releases: {annotations / _ANNOTATION_DIRS[1]})")
    frames_root = require_dir(src / "cropped_aligned", "Aff-Wild2 cropped_aligned", fix_root)
    listed: list[tuple[str, Path]] = []
    for set_name in sets:
        folder = require_dir(base / set_name, f"annotation set {set_name}",
                             f"unpack the {set_name} annotations there, or leave it out of sets=")
        listed += [(set_name, p) for p in sorted(folder.glob("*.txt"))]
    if not listed:
        raise source_error(base, f"no annotation files in {list(sets)}", "unpack the VA annotations (<video>.txt)")
    seen: dict[str, Path] = {}
    videos = []
    for set_name, path in progress_bar(listed, "Scanning Aff-Wild2", enabled=show):
        name = path.stem
        if name in seen:
            raise source_error(path, f"video {name!r} is annotated in two sets (also {seen[name]})",
                               "keep one annotation file per video")
        seen[name] = path
        values = _read_annotations(path)
        folder = src / "cropped_aligned" / name
        if not folder.is_dir():
            raise source_error(folder, f"frame folder not found for the annotations {path}",
                               f"unpack the cropped_aligned frames of {name} there, or remove its annotation file")
        numbers = _frame_numbers(folder)
        if not numbers.size:
            raise source_error(folder, f"no <nnnnn>.jpg frames for the annotations {path}",
                               "unpack the cropped_aligned frames of this video")
        wav = _wav_for(src, name)
        _wav_rate(wav, min_rate)  # readable, and sampled fast enough for fmax
        video_fps = _fps_of(fps, name)
        clips = _clips_of(values, numbers, folder, clip_frames, frame_step, clip_hop)
        if clips:
            videos.append(_Video(name, _split_name(set_name), wav, video_fps, clips))
    if not videos:
        raise source_error(frames_root, "no clip has both a valid annotation and a face frame",
                           "check the annotations and cropped_aligned frames, or use shorter clips")
    return videos, base


def _audio_window(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """``audio[start : start + length]``, zero-padded where the span leaves the recording."""
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(audio))
    if hi > lo:
        out[lo - start: hi - start] = audio[lo:hi]
    return out


def import_affwild2(
    src: str | Path,
    dst: str | Path,
    *,
    clip_frames: int = 16,
    frame_step: int = 1,
    clip_hop: int | None = None,
    frame_size: int = 112,
    fps: float | Mapping[str, float] = 30.0,
    n_mels: int = 64,
    audio_frames: int | None = None,
    audio_window_s: float = 0.025,
    audio_hop_s: float = 0.010,
    fmax: float = 8000.0,
    sets: Sequence[str] = ("Train_Set", "Validation_Set"),
    progress: bool = True,
) -> Path:
    """Convert Aff-Wild2 valence/arousal at ``src`` into a privkd regression dataset at ``dst``.

    * Clips: frames ``s, s + frame_step, ..., s + (clip_frames - 1) * frame_step`` with
      ``s`` advancing by ``clip_hop`` frames (default ``clip_frames * frame_step``: clips
      do not overlap); a trailing partial clip is dropped. The target is the mean
      (valence, arousal) over the clip's frames not marked -5; clips without any valid
      frame, or without any face image, are dropped. Missing images are filled with the
      nearest available frame of the video.
    * ``video``: uint8 ``(3, clip_frames, frame_size, frame_size)`` (shorter side resized,
      center crop), rate ``fps / frame_step``.
    * ``audio``: log-mel spectrogram ``(1, n_mels, audio_frames)`` of the clip's time span
      (frame ``i`` at ``(i - 1) / fps`` s), one Hann window of ``audio_window_s`` every
      ``audio_hop_s`` with frames centred on the hop grid, mel bands up to ``fmax``; the
      default ``audio_frames`` covers the clip, ``1 + floor(clip duration / hop)``. Audio
      beyond the end of a wav is zero.
    * ``fps``: the videos' frame rate, one value or ``{video: fps}`` (``<name>`` covers
      ``<name>_left``/``_right``); it places clips in the audio.

    Subjects and groups are the video folder names, splits ``train``/``validation``.
    Raises :class:`~privkd.errors.DatasetError` naming the offending source file (and
    line) for anything missing or malformed, before any image or audio is decoded.
    """
    src, dst = Path(src), Path(dst)
    sets = (sets,) if isinstance(sets, str) else tuple(sets)
    clip_hop = clip_frames * frame_step if clip_hop is None else clip_hop
    for key, value in (("clip_frames", clip_frames), ("frame_step", frame_step), ("clip_hop", clip_hop),
                       ("frame_size", frame_size), ("n_mels", n_mels)):
        if int(value) != value or value < 1:
            raise ConfigError(key, f"{key} is {value!r}", "use a positive integer")
    if not 0 < audio_hop_s <= audio_window_s or fmax <= 0:
        raise ConfigError("audio_hop_s", f"audio_hop_s={audio_hop_s}, audio_window_s={audio_window_s}, fmax={fmax}",
                          "need 0 < audio_hop_s <= audio_window_s and fmax > 0 (e.g. 0.010, 0.025, 8000)")
    rates = list(fps.values()) if isinstance(fps, Mapping) else [fps]
    if not rates or not all(float(r) > 0 and math.isfinite(float(r)) for r in rates):
        raise ConfigError("fps", f"fps is {fps!r}", "give the video frame rate in Hz (Aff-Wild2: mostly 30)")
    if not sets:
        raise ConfigError("sets", "no annotation set selected", "use e.g. ('Train_Set', 'Validation_Set')")
    require_dir(src, "Aff-Wild2 root", "point src at the folder holding cropped_aligned/, annotations/ and audio/")
    videos, base = _scan(src, tuple(sets), clip_frames, frame_step, clip_hop, fps, 2.0 * fmax, progress)

    nominal_fps = float(np.median([float(r) for r in rates]))
    if audio_frames is None:
        audio_frames = frames_for(clip_frames * frame_step / nominal_fps, audio_hop_s)
    if audio_frames < 1:
        raise ConfigError("audio_frames", f"audio_frames is {audio_frames}", "use a positive integer")

    clips = [(video, clip) for video in videos for clip in video.clips]

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for video in videos:
            audio, rate = read_wav(video.wav)
            n_fft = max(2, round(audio_window_s * rate))
            hop = max(1, round(audio_hop_s * rate))
            length = (audio_frames - 1) * hop + n_fft
            for clip in video.clips:
                frames = np.stack([load_image(p, frame_size) for p in clip.images], axis=1)
                first = round(clip.start / video.fps * rate) - n_fft // 2  # frames centred on the hop grid
                segment = _audio_window(audio, first, length)
                mel = log_mel_spectrogram(segment, rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop,
                                          n_frames=audio_frames, fmax=fmax)
                yield {"video": frames, "audio": mel[None]}

    set_text = ", ".join(sets)
    description = (f"Aff-Wild2 valence/arousal ({set_text}): {len(clips)} clips of {clip_frames} frames "
                   f"(every {frame_step} frame(s), hop {clip_hop}) from {len(videos)} videos; video {frame_size}x"
                   f"{frame_size} px; audio log-mel {n_mels}x{audio_frames} ({audio_window_s * 1000:g} ms windows "
                   f"every {audio_hop_s * 1000:g} ms); targets = mean of valid frames")
    source = (f"privkd.data.importers.affwild2.import_affwild2 from {src} (annotations {base}, sets {list(sets)}, "
              f"clip_frames {clip_frames}, frame_step {frame_step}, clip_hop {clip_hop}, frame_size {frame_size}, "
              f"fps {fps if not isinstance(fps, Mapping) else 'per video'}, n_mels {n_mels}, "
              f"audio_frames {audio_frames}, fmax {fmax:g})")
    return write_streamed_dataset(
        dst,
        sample_shapes={"video": (3, clip_frames, frame_size, frame_size), "audio": (1, n_mels, audio_frames)},
        samples=progress_bar(generate(), "Importing Aff-Wild2", total=len(clips), enabled=progress),
        labels=np.stack([clip.target for _, clip in clips]).astype(np.float32),
        subjects=[video.name for video, _ in clips],
        task="regression",
        target_names=["valence", "arousal"],
        modality_kinds={"video": "video", "audio": "spectrogram"},
        uint8_modalities=("video",),
        sampling_rates={"video": nominal_fps / frame_step, "audio": 1.0 / audio_hop_s},
        channel_names={"audio": ["audio"]},
        groups=[video.name for video, _ in clips],
        splits=[video.split for video, _ in clips],
        description=description,
        source=source,
    )

