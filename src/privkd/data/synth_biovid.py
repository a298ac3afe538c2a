"""A synthetic dataset the size and layout of BioVid Heat Pain, written to disk for scale checks.

BioVid cannot be shipped or downloaded (it is licensed), yet how privkd behaves at its size
(87 subjects × 100 clips of face video plus biosignals) decides whether lazy HDF5 reads feed an
accelerator and how long a recipe takes. This module writes a stand-in with the attributes the
BioVid importer (:mod:`privkd.data.importers.biovid`) gives its files: the same modality names,
kinds, sampling rates, signal window, video clip length, class names and group stems, through the
same streaming writer and chunking, so every BioVid recipe reads it unchanged.

The content is cheap to generate and loosely learnable: each clip is a smooth random face-sized
image that drifts from frame to frame, with a bright patch whose intensity grows with the class,
and each signal is a noisy sine whose amplitude grows with the class. Every clip draws from its
own generator seeded by ``(seed, clip index)``, so a file depends only on its options.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privkd.data.h5format import write_streamed_dataset
from privkd.data.importers.biovid import BIOVID_CLASSES, BIOVID_SIGNALS, CLIP_SECONDS, biovid_layout
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.media import log_spectrogram
from privkd.errors import ConfigError

__all__ = ["SynthResult", "write_synthetic_biovid"]

SAMPLING_RATE = 512.0  # BioVid's biosignal rate (see the importer)
SIGNAL_WINDOW = (2.0, 5.0)  # the importer's default window, used by every BioVid recipe
_NPERSEG, _NOVERLAP, _NFFT = 64, 48, 128  # the importer's spectrogram defaults
_BASE_GRID = 8  # side of the low-resolution image a clip's frames are upsampled from


@dataclass(frozen=True)
class SynthResult:
    """What was written: the file, its size and how long generating and writing took."""

    path: Path
    samples: int
    bytes: int
    seconds: float


def _check(subjects: int, clips: int, frames: int, size: int, classes: Sequence[str], signals: Sequence[str],
           signal_format: str) -> None:
    """Refuse options that would write a file no BioVid recipe could read, before anything is written."""
    if min(subjects, clips, frames, size) < 1:
        raise ConfigError("subjects", f"subjects={subjects}, clips={clips}, frames={frames}, size={size}",
                          "use positive values (BioVid: 87 subjects, 100 clips, 16 frames of 112 px)")
    if len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(BIOVID_CLASSES):
        raise ConfigError("classes", f"classes {list(classes)}", f"choose two or more of {list(BIOVID_CLASSES)}")
    unknown = [s for s in signals if s not in BIOVID_SIGNALS]
    if unknown or len(set(signals)) != len(signals):
        raise ConfigError("signals", f"signals {list(signals)}", f"list each once, among {list(BIOVID_SIGNALS)}")
    if signal_format not in ("raw", "spectrogram"):
        raise ConfigError("signal_format", f"unknown signal_format {signal_format!r}", "use 'raw' or 'spectrogram'")


def _window_samples() -> int:
    """Samples in the signal window, counted as the importer counts them."""
    return round(SIGNAL_WINDOW[1] * SAMPLING_RATE) - round(SIGNAL_WINDOW[0] * SAMPLING_RATE)


def _layout(signals: Sequence[str], signal_format: str, frames: int,
            size: int) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, float | None]]:
    """Shapes, kinds and rates per modality, exactly as :func:`import_biovid` declares them."""
    return biovid_layout(signals, signal_format, _window_samples(), SAMPLING_RATE, (_NPERSEG, _NOVERLAP, _NFFT),
                         (frames, size, CLIP_SECONDS))


def _video(rng: np.random.Generator, level: float, frames: int, size: int) -> np.ndarray:
    """A uint8 ``(3, frames, size, size)`` clip: a smooth image drifting one pixel per frame, a
    patch whose brightness follows ``level`` (0..1), and a little pixel noise (so chunks do not
    compress to nothing, as real decoded video does not). Integer arithmetic keeps it cheap
    next to the write it is meant to measure."""
    scale = -(-size // _BASE_GRID)
    base = rng.integers(40, 200, size=(3, _BASE_GRID, _BASE_GRID), dtype=np.int16)
    image = np.repeat(np.repeat(base, scale, axis=1), scale, axis=2)[:, :size, :size]
    columns = (np.arange(size)[None, :] - np.arange(frames)[:, None]) % size  # frame t shifted by t
    clip = image[:, :, columns].transpose(0, 2, 1, 3)  # (3, size, frames, size) -> (3, frames, size, size)
    half = max(size // 4, 1)
    clip[:, :, half:size - half, half:size - half] += round(50 * level)
    clip += rng.integers(-3, 4, size=clip.shape, dtype=np.int16)
    return np.clip(clip, 0, 255).astype(np.uint8)


def _signal(rng: np.random.Generator, level: float, channel: int) -> np.ndarray:
    """One raw float32 window at 512 Hz: a sine (a different frequency per signal) whose amplitude
    follows ``level``, plus noise."""
    t = np.arange(_window_samples()) / SAMPLING_RATE
    wave = (0.5 + level) * np.sin(2 * np.pi * (1.0 + 3.0 * channel) * t + rng.uniform(0, 2 * np.pi))
    return (wave + rng.normal(0.0, 0.3, size=t.shape)).astype(np.float32)


def _samples(labels: np.ndarray, n_classes: int, signals: Sequence[str], signal_format: str, frames: int,
             size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Each clip's modalities, from a generator of its own so the output does not depend on order."""
    for index, label in enumerate(labels):
        rng = np.random.default_rng([seed, index])
        level = float(label) / (n_classes - 1)
        out = {"video": _video(rng, level, frames, size)}
        for channel, name in enumerate(signals):
            window = _signal(rng, level, channel)
            out[name] = (log_spectrogram(window, SAMPLING_RATE, nperseg=_NPERSEG, noverlap=_NOVERLAP, nfft=_NFFT)
                         if signal_format == "spectrogram" else window)[None]
        yield out


def write_synthetic_biovid(
    dst: str | Path,
    *,
    subjects: int = 87,
    clips: int = 100,
    frames: int = 16,
    size: int = 112,
    classes: Sequence[str] = BIOVID_CLASSES,
    signals: Sequence[str] = ("emg_trapezius", "ecg", "eda"),
    signal_format: str = "raw",
    seed: int = 0,
    progress: bool = True,
) -> SynthResult:
    """Write ``subjects × clips`` synthetic BioVid clips to ``dst`` and say how big and how slow it was.

    The defaults are BioVid part A's size (87 subjects, 100 clips each, the five classes BL1 and
    PA1..PA4 in turn, so 20 clips per class and subject) with the video as the importer writes it
    (16 frames of 112 px). ``signals`` are raw 512 Hz windows of 2-5 s (``signal_format="raw"``,
    as ``biovid_a_mtpkdot`` reads EDA) or the importer's log spectrograms (as ``biovid_b_pkdot``
    reads EMG). The file is identical in content for the same options and seed.
    """
    dst = Path(dst)
    classes, signals = tuple(classes), tuple(signals)
    _check(subjects, clips, frames, size, classes, signals, signal_format)
    shapes, kinds, rates = _layout(signals, signal_format, frames, size)
    subject_ids = [f"synth{s:03d}" for s in range(subjects) for _ in range(clips)]
    labels = np.asarray([c % len(classes) for _ in range(subjects) for c in range(clips)], dtype=np.int64)
    groups = [f"{subject}-{classes[label]}-{i % clips + 1:03d}" for i, (subject, label) in
              enumerate(zip(subject_ids, labels, strict=True))]
    total = len(labels)
    started = time.perf_counter()
    write_streamed_dataset(
        dst,
        sample_shapes=shapes,
        samples=progress_bar(_samples(labels, len(classes), signals, signal_format, frames, size, seed),
                             "Writing synthetic BioVid", total=total, enabled=progress),
        labels=labels,
        subjects=subject_ids,
        task="classification",
        class_names=list(classes),
        modality_kinds=kinds,
        uint8_modalities=("video",),
        sampling_rates=rates,
        channel_names={name: [name] for name in signals},
        groups=groups,
        description=(f"Synthetic BioVid-sized data (seed {seed}): classes {', '.join(classes)}; signals "
                     f"{', '.join(signals)} ({signal_format}, {SIGNAL_WINDOW[0]:g}-{SIGNAL_WINDOW[1]:g} s at "
                     f"{SAMPLING_RATE:g} Hz); video {frames} frames of {size}x{size} px; "
                     f"{total} samples of {subjects} subjects"),
        source=(f"privkd.data.synth_biovid.write_synthetic_biovid(subjects={subjects}, clips={clips}, "
                f"frames={frames}, size={size}, classes={list(classes)}, signals={list(signals)}, "
                f"signal_format={signal_format!r}, seed={seed})"),
    )
    return SynthResult(dst, total, dst.stat().st_size, time.perf_counter() - started)
